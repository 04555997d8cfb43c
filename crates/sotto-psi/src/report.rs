//! The JSON report written at the end of a session.

use serde::Serialize;

use crate::local::PhaseTiming;
use crate::table::InputStats;

/// Everything a party may record about a finished session.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Session id.
    pub session: String,
    /// This party's role.
    pub role: String,
    /// The peer's name.
    pub peer: String,
    /// Signing mode.
    pub mode: String,
    /// Reveal mode.
    pub reveal: String,
    /// PSI group.
    pub group: String,
    /// This party's input.
    pub input: InputReport,
    /// Distinct identifiers the peer encrypted.
    pub peer_distinct_keys: u64,
    /// What was learned.
    pub intersection: IntersectionReport,
    /// Time per phase, across all of this party's steps.
    pub timings: Vec<PhaseTiming>,
    /// Signature counters.
    pub signatures: SignatureReport,
    /// Batches refused during the session.
    pub failed_batches: u64,
    /// Hex of the transcript hash both receipts sign.
    pub transcript_hash: String,
    /// Hex encodings of the signed receipts.
    pub receipts: ReceiptsReport,
}

/// The input part of a report.
#[derive(Clone, Debug, Serialize)]
pub struct InputReport {
    /// The CSV file.
    pub path: String,
    /// Key columns.
    pub id_columns: Vec<String>,
    /// Counts.
    #[serde(flatten)]
    pub stats: InputStats,
}

/// The result part of a report.
#[derive(Clone, Debug, Serialize)]
pub struct IntersectionReport {
    /// Distinct keys in the intersection, if this party learned it.
    pub distinct_keys: Option<u64>,
    /// Rows of this party's input whose key matched, if it learned them.
    pub matched_rows: Option<u64>,
    /// Output file written, if any.
    pub output: Option<String>,
}

/// Signature counters.
#[derive(Clone, Debug, Serialize)]
pub struct SignatureReport {
    /// Signatures made by this party.
    pub made: u64,
    /// Signatures of the peer verified by this party.
    pub verified: u64,
}

/// Receipts as hex.
#[derive(Clone, Debug, Serialize)]
pub struct ReceiptsReport {
    /// The requester's receipt.
    pub requester: Option<String>,
    /// The provider's receipt.
    pub provider: Option<String>,
}
