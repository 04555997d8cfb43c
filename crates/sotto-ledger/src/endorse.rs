//! The endorser's engine (sans-IO): check a TEE-signed packet — its
//! shape, ledger, contract, caller, targets and expiry, that its signer is
//! a current member of the compute group running the group's code, and the
//! TEE signature — and endorse it for its target business nodes, or say
//! why not. An endorser never sees plaintext.

use prost::Message;
use sotto_crypto::identity::IdentityKey;

use crate::config::LedgerConfig;
use crate::group::ComputeGroup;
use crate::packet::{packet_digest, tee_verify, Endorsement, Packet, PACKET_FORMAT};

/// Why an endorser refused a packet; the client gets it as a typed result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The packet does not decode or is malformed.
    #[error("malformed packet: {0}")]
    Malformed(String),
    /// The packet names another ledger.
    #[error("the packet names another ledger")]
    WrongLedger,
    /// The contract or version is not in block 0.
    #[error("contract {0} at this version is not in the ledger configuration")]
    UnknownContract(String),
    /// The client may not call the contract.
    #[error("client {client} is not an allowed caller of {contract}")]
    CallerNotAllowed {
        /// The client.
        client: String,
        /// The contract.
        contract: String,
    },
    /// This endorser is not named by the contract's policy.
    #[error("this endorser is not in the policy of {0}; ask one that is")]
    NotInPolicy(String),
    /// A target is not a business node.
    #[error("target {0} is not a business node of this ledger")]
    BadTarget(String),
    /// The packet already expired.
    #[error("the packet expired")]
    Expired,
    /// The signer is not a current member running the group's code.
    #[error("{0} is not a current member of the compute group (revoked, unknown, or other code)")]
    NotMember(String),
    /// The TEE signature fails.
    #[error("the TEE signature of {0} over the packet does not verify")]
    BadTeeSignature(String),
}

/// One endorser.
pub struct Endorser<'a> {
    /// Block 0's configuration.
    pub config: &'a LedgerConfig,
    /// The ledger id.
    pub ledger: [u8; 32],
    /// This endorser's name.
    pub name: &'a str,
    /// Its identity key.
    pub key: &'a IdentityKey,
}

impl Endorser<'_> {
    /// Checks and endorses a packet at `now_ms` against the compute group.
    pub fn endorse(
        &self,
        group: &ComputeGroup,
        packet_bytes: &[u8],
        tee_signature: &[u8],
        now_ms: u64,
    ) -> Result<Endorsement, Refusal> {
        let packet = Packet::decode(packet_bytes).map_err(|e| Refusal::Malformed(e.to_string()))?;
        if packet.format != PACKET_FORMAT || packet.tx_id.len() != 16 || packet.targets.is_empty() {
            return Err(Refusal::Malformed(
                "format, transaction id or targets".into(),
            ));
        }
        if packet.ledger != self.ledger {
            return Err(Refusal::WrongLedger);
        }
        let contract = self
            .config
            .contract(&packet.contract)
            .filter(|c| c.version == packet.contract_version)
            .ok_or_else(|| Refusal::UnknownContract(packet.contract.clone()))?;
        if !contract.callers.iter().any(|c| c.as_str() == packet.client) {
            return Err(Refusal::CallerNotAllowed {
                client: packet.client.clone(),
                contract: packet.contract.clone(),
            });
        }
        let mine = self
            .config
            .endorser(self.name)
            .map_or(0, |(i, _)| 1u64 << i);
        let named = contract
            .policy
            .principals()
            .into_iter()
            .any(|p| self.config.endorsers_of(p) & mine != 0);
        if !named {
            return Err(Refusal::NotInPolicy(packet.contract.clone()));
        }
        if let Some(t) = packet
            .targets
            .iter()
            .find(|t| self.config.business_node(t).is_none())
        {
            return Err(Refusal::BadTarget(t.clone()));
        }
        if now_ms > packet.expires_ms {
            return Err(Refusal::Expired);
        }
        let member = group
            .member_key(&packet.member, &packet.measurement)
            .ok_or_else(|| Refusal::NotMember(packet.member.clone()))?;
        tee_verify(member, packet_bytes, tee_signature)
            .map_err(|_| Refusal::BadTeeSignature(packet.member.clone()))?;
        Ok(Endorsement::sign(
            self.key,
            self.name,
            packet_digest(packet_bytes),
            &packet.targets,
        ))
    }
}
