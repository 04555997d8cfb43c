//! The sans-IO protocol engines: the [`Coordinator`] and the [`Client`] take
//! envelopes in and return envelopes out; drivers move them. Both check
//! every statement's job, attempt, step, sender, recipient, signature, shape
//! and payload digest before using it.

mod client;
mod coordinator;

pub use client::{Client, ClientResult};
pub use coordinator::{Coordinator, JobResult, Outbound};

use sotto_crypto::hash::FieldHasher;
use sotto_crypto::ids::JobId;
use sotto_crypto::ring;
use sotto_node::NodeName;

use crate::error::ProtocolError;
use crate::message::{Envelope, Statement, Step};

/// One run of a job: its fresh id, number, participants and lead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// Fresh id of this attempt.
    pub job: JobId,
    /// 1 for the first run, then one more per re-run.
    pub number: u32,
    /// Participating clients, in job order.
    pub clients: Vec<NodeName>,
    /// The lead client.
    pub lead: NodeName,
}

impl Attempt {
    /// The clients other than the lead.
    pub fn followers(&self) -> impl Iterator<Item = &NodeName> {
        self.clients.iter().filter(move |c| **c != self.lead)
    }
}

/// HKDF info for a client's dealt mask seed.
fn dealing_info(attempt: &Attempt, client: &NodeName) -> Vec<u8> {
    let mut h = FieldHasher::new("sotto/agg/dealing/v1");
    h.field(attempt.job.as_bytes())
        .field(&attempt.number.to_be_bytes())
        .field(client.as_str().as_bytes());
    h.finish().to_vec()
}

/// Expands the seed dealt to `client` into its mask.
fn expand_dealing(
    seed: &sotto_crypto::secret::SecretBytes<32>,
    attempt: &Attempt,
    client: &NodeName,
    len: usize,
) -> Vec<u64> {
    ring::expand_seed(seed, &dealing_info(attempt, client), len)
}

/// Context a sealed share is bound to: key derivation info and AEAD data.
fn share_context(attempt: &Attempt, lead: &str, recipient: &str, rows: u64, cols: u32) -> Vec<u8> {
    let mut h = FieldHasher::new("sotto/agg/sealed-share/v1");
    h.field(attempt.job.as_bytes())
        .field(&attempt.number.to_be_bytes())
        .field(lead.as_bytes())
        .field(recipient.as_bytes())
        .field(&rows.to_be_bytes())
        .field(&cols.to_be_bytes());
    h.finish().to_vec()
}

/// Checks the fields every statement shares: job, attempt, signed sender.
fn check_frame(statement: &Statement, attempt: &Attempt, peer: &str) -> Result<(), ProtocolError> {
    if statement.job != attempt.job || statement.attempt != attempt.number {
        return Err(ProtocolError::WrongJob {
            peer: peer.to_owned(),
            what: statement.step.name(),
            expected: attempt.job,
            found: format!("{} (attempt {})", statement.job, statement.attempt),
        });
    }
    Ok(())
}

/// Checks a statement's recipient.
fn check_recipient(statement: &Statement, me: &str, peer: &str) -> Result<(), ProtocolError> {
    if statement.recipient != me {
        return Err(ProtocolError::WrongSender {
            peer: peer.to_owned(),
            what: statement.step.name(),
            reason: format!("it is addressed to {}, not to {me}", statement.recipient),
        });
    }
    Ok(())
}

/// Decodes a vector payload of exactly `rows x cols`, after checking the
/// digest.
fn vector_payload(
    envelope: &Envelope,
    rows: u64,
    cols: u32,
    peer: &str,
) -> Result<Vec<u64>, ProtocolError> {
    let s = &envelope.statement;
    let shape_error = |found: String| ProtocolError::WrongShape {
        peer: peer.to_owned(),
        what: s.step.name(),
        expected: format!("{rows} rows x {cols} columns"),
        found,
    };
    if s.rows != rows || s.cols != cols {
        return Err(shape_error(format!("{} rows x {} columns", s.rows, s.cols)));
    }
    envelope.check_digest(peer)?;
    let expected_len = rows.saturating_mul(u64::from(cols)).saturating_mul(8);
    if envelope.payload.len() as u64 != expected_len {
        return Err(shape_error(format!("{} bytes", envelope.payload.len())));
    }
    ring::from_le_bytes(&envelope.payload)
        .ok_or_else(|| shape_error(format!("{} bytes", envelope.payload.len())))
}

/// A statement of a step that does not belong where the engine is.
fn unexpected(step: Step, peer: &str, now: &'static str) -> ProtocolError {
    ProtocolError::Unexpected {
        peer: peer.to_owned(),
        what: step.name(),
        now,
    }
}
