//! The JSON report written at the end of a session.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sotto_node::files::{AtomicFile, Visibility};

use crate::engine::Session;
use crate::table::InputStats;
use crate::wire::{Receipt, Role};

/// Time spent in one phase.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PhaseTiming {
    /// Phase name.
    pub phase: String,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Elements processed.
    pub elements: u64,
}

/// Runs `f` and records how long it took as `phase`.
pub fn timed<T, E>(
    timings: &mut Vec<PhaseTiming>,
    phase: &str,
    elements: u64,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let start = Instant::now();
    let out = f()?;
    timings.push(PhaseTiming {
        phase: phase.to_owned(),
        seconds: start.elapsed().as_secs_f64(),
        elements,
    });
    Ok(out)
}

/// What a driver knows about its side of a session, beyond the engine.
pub struct ReportContext<'a> {
    /// The peer's name.
    pub peer: &'a str,
    /// The input CSV.
    pub input: &'a Path,
    /// Key columns.
    pub columns: &'a [String],
    /// Input counts.
    pub stats: InputStats,
    /// Time per phase.
    pub timings: Vec<PhaseTiming>,
    /// Batches refused (and retransmitted) during the session.
    pub failed_batches: u64,
    /// Copies of accepted batches that arrived again and were ignored.
    pub duplicate_batches: u64,
}

impl Report {
    /// Assembles the report of a finished session.
    pub fn new(
        session: &Session,
        context: ReportContext<'_>,
        size: Option<u64>,
        matched_rows: Option<u64>,
        output: Option<&Path>,
        receipts: (Option<&Receipt>, Option<&Receipt>),
    ) -> Self {
        let params = session.params();
        let peer_distinct_keys = match session.role() {
            Role::Requester => session.provider_size(),
            Role::Provider => session.requester_size(),
        };
        Report {
            session: params.sid.to_string(),
            role: session.role().to_string(),
            peer: context.peer.to_owned(),
            mode: params.mode.to_string(),
            reveal: params.reveal.to_string(),
            group: params.group.name().to_owned(),
            input: InputReport {
                path: context.input.display().to_string(),
                id_columns: context.columns.to_vec(),
                stats: context.stats,
            },
            peer_distinct_keys,
            intersection: IntersectionReport {
                distinct_keys: size,
                matched_rows,
                output: output.map(|p| p.display().to_string()),
            },
            timings: context.timings,
            signatures: SignatureReport {
                made: session.counts().made,
                verified: session.counts().verified,
            },
            failed_batches: context.failed_batches,
            duplicate_batches: context.duplicate_batches,
            transcript_hash: session
                .transcript_hash()
                .map(hex::encode)
                .unwrap_or_default(),
            receipts: ReceiptsReport {
                requester: receipts.0.map(Receipt::to_hex),
                provider: receipts.1.map(Receipt::to_hex),
            },
            peak_rss_bytes: sotto_node::process::peak_rss_bytes(None),
            alignment: None,
        }
    }

    /// Writes the report as pretty JSON under a temporary name, to be placed
    /// with the step's other outputs.
    pub fn stage(&self, path: &Path) -> Result<AtomicFile, sotto_node::NodeError> {
        let mut json = serde_json::to_string_pretty(self)
            .unwrap_or_else(|_| unreachable!("reports always serialize"));
        json.push('\n');
        let mut file = AtomicFile::create(path, Visibility::Public)?;
        file.writer()
            .write_all(json.as_bytes())
            .map_err(|e| sotto_node::NodeError::io(path, "write", e))?;
        Ok(file)
    }
}

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
    /// Copies of already accepted batches that arrived again and were ignored.
    pub duplicate_batches: u64,
    /// Hex of the transcript hash both receipts sign.
    pub transcript_hash: String,
    /// Hex encodings of the signed receipts.
    pub receipts: ReceiptsReport,
    /// Peak resident memory of this process so far, where the OS tells it.
    pub peak_rss_bytes: Option<u64>,
    /// Under sample alignment: how the output is ordered and its digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alignment: Option<AlignmentReport>,
}

/// The aligned output of a session.
#[derive(Clone, Debug, Serialize)]
pub struct AlignmentReport {
    /// Hex of the alignment digest, signed in this party's receipt; equal in
    /// both parties' reports when their outputs line up row for row.
    pub digest: String,
    /// Rows written, one per shared customer.
    pub rows: u64,
    /// Matched rows left out because their key occurred on an earlier row.
    pub dropped_duplicates: u64,
    /// The order of the rows.
    pub order: &'static str,
    /// The column of per-session pseudonyms that replaced the key columns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_column: Option<String>,
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
