//! Signed statements: every protocol message is a statement (version, job,
//! attempt, step, sender, recipient, shape, payload digest, step-specific
//! extra) signed by the sender's identity key under a domain tag, followed by
//! its payload. An envelope is a statement with its payload.

use std::fmt;
use std::sync::Arc;

use sotto_crypto::hash::{sha256, FieldHasher};
use sotto_crypto::identity::{IdentityKey, IdentityPublic};
use sotto_crypto::ids::JobId;
use sotto_node::NodeName;

use crate::error::ProtocolError;

/// Protocol version carried in every statement.
pub const VERSION: u32 = 1;
/// Domain tag of statement signatures.
const DOMAIN: &str = "sotto/agg/statement/v1";
/// Recipient of a statement sent to every client.
pub const EVERY_CLIENT: &str = "*";

/// The protocol steps, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// Coordinator to client: the job, attempt and participants.
    Offer = 1,
    /// Client to coordinator: taking part, with an ephemeral X25519 key.
    Accept = 2,
    /// Coordinator to client: its zero-sum mask (seed or vector).
    Dealing = 3,
    /// Coordinator to every client: the query ids.
    Query = 4,
    /// Lead to coordinator: `e_1`.
    LeadShare = 5,
    /// Lead to client j, through the coordinator: `e_j`, sealed end to end.
    SealedShare = 6,
    /// Client j to coordinator: `f_j = e_j + v_j + r_j`.
    Masked = 7,
    /// Coordinator to every client: the totals.
    Result = 8,
}

impl Step {
    /// A name for errors and logs.
    pub fn name(self) -> &'static str {
        match self {
            Step::Offer => "offer",
            Step::Accept => "accept",
            Step::Dealing => "dealing",
            Step::Query => "query",
            Step::LeadShare => "lead share",
            Step::SealedShare => "sealed share",
            Step::Masked => "masked vector",
            Step::Result => "result",
        }
    }

    /// Decodes the wire number.
    pub fn from_number(n: u32) -> Option<Self> {
        Some(match n {
            1 => Step::Offer,
            2 => Step::Accept,
            3 => Step::Dealing,
            4 => Step::Query,
            5 => Step::LeadShare,
            6 => Step::SealedShare,
            7 => Step::Masked,
            8 => Step::Result,
            _ => return None,
        })
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A signed protocol statement.
#[derive(Clone, PartialEq, Eq)]
pub struct Statement {
    /// Protocol version.
    pub version: u32,
    /// The job attempt's id.
    pub job: JobId,
    /// The attempt number (1 for the first run, then one per re-run).
    pub attempt: u32,
    /// The step.
    pub step: Step,
    /// The signer's node name.
    pub sender: String,
    /// The node it is for, or [`EVERY_CLIENT`].
    pub recipient: String,
    /// Rows of the payload vector (or of the query).
    pub rows: u64,
    /// Columns per row.
    pub cols: u32,
    /// SHA-256 of the payload (or another digest the step names).
    pub digest: [u8; 32],
    /// Step-specific signed data (ephemeral keys, participants, transcript).
    pub extra: Vec<u8>,
    /// Ed25519 signature by the sender's identity key.
    pub signature: Vec<u8>,
}

impl fmt::Debug for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Statement({} job={} attempt={} {}->{} {}x{})",
            self.step, self.job, self.attempt, self.sender, self.recipient, self.rows, self.cols
        )
    }
}

/// The unsigned fields of a statement.
pub struct Draft<'a> {
    /// Job attempt id.
    pub job: JobId,
    /// Attempt number.
    pub attempt: u32,
    /// Step.
    pub step: Step,
    /// Recipient.
    pub recipient: &'a str,
    /// Rows.
    pub rows: u64,
    /// Columns.
    pub cols: u32,
    /// Digest.
    pub digest: [u8; 32],
    /// Extra signed data.
    pub extra: Vec<u8>,
}

impl Draft<'_> {
    /// Signs the draft as `sender`.
    pub fn sign(self, sender: &NodeName, key: &IdentityKey) -> Statement {
        let mut statement = Statement {
            version: VERSION,
            job: self.job,
            attempt: self.attempt,
            step: self.step,
            sender: sender.as_str().to_owned(),
            recipient: self.recipient.to_owned(),
            rows: self.rows,
            cols: self.cols,
            digest: self.digest,
            extra: self.extra,
            signature: Vec::new(),
        };
        statement.signature = key.sign(DOMAIN, &statement.signed_bytes()).to_vec();
        statement
    }
}

impl Statement {
    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.extra.len());
        let mut field = |bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.extend_from_slice(bytes);
        };
        field(&self.version.to_be_bytes());
        field(self.job.as_bytes());
        field(&self.attempt.to_be_bytes());
        field(&(self.step as u32).to_be_bytes());
        field(self.sender.as_bytes());
        field(self.recipient.as_bytes());
        field(&self.rows.to_be_bytes());
        field(&self.cols.to_be_bytes());
        field(&self.digest);
        field(&self.extra);
        out
    }

    /// Verifies the signature under `key`; `peer` names the sender in errors.
    pub fn verify(&self, key: &IdentityPublic, peer: &str) -> Result<(), ProtocolError> {
        key.verify(
            DOMAIN,
            &self.signed_bytes(),
            &self.signature,
            self.step.name(),
        )
        .map_err(|_| ProtocolError::BadSignature {
            peer: peer.to_owned(),
            what: self.step.name(),
        })
    }

    /// The hash that enters the job transcript.
    pub fn transcript_hash(&self) -> [u8; 32] {
        let mut h = FieldHasher::new("sotto/agg/transcript-entry/v1");
        h.field(&self.signed_bytes()).field(&self.signature);
        h.finish()
    }
}

/// A statement and its payload.
#[derive(Clone, Debug)]
pub struct Envelope {
    /// The signed statement.
    pub statement: Statement,
    /// The payload its digest covers (shared, so a broadcast is not copied).
    pub payload: Arc<Vec<u8>>,
}

impl Envelope {
    /// An envelope without payload.
    pub fn bare(statement: Statement) -> Self {
        Self {
            statement,
            payload: Arc::new(Vec::new()),
        }
    }

    /// Checks the payload against the statement's digest.
    pub fn check_digest(&self, peer: &str) -> Result<(), ProtocolError> {
        if sha256(&self.payload) != self.statement.digest {
            return Err(ProtocolError::DigestMismatch {
                peer: peer.to_owned(),
                what: self.statement.step.name(),
            });
        }
        Ok(())
    }
}

/// Encodes the participants of an attempt (lead first) for an offer.
pub fn encode_participants(lead: &NodeName, clients: &[NodeName]) -> Vec<u8> {
    let mut out = Vec::new();
    for name in std::iter::once(lead).chain(clients) {
        out.push(name.as_str().len() as u8);
        out.extend_from_slice(name.as_str().as_bytes());
    }
    out
}

/// Decodes [`encode_participants`]: the lead and the clients.
pub fn decode_participants(mut bytes: &[u8]) -> Option<(NodeName, Vec<NodeName>)> {
    let mut names = Vec::new();
    while let Some((&len, rest)) = bytes.split_first() {
        let len = usize::from(len);
        if rest.len() < len {
            return None;
        }
        let (name, rest) = rest.split_at(len);
        names.push(std::str::from_utf8(name).ok()?.parse::<NodeName>().ok()?);
        bytes = rest;
    }
    let mut names = names.into_iter();
    let lead = names.next()?;
    Some((lead, names.collect()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn draft() -> Draft<'static> {
        Draft {
            job: JobId::from_bytes([1; 16]),
            attempt: 1,
            step: Step::Masked,
            recipient: "bureau",
            rows: 10,
            cols: 3,
            digest: [2; 32],
            extra: vec![],
        }
    }

    /// One change to each field of a statement, the signature included.
    fn field_changes() -> Vec<fn(&mut Statement)> {
        vec![
            |s| s.version = 2,
            |s| s.job = JobId::from_bytes([9; 16]),
            |s| s.attempt = 2,
            |s| s.step = Step::LeadShare,
            |s| s.sender = "bank-b".into(),
            |s| s.recipient = "*".into(),
            |s| s.rows = 11,
            |s| s.cols = 4,
            |s| s.digest[0] ^= 1,
            |s| s.extra = vec![0],
            |s| s.signature[5] ^= 1,
        ]
    }

    #[test]
    fn every_signed_field_is_covered() {
        let key = IdentityKey::generate(&mut OsRng);
        let name: NodeName = "bank-a".parse().expect("name");
        let good = draft().sign(&name, &key);
        assert!(good.verify(&key.public(), "bank-a").is_ok());
        let mutations = field_changes();
        for (i, mutate) in mutations.into_iter().enumerate() {
            let mut bad = good.clone();
            mutate(&mut bad);
            assert!(
                matches!(
                    bad.verify(&key.public(), "bank-a"),
                    Err(ProtocolError::BadSignature { .. })
                ),
                "mutation {i} accepted"
            );
        }
        let other = IdentityKey::generate(&mut OsRng);
        assert!(matches!(
            good.verify(&other.public(), "bank-a"),
            Err(ProtocolError::BadSignature { .. })
        ));
    }

    #[test]
    fn step_numbers_round_trip_and_nothing_else_decodes() {
        for n in 0..=9 {
            let step = Step::from_number(n);
            assert_eq!(step.map(|s| s as u32), (1..=8).contains(&n).then_some(n));
            if let Some(step) = step {
                assert_eq!(step.to_string(), step.name());
            }
        }
        assert_eq!(Step::from_number(7), Some(Step::Masked));
        assert_eq!(Step::Masked.to_string(), "masked vector");
    }

    #[test]
    fn the_transcript_entry_covers_every_field_and_the_signature() {
        let key = IdentityKey::generate(&mut OsRng);
        let name: NodeName = "bank-a".parse().expect("name");
        let good = draft().sign(&name, &key);
        assert_eq!(good.transcript_hash(), good.clone().transcript_hash());
        let mutations = field_changes();
        for (i, mutate) in mutations.into_iter().enumerate() {
            let mut other = good.clone();
            mutate(&mut other);
            assert_ne!(other.transcript_hash(), good.transcript_hash(), "{i}");
        }
    }

    #[test]
    fn debug_shows_the_route_not_the_payload_or_signature() {
        let key = IdentityKey::generate(&mut OsRng);
        let name: NodeName = "bank-a".parse().expect("name");
        let good = draft().sign(&name, &key);
        assert_eq!(
            format!("{good:?}"),
            format!(
                "Statement(masked vector job={} attempt=1 bank-a->bureau 10x3)",
                JobId::from_bytes([1; 16])
            )
        );
    }

    #[test]
    fn participants_round_trip_and_refuse_garbage() {
        let names: Vec<NodeName> = ["a", "b", "c"]
            .iter()
            .map(|n| n.parse().expect("name"))
            .collect();
        let bytes = encode_participants(&names[1], &names);
        assert_eq!(
            decode_participants(&bytes),
            Some((names[1].clone(), names.clone()))
        );
        assert_eq!(decode_participants(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_participants(&[]), None);
        assert_eq!(decode_participants(&[2, b'A', b'!']), None);
    }
}
