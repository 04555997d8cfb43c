//! Transactions as the ordering service sequences them: an invoke (a
//! TEE-signed packet, its endorsements and the client's signature over all
//! of it) or a membership update (the compute group's membership as the
//! registration center signed it).

use prost::Message;
use sotto_crypto::hash::FieldHasher;
use sotto_crypto::identity::{IdentityKey, IdentityPublic};
use sotto_crypto::CryptoError;

use crate::packet::{packet_digest, Endorsement};

/// Domain of the client's signature over a submitted transaction.
pub const SUBMIT_DOMAIN: &str = "sotto/ledger/submit/v1";

/// A packet with its TEE signature and endorsements, signed by the client.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Invoke {
    /// The encoded packet, exactly as the enclave signed it.
    #[prost(bytes = "vec", tag = "1")]
    pub packet: Vec<u8>,
    /// The enclave's signature over `packet`.
    #[prost(bytes = "vec", tag = "2")]
    pub tee_signature: Vec<u8>,
    /// Endorsements of the packet.
    #[prost(message, repeated, tag = "3")]
    pub endorsements: Vec<Endorsement>,
    /// The client's signature over all of the above.
    #[prost(bytes = "vec", tag = "4")]
    pub client_signature: Vec<u8>,
}

impl Invoke {
    /// Assembles and signs a submission.
    pub fn sign(
        client: &IdentityKey,
        packet: Vec<u8>,
        tee_signature: Vec<u8>,
        endorsements: Vec<Endorsement>,
    ) -> Self {
        let mut invoke = Self {
            packet,
            tee_signature,
            endorsements,
            client_signature: Vec::new(),
        };
        invoke.client_signature = client.sign(SUBMIT_DOMAIN, &invoke.submitted()).to_vec();
        invoke
    }

    /// Verifies the client's signature.
    pub fn verify_client(&self, client: &IdentityPublic) -> Result<(), CryptoError> {
        client.verify(
            SUBMIT_DOMAIN,
            &self.submitted(),
            &self.client_signature,
            "client signature over a transaction",
        )
    }

    fn submitted(&self) -> [u8; 32] {
        let mut hasher = FieldHasher::new(SUBMIT_DOMAIN);
        hasher
            .field(&packet_digest(&self.packet))
            .field(&self.tee_signature)
            .field(&(self.endorsements.len() as u64).to_be_bytes());
        for endorsement in &self.endorsements {
            hasher.field(&endorsement.encode_to_vec());
        }
        hasher.finish()
    }
}

/// The compute group's membership, as the registration center signed it.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MembershipUpdate {
    /// The center's signed membership bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub membership: Vec<u8>,
    /// The center's signature over them.
    #[prost(bytes = "vec", tag = "2")]
    pub signature: Vec<u8>,
}

/// One transaction of a block.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Transaction {
    /// What it is.
    #[prost(oneof = "Body", tags = "1, 2")]
    pub body: Option<Body>,
}

/// The kinds of transaction.
#[derive(Clone, PartialEq, Eq, prost::Oneof)]
pub enum Body {
    /// A contract's result.
    #[prost(message, tag = "1")]
    Invoke(Invoke),
    /// A new compute group membership.
    #[prost(message, tag = "2")]
    Membership(MembershipUpdate),
}
