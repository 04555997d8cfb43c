//! Errors of the aggregation crate: decimal cells, job files, tables, the
//! protocol engines and the network driver.

use std::path::PathBuf;

use sotto_crypto::ids::JobId;

/// A decimal cell that cannot be encoded at the column's scale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FixedError {
    /// The text is not a decimal number.
    #[error("not a decimal number (expected digits, an optional sign and an optional '.')")]
    NotANumber,
    /// More decimal places than the scale keeps.
    #[error("has more than {places} decimal places, which the column's scale cannot keep exactly")]
    TooPrecise {
        /// Places the scale keeps.
        places: u32,
    },
    /// The value times the scale does not fit in 64 bits.
    #[error("too large for a 64-bit fixed-point value at this scale")]
    TooLarge,
    /// The scale is not a power of ten.
    #[error("scale {scale} is not a power of ten (1, 10, 100, ...)")]
    BadScale {
        /// The scale given.
        scale: u64,
    },
}

/// A job file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The file could not be read.
    #[error("{path}: cannot read the job file: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a job (the reason names line and column).
    #[error("{path}: {reason}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// What the TOML parser said, with line and column.
        reason: String,
    },
    /// The job is well-formed TOML but not a usable job.
    #[error("{path}: {field}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field at fault.
        field: String,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// A client table or query file that cannot be used; every variant names the
/// file, and where it applies the line and column.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The file could not be read or written.
    #[error("{path}: {action}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: std::io::Error,
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
    /// A column the job or the command names is not in the header.
    #[error("{path}:1: no column named {column:?}; the header has: {available}")]
    MissingColumn {
        /// The file.
        path: PathBuf,
        /// The missing column.
        column: String,
        /// The columns present.
        available: String,
    },
    /// The CSV itself is malformed (ragged row, bad quoting, invalid UTF-8).
    #[error("{path}:{line}: {reason}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// What the CSV reader said.
        reason: String,
    },
    /// A numeric cell cannot be encoded.
    #[error("{path}:{line}:{column}: column {column_name:?}: {text:?} {source}")]
    BadNumber {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column number.
        column: usize,
        /// Header name of the column.
        column_name: String,
        /// The cell.
        text: String,
        /// Why it was refused.
        source: FixedError,
    },
    /// A value outside the range the job declares for its column.
    #[error("{path}:{line}:{column}: column {column_name:?}: {text} is outside the declared range {range}; fix the value, or have the range widened in the job or dataset declaration")]
    OutOfRange {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column number.
        column: usize,
        /// Header name of the column.
        column_name: String,
        /// The cell.
        text: String,
        /// The declared range, `[min, max]` in decimal.
        range: String,
    },
    /// The same id on two rows.
    #[error("{path}:{line}:{column}: id {id:?} already appears on line {first_line}; each id must appear once")]
    DuplicateId {
        /// The file.
        path: PathBuf,
        /// 1-based line of the repeat.
        line: u64,
        /// 1-based column of the id.
        column: usize,
        /// Line of the first occurrence.
        first_line: u64,
        /// The id.
        id: String,
    },
    /// An empty id cell.
    #[error("{path}:{line}:{column}: empty id; every row needs an id")]
    EmptyId {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// 1-based column of the id.
        column: usize,
    },
}

/// A protocol message refused by an engine. Each variant names the peer the
/// message came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A statement's signature does not verify under the sender's pinned key.
    #[error("{what} from {peer}: signature does not verify under {peer}'s pinned identity key")]
    BadSignature {
        /// The sender.
        peer: String,
        /// What was signed.
        what: &'static str,
    },
    /// A statement for another job or attempt.
    #[error("{what} from {peer} belongs to job {found}, not to job {expected}")]
    WrongJob {
        /// The sender.
        peer: String,
        /// What was received.
        what: &'static str,
        /// This job.
        expected: JobId,
        /// The job it names.
        found: String,
    },
    /// A statement whose signed sender is not the party it came from, or a
    /// sender that has no part in this step.
    #[error("{what} arrived from {peer} but {reason}")]
    WrongSender {
        /// Who it came from.
        peer: String,
        /// What was received.
        what: &'static str,
        /// Why that sender is wrong here.
        reason: String,
    },
    /// A step received twice.
    #[error("{what} from {peer} received twice; a repeated step is refused")]
    Repeated {
        /// The sender.
        peer: String,
        /// The step.
        what: &'static str,
    },
    /// A step that does not belong at this point.
    #[error("{what} from {peer} was not expected {now}")]
    Unexpected {
        /// The sender.
        peer: String,
        /// The step.
        what: &'static str,
        /// Where the engine is.
        now: &'static str,
    },
    /// A vector or payload of the wrong shape or length.
    #[error("{what} from {peer} has the wrong shape: expected {expected}, found {found}")]
    WrongShape {
        /// The sender.
        peer: String,
        /// What was received.
        what: &'static str,
        /// The shape this job requires.
        expected: String,
        /// The shape received.
        found: String,
    },
    /// A payload whose digest does not match its signed statement.
    #[error("{what} from {peer}: the payload does not match the digest in its signed statement (altered in transit)")]
    DigestMismatch {
        /// The sender.
        peer: String,
        /// What was received.
        what: &'static str,
    },
    /// The coordinator offers a job other than the one in this client's job
    /// file, or an attempt this client cannot take part in.
    #[error("the offer from {peer} does not match this client's job: {reason}")]
    OfferMismatch {
        /// The coordinator.
        peer: String,
        /// What differs.
        reason: String,
    },
    /// An attempt with fewer clients than the job's `min_clients` (a re-run
    /// downgraded below what the clients agreed to).
    #[error("attempt {attempt} offered by {peer} has {clients} clients, fewer than the job's min_clients = {min}; refusing, since so few clients could learn each other's figures")]
    TooFewClients {
        /// The coordinator.
        peer: String,
        /// The attempt number.
        attempt: u32,
        /// Clients in the attempt.
        clients: usize,
        /// The job's minimum.
        min: usize,
    },
    /// A sealed share that does not decrypt.
    #[error("sealed share from {peer}: {reason}")]
    Sealed {
        /// The lead client.
        peer: String,
        /// Why it was refused.
        reason: String,
    },
    /// A statement field that cannot be decoded.
    #[error("{what} from {peer}: field {field}: {reason}")]
    Malformed {
        /// The sender.
        peer: String,
        /// What was received.
        what: &'static str,
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}
