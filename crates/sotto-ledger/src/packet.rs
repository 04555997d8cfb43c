//! What a compute enclave returns for one request, and what endorsers sign:
//! the packet (transaction id, contract, read set with versions, writes
//! sealed under the data-encryption key, target business nodes, request
//! digest, enclave member and measurement; for each plaintext-mode target a
//! copy of the writes sealed to that node), the TEE signature over its
//! bytes, and endorsements that name the packet's digest and its targets.

use sotto_crypto::hash::FieldHasher;
use sotto_crypto::identity::{IdentityKey, IdentityPublic, SIGNATURE_LEN};
use sotto_crypto::CryptoError;

/// The packet format this build writes and accepts (2: packets carry a
/// clear copy of the writes for each plaintext-mode target).
pub const PACKET_FORMAT: u32 = 2;
/// Domain of the enclave's signature over a packet's bytes.
pub const TEE_DOMAIN: &str = "sotto/ledger/packet/v1";
/// Domain of an endorser's signature.
pub const ENDORSEMENT_DOMAIN: &str = "sotto/ledger/endorsement/v1";

/// The version of a key: the block and the transaction within it that
/// wrote it last (Fabric's `KVRead` version).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Version {
    /// Block number.
    #[prost(uint64, tag = "1")]
    pub block: u64,
    /// Transaction index within the block.
    #[prost(uint32, tag = "2")]
    pub tx: u32,
}

/// A key the contract read, with the version it read (none: the key did
/// not exist).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct KvRead {
    /// The key's 32-byte id (keyed by the enclave, so names stay private).
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The version read.
    #[prost(message, optional, tag = "2")]
    pub version: Option<Version>,
}

/// A key the contract wrote.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct KvWrite {
    /// The key's 32-byte id.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The value sealed under the data-encryption key.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
    /// Whether the key is deleted (the value is then empty).
    #[prost(bool, tag = "3")]
    pub delete: bool,
}

/// The result of one contract run, signed by the enclave.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Packet {
    /// [`PACKET_FORMAT`].
    #[prost(uint32, tag = "1")]
    pub format: u32,
    /// The ledger id (hash of block 0's header).
    #[prost(bytes = "vec", tag = "2")]
    pub ledger: Vec<u8>,
    /// The transaction id (16 bytes).
    #[prost(bytes = "vec", tag = "3")]
    pub tx_id: Vec<u8>,
    /// The calling client.
    #[prost(string, tag = "4")]
    pub client: String,
    /// The contract run.
    #[prost(string, tag = "5")]
    pub contract: String,
    /// Its version.
    #[prost(uint32, tag = "6")]
    pub contract_version: u32,
    /// Keys read, with versions.
    #[prost(message, repeated, tag = "7")]
    pub reads: Vec<KvRead>,
    /// Keys written, sealed.
    #[prost(message, repeated, tag = "8")]
    pub writes: Vec<KvWrite>,
    /// The data-encryption key version the writes are sealed under.
    #[prost(uint64, tag = "9")]
    pub dek_version: u64,
    /// The business nodes that keep this transaction's writes.
    #[prost(string, repeated, tag = "10")]
    pub targets: Vec<String>,
    /// Digest of the client's request.
    #[prost(bytes = "vec", tag = "11")]
    pub request_digest: Vec<u8>,
    /// The enclave group member that ran it.
    #[prost(string, tag = "12")]
    pub member: String,
    /// That member's measurement.
    #[prost(bytes = "vec", tag = "13")]
    pub measurement: Vec<u8>,
    /// The packet is refused in a block cut after this time (Unix ms).
    #[prost(uint64, tag = "14")]
    pub expires_ms: u64,
    /// One copy of the writes per plaintext-mode target, sealed to it.
    #[prost(message, repeated, tag = "15")]
    pub clear_copies: Vec<ClearCopy>,
}

/// The writes of a packet for one plaintext-mode business node, sealed to
/// that node's identity ([`crate::clear`]).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ClearCopy {
    /// The business node.
    #[prost(string, tag = "1")]
    pub target: String,
    /// HPKE to the node's identity of the encoded [`crate::clear::ClearWrites`].
    #[prost(bytes = "vec", tag = "2")]
    pub sealed: Vec<u8>,
}

/// The digest of a packet's bytes, which endorsements and submissions name.
pub fn packet_digest(packet_bytes: &[u8]) -> [u8; 32] {
    let mut hasher = FieldHasher::new("sotto/ledger/packet-digest/v1");
    hasher.field(packet_bytes);
    hasher.finish()
}

/// The enclave's signature over a packet's bytes.
pub fn tee_sign(key: &IdentityKey, packet_bytes: &[u8]) -> [u8; SIGNATURE_LEN] {
    key.sign(TEE_DOMAIN, packet_bytes)
}

/// Verifies an enclave's signature over a packet's bytes.
pub fn tee_verify(
    member: &IdentityPublic,
    packet_bytes: &[u8],
    signature: &[u8],
) -> Result<(), CryptoError> {
    member.verify(
        TEE_DOMAIN,
        packet_bytes,
        signature,
        "TEE signature over a packet",
    )
}

/// An endorser's signature over a packet digest and the business nodes it
/// names.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Endorsement {
    /// The endorser.
    #[prost(string, tag = "1")]
    pub endorser: String,
    /// The business nodes it endorses the packet for.
    #[prost(string, repeated, tag = "2")]
    pub targets: Vec<String>,
    /// The packet digest.
    #[prost(bytes = "vec", tag = "3")]
    pub packet_digest: Vec<u8>,
    /// The signature.
    #[prost(bytes = "vec", tag = "4")]
    pub signature: Vec<u8>,
}

impl Endorsement {
    /// Endorses the packet with this digest for `targets`.
    pub fn sign(key: &IdentityKey, endorser: &str, digest: [u8; 32], targets: &[String]) -> Self {
        let signature = key.sign(ENDORSEMENT_DOMAIN, &endorsed(endorser, &digest, targets));
        Self {
            endorser: endorser.to_owned(),
            targets: targets.to_vec(),
            packet_digest: digest.to_vec(),
            signature: signature.to_vec(),
        }
    }

    /// Whether this endorsement is by `endorser`'s key, over `digest`.
    pub fn verify(&self, endorser: &IdentityPublic, digest: &[u8; 32]) -> Result<(), CryptoError> {
        if self.packet_digest != digest {
            return Err(CryptoError::BadSignature {
                what: "endorsement (over another packet)",
            });
        }
        endorser.verify(
            ENDORSEMENT_DOMAIN,
            &endorsed(&self.endorser, digest, &self.targets),
            &self.signature,
            "endorsement",
        )
    }
}

fn endorsed(endorser: &str, digest: &[u8; 32], targets: &[String]) -> Vec<u8> {
    let mut hasher = FieldHasher::new(ENDORSEMENT_DOMAIN);
    hasher
        .field(&PACKET_FORMAT.to_be_bytes())
        .field(endorser.as_bytes())
        .field(digest)
        .field(&(targets.len() as u64).to_be_bytes());
    for target in targets {
        hasher.field(target.as_bytes());
    }
    hasher.finish().to_vec()
}
