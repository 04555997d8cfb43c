//! Errors of the PSI engine, its wire format, its inputs and its driver.

use std::path::PathBuf;

use sotto_crypto::group::ElementFault;
use sotto_crypto::ids::SessionId;

use crate::wire::StreamKind;

/// A message or file that could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The data ended in the middle of a field.
    #[error(
        "truncated: field `{field}` at byte {offset} needs {needed} bytes, only {available} left"
    )]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Byte offset of the field.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// A field holds a value that is not allowed.
    #[error("field `{field}` at byte {offset}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Byte offset just after the field.
        offset: usize,
        /// Why the value is refused.
        reason: String,
    },
    /// Bytes remain after the last field.
    #[error("{count} unexpected trailing bytes at byte {offset}")]
    TrailingBytes {
        /// Where the trailing bytes start.
        offset: usize,
        /// How many there are.
        count: usize,
    },
}

/// Why a received batch was refused. Nothing from a refused batch is used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The batch belongs to another session (a replay).
    #[error("it belongs to session {found}, not this session {expected} (replayed from another session?)")]
    ForeignSession {
        /// This session.
        expected: SessionId,
        /// The session named in the batch.
        found: SessionId,
    },
    /// The batch is for another round or stream than the one expected.
    #[error("it is a {found} batch where a {expected} batch was expected")]
    WrongStream {
        /// The stream expected.
        expected: StreamKind,
        /// The stream found.
        found: StreamKind,
    },
    /// The batch names another sender than the peer of this session.
    #[error("its sender {found} is not the peer of this session")]
    WrongSender {
        /// The sender identity named in the header.
        found: String,
    },
    /// Batches arrived out of order, or one is missing or repeated.
    #[error("it is batch {found} but batch {expected} comes next (a batch was dropped, repeated or reordered)")]
    OutOfOrder {
        /// The next batch index expected.
        expected: u32,
        /// The index found.
        found: u32,
    },
    /// The header's first position does not continue the stream.
    #[error("its first position is {found} but the stream is at {expected}")]
    PositionMismatch {
        /// The position expected.
        expected: u64,
        /// The position in the header.
        found: u64,
    },
    /// The number of elements or signatures does not match the header.
    #[error("the header announces {announced} elements but the batch carries {elements} elements and {signatures} signatures")]
    CountMismatch {
        /// Elements announced in the header.
        announced: u32,
        /// Elements present.
        elements: usize,
        /// Element signatures present.
        signatures: usize,
    },
    /// The batch is empty, larger than the negotiated batch size, or runs
    /// past the announced size of the stream.
    #[error("it carries {count} elements at position {first}; the stream holds {total} and batches at most {limit}")]
    BadSize {
        /// Elements in the batch.
        count: u32,
        /// First position.
        first: u64,
        /// Announced stream size.
        total: u64,
        /// Negotiated batch size.
        limit: u32,
    },
    /// The identity signature on the header does not verify.
    #[error("the header signature does not verify (header altered or not from the peer)")]
    BadHeaderSignature,
    /// The BLS signature on the header (digest mode) does not verify.
    #[error("the BLS signature on the batch digest does not verify")]
    BadDigestSignature,
    /// Element signatures failed: these positions were altered, dropped,
    /// duplicated or reordered.
    #[error("element signatures fail at positions {}", show_positions(.positions))]
    TamperedElements {
        /// Stream positions (0-based) whose signature fails.
        positions: Vec<u64>,
    },
    /// The elements do not hash to the digest in the signed header.
    #[error("the elements do not match the digest in the signed header (elements altered, dropped, duplicated or reordered)")]
    DigestMismatch,
    /// The batch could not be decoded.
    #[error("it could not be decoded: {reason}")]
    Undecodable {
        /// Where decoding failed.
        reason: String,
    },
    /// An element is not a valid group element.
    #[error("element at position {position} is refused: {fault}")]
    InvalidElement {
        /// Stream position of the element.
        position: u64,
        /// What is wrong with it.
        fault: ElementFault,
    },
}

fn show_positions(positions: &[u64]) -> String {
    const SHOWN: usize = 20;
    let mut text: Vec<String> = positions.iter().take(SHOWN).map(u64::to_string).collect();
    if positions.len() > SHOWN {
        text.push(format!("... ({} in all)", positions.len()));
    }
    text.join(", ")
}

/// An error of the protocol engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// A batch was refused; see [`Rejection`].
    #[error("round {round} {stream} batch {batch} refused: {reason}")]
    BatchRejected {
        /// Protocol round.
        round: u8,
        /// Which stream of the round.
        stream: StreamKind,
        /// Batch index within the stream.
        batch: u32,
        /// Why.
        reason: Rejection,
    },
    /// A stream ended before the announced number of elements arrived.
    #[error(
        "round {round} {stream} ended after {received} of {expected} elements (batches dropped)"
    )]
    StreamIncomplete {
        /// Protocol round.
        round: u8,
        /// Which stream.
        stream: StreamKind,
        /// Elements announced.
        expected: u64,
        /// Elements received.
        received: u64,
    },
    /// The peer's hello or accept is unacceptable.
    #[error("handshake refused: {0}")]
    Handshake(String),
    /// The peer makes its keys differently (columns, normalization, shard):
    /// equal customers would not match, so nothing is computed.
    #[error("handshake refused: the peer's {parameter} is {theirs} but ours is {ours}; both parties must use the same, so nothing was computed")]
    ParameterMismatch {
        /// Which parameter differs.
        parameter: &'static str,
        /// Our value.
        ours: String,
        /// The peer's value.
        theirs: String,
    },
    /// The requester asked for aligned output and this provider does not agree.
    #[error("handshake refused: the requester asks for aligned output (--align) and this provider does not agree to it (accept/serve without --allow-align); nothing was computed")]
    AlignRefused,
    /// The requester's hello is older than a provider accepts (or dated in
    /// the future): it may be a replay of a session no longer remembered.
    #[error("handshake refused: the hello was written at Unix time {created}, but this node's clock says {now}; a hello is accepted for 7 days (10 minutes ahead at most), so start a new session")]
    HelloExpired {
        /// When the hello says it was written.
        created: u64,
        /// The provider's clock.
        now: u64,
    },
    /// A signature on a handshake message or receipt does not verify.
    #[error(
        "{what} signature does not verify: the message was altered or is not from the pinned peer"
    )]
    BadSignature {
        /// Which message.
        what: &'static str,
    },
    /// A step was attempted in the wrong phase of the session.
    #[error("out of order: {0}")]
    Phase(String),
    /// The peer's receipt disagrees with our view of the session.
    #[error("the peer's receipt disagrees with this session: {0}")]
    ReceiptMismatch(String),
}

/// A hello whose session this provider accepted before: a replay (by a
/// relay, or from a copy of an old file), or the accept step run twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session {sid} was already accepted by this node (at Unix time {accepted_at}); a hello is accepted once, so this one is a replay or a repeated step: the requester must start a new session")]
pub struct Replayed {
    /// The session.
    pub sid: SessionId,
    /// When this node accepted it first, Unix seconds.
    pub accepted_at: u64,
}

/// An error reading inputs or writing outputs.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file could not be opened or read.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// A named identifier column is not in the header.
    #[error("{path}:1: no column named {column:?}; the header has: {available}")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: String,
        /// The columns present.
        available: String,
    },
    /// A cell is not valid UTF-8.
    #[error("{path}:{line}:{column}: invalid UTF-8 in column {column_name:?}; re-encode the file as UTF-8")]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column number.
        column: usize,
        /// Header name of the column.
        column_name: String,
    },
    /// A row has a different number of fields than the header.
    #[error("{path}:{line}: row has {found} fields but the header has {expected}")]
    Ragged {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// Fields in the header.
        expected: u64,
        /// Fields in the row.
        found: u64,
    },
    /// The file is not parseable CSV.
    #[error("{path}:{line}: {reason}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line (0 if unknown).
        line: u64,
        /// The parser's message.
        reason: String,
    },
    /// Two header fields have the same name, so a column chosen by name is
    /// ambiguous.
    #[error("{path}:1:{second}: column name {name:?} appears again (first at column {first}); rename one of them")]
    DuplicateColumn {
        /// The file.
        path: PathBuf,
        /// The repeated name.
        name: String,
        /// 1-based column of its first occurrence.
        first: usize,
        /// 1-based column of the repeat.
        second: usize,
    },
    /// The input file was deleted or changed while a provider served it.
    #[error("{path} was {what} after the provider read it at start-up; restart `psi serve` to serve the new contents")]
    InputReplaced {
        /// The file.
        path: PathBuf,
        /// `deleted` or `changed`.
        what: &'static str,
    },
    /// Under alignment, keys occur on several rows and duplicates are refused.
    #[error("{path}: {count} row(s) repeat the key of an earlier row ({lines}); aligned output needs one row per key: remove the repeats, or pass --duplicates first to keep the first row of each key")]
    DuplicateKeys {
        /// The file.
        path: PathBuf,
        /// Rows that repeat a key.
        count: u64,
        /// The first few repeats, "line N repeats line M".
        lines: String,
    },
    /// A flag column was asked for an aligned output.
    #[error("{path}: aligned output writes one row per shared customer; --flag-column (every row, flagged) cannot be aligned: use --output alone or --keys-only")]
    FlagWithAlign {
        /// The output.
        path: PathBuf,
    },
    /// The file has no header row.
    #[error("{path}: empty file; a CSV with a header row is required")]
    NoHeader {
        /// The file.
        path: PathBuf,
    },
    /// The input changed between two steps of an offline session.
    #[error("{path} changed since this session read it (SHA-256 differs); restore the original file or start a new session")]
    Changed {
        /// The file.
        path: PathBuf,
    },
    /// The output would add a column that already exists.
    #[error(
        "flag column {column:?} already exists in {path}; choose another name with --flag-column"
    )]
    FlagColumnExists {
        /// The input file.
        path: PathBuf,
        /// The clashing name.
        column: String,
    },
    /// The node home refused a write.
    #[error(transparent)]
    Node(#[from] sotto_node::NodeError),
}
