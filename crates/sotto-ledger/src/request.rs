//! The client's request and the enclave's response: a signed proposal
//! encrypted under a fresh transaction key (AES-256-GCM), that key sealed
//! to the compute group's envelope public key (HPKE), and the contract's
//! response encrypted back under the same transaction key. Only an enclave
//! holding the envelope key reads a request; only the client reads the
//! response.

use prost::Message;
use rand_core::{CryptoRng, RngCore};
use sotto_crypto::hash::FieldHasher;
use sotto_crypto::hpke::{HpkePublicKey, HpkeSecretKey};
use sotto_crypto::identity::{IdentityKey, IdentityPublic};
use sotto_crypto::secret::SecretBytes;
use sotto_crypto::{aead, CryptoError};

/// The proposal and request format this build writes and accepts.
pub const REQUEST_FORMAT: u32 = 1;
/// Domain of the client's signature over a proposal.
pub const PROPOSAL_DOMAIN: &str = "sotto/ledger/proposal/v1";
const KEY_INFO: &[u8] = b"sotto/ledger/request-key/v1";

/// What the client asks a contract to do.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Proposal {
    /// [`REQUEST_FORMAT`].
    #[prost(uint32, tag = "1")]
    pub format: u32,
    /// The ledger id.
    #[prost(bytes = "vec", tag = "2")]
    pub ledger: Vec<u8>,
    /// A fresh transaction id (16 bytes).
    #[prost(bytes = "vec", tag = "3")]
    pub tx_id: Vec<u8>,
    /// The calling client.
    #[prost(string, tag = "4")]
    pub client: String,
    /// The contract.
    #[prost(string, tag = "5")]
    pub contract: String,
    /// Its version.
    #[prost(uint32, tag = "6")]
    pub contract_version: u32,
    /// The function.
    #[prost(string, tag = "7")]
    pub function: String,
    /// Its arguments (JSON).
    #[prost(bytes = "vec", tag = "8")]
    pub args: Vec<u8>,
    /// The business nodes that keep the writes.
    #[prost(string, repeated, tag = "9")]
    pub targets: Vec<String>,
    /// When the client made it (Unix ms).
    #[prost(uint64, tag = "10")]
    pub time_ms: u64,
    /// The transaction is refused in a block cut after this time (Unix ms).
    #[prost(uint64, tag = "11")]
    pub expires_ms: u64,
}

/// A proposal and the client's signature over its bytes.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SignedProposal {
    /// The encoded proposal.
    #[prost(bytes = "vec", tag = "1")]
    pub proposal: Vec<u8>,
    /// The client's signature.
    #[prost(bytes = "vec", tag = "2")]
    pub signature: Vec<u8>,
}

/// The encrypted request a compute node receives.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Request {
    /// [`REQUEST_FORMAT`].
    #[prost(uint32, tag = "1")]
    pub format: u32,
    /// The transaction id, in clear so that the response can be matched.
    #[prost(bytes = "vec", tag = "2")]
    pub tx_id: Vec<u8>,
    /// The version of the envelope key the transaction key is sealed to.
    #[prost(uint64, tag = "3")]
    pub envelope_version: u64,
    /// The transaction key, sealed with HPKE to the envelope key.
    #[prost(bytes = "vec", tag = "4")]
    pub sealed_key: Vec<u8>,
    /// The signed proposal under the transaction key.
    #[prost(bytes = "vec", tag = "5")]
    pub ciphertext: Vec<u8>,
}

/// The key of one transaction: seals the proposal and the response.
/// Zeroized on drop.
#[derive(Debug)]
pub struct TxKey(SecretBytes<32>);

/// Why a request or response was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// The format is not this build's.
    #[error("request format {0} is not {REQUEST_FORMAT}")]
    Format(u32),
    /// The envelope key version is not the enclave's.
    #[error("the request is sealed to envelope key version {got}; the current one is {current}: fetch the current envelope key")]
    EnvelopeVersion {
        /// The request's.
        got: u64,
        /// The enclave's.
        current: u64,
    },
    /// The transaction key or proposal does not decrypt.
    #[error("the request does not decrypt ({0})")]
    Decrypt(String),
    /// The proposal does not decode.
    #[error("the proposal does not decode: {0}")]
    Malformed(String),
    /// The response does not decrypt under this transaction's key.
    #[error("the response does not decrypt under this transaction's key")]
    Response,
}

fn key_aad(tx_id: &[u8], envelope_version: u64) -> Vec<u8> {
    let mut aad = tx_id.to_vec();
    aad.extend_from_slice(&envelope_version.to_be_bytes());
    aad
}

fn body_aad(what: &str, tx_id: &[u8]) -> Vec<u8> {
    let mut hasher = FieldHasher::new("sotto/ledger/request-body/v1");
    hasher.field(what.as_bytes()).field(tx_id);
    hasher.finish().to_vec()
}

impl Proposal {
    /// Signs the proposal and encrypts it to the envelope key.
    pub fn seal<R: RngCore + CryptoRng>(
        &self,
        client: &IdentityKey,
        envelope: &HpkePublicKey,
        envelope_version: u64,
        rng: &mut R,
    ) -> Result<(Request, TxKey), CryptoError> {
        let proposal = self.encode_to_vec();
        let signature = client.sign(PROPOSAL_DOMAIN, &proposal).to_vec();
        let signed = SignedProposal {
            proposal,
            signature,
        }
        .encode_to_vec();
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let key = SecretBytes::new(key);
        let sealed_key = envelope.seal(
            KEY_INFO,
            &key_aad(&self.tx_id, envelope_version),
            key.expose(),
            rng,
        )?;
        let ciphertext = aead::seal(&key, &body_aad("proposal", &self.tx_id), &signed, rng)?;
        Ok((
            Request {
                format: REQUEST_FORMAT,
                tx_id: self.tx_id.clone(),
                envelope_version,
                sealed_key,
                ciphertext,
            },
            TxKey(key),
        ))
    }

    /// Whether `client` signed these proposal bytes.
    pub fn verify(
        bytes: &[u8],
        signature: &[u8],
        client: &IdentityPublic,
    ) -> Result<(), CryptoError> {
        client.verify(
            PROPOSAL_DOMAIN,
            bytes,
            signature,
            "client signature over a proposal",
        )
    }
}

impl Request {
    /// Opens the request inside the enclave: the signed proposal (its
    /// signature not yet checked) and the transaction key.
    pub fn open(
        &self,
        envelope: &HpkeSecretKey,
        current_version: u64,
    ) -> Result<(SignedProposal, Proposal, TxKey), RequestError> {
        if self.format != REQUEST_FORMAT {
            return Err(RequestError::Format(self.format));
        }
        if self.envelope_version != current_version {
            return Err(RequestError::EnvelopeVersion {
                got: self.envelope_version,
                current: current_version,
            });
        }
        let key = envelope
            .open(
                KEY_INFO,
                &key_aad(&self.tx_id, self.envelope_version),
                &self.sealed_key,
            )
            .map_err(|e| RequestError::Decrypt(e.to_string()))?;
        let key = SecretBytes::<32>::from_slice("transaction key", &key)
            .map_err(|e| RequestError::Decrypt(e.to_string()))?;
        let signed = aead::open(&key, &body_aad("proposal", &self.tx_id), &self.ciphertext)
            .map_err(|e| RequestError::Decrypt(e.to_string()))?;
        let signed = SignedProposal::decode(signed.as_slice())
            .map_err(|e| RequestError::Malformed(e.to_string()))?;
        let proposal = Proposal::decode(signed.proposal.as_slice())
            .map_err(|e| RequestError::Malformed(e.to_string()))?;
        if proposal.format != REQUEST_FORMAT {
            return Err(RequestError::Format(proposal.format));
        }
        Ok((signed, proposal, TxKey(key)))
    }
}

impl TxKey {
    /// Encrypts the contract's response to the client.
    pub fn seal_response<R: RngCore + CryptoRng>(
        &self,
        tx_id: &[u8],
        response: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, CryptoError> {
        aead::seal(&self.0, &body_aad("response", tx_id), response, rng)
    }

    /// Decrypts the response of this transaction.
    pub fn open_response(&self, tx_id: &[u8], sealed: &[u8]) -> Result<Vec<u8>, RequestError> {
        aead::open(&self.0, &body_aad("response", tx_id), sealed)
            .map_err(|_| RequestError::Response)
    }
}

/// The digest of a request, which the packet names.
pub fn request_digest(request: &Request) -> [u8; 32] {
    let mut hasher = FieldHasher::new("sotto/ledger/request-digest/v1");
    hasher.field(&request.encode_to_vec());
    hasher.finish()
}
