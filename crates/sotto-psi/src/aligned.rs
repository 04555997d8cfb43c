//! Aligned outputs for vertical federated learning: both parties write one
//! row per shared customer, in ascending order of the normalized key (its
//! UTF-8 bytes, column by column for a composite key),
//! so that row i of one file and row i of the other are the same customer.
//! The alignment digest over the rows' key tags (see
//! [`crate::engine::alignment_digest`]) lets either party, or an auditor,
//! check that the two files line up without exchanging them.
//!
//! A key that occurs on several rows is either refused before the session
//! computes anything ([`Duplicates::Refuse`], the default) or written once,
//! from its first row ([`Duplicates::First`]).

use std::path::{Path, PathBuf};

use sotto_crypto::ids::SessionId;
use sotto_node::files::{AtomicFile, Visibility};

use crate::codec::Reader;
use crate::engine::{alignment_digest, KeyTag, PseudonymKey};
use crate::error::TableError;
use crate::report::AlignmentReport;
use crate::table::{
    column_indices, csv_error, io_error, key_columns, key_parts, reader, stage_matches,
    HashingReader, KeySpec, KeyTable, OutputKind, RowKey,
};
use crate::wire::{Receipt, Role};

/// What to do with a key that occurs on several rows, under alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Duplicates {
    /// Refuse the input before anything is computed, naming the lines.
    Refuse,
    /// Keep the first row of each key and count the others as dropped.
    First,
}

impl std::str::FromStr for Duplicates {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "refuse" => Ok(Self::Refuse),
            "first" => Ok(Self::First),
            other => Err(format!("unknown value {other:?}; expected refuse or first")),
        }
    }
}

impl std::fmt::Display for Duplicates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Refuse => "refuse",
            Self::First => "first",
        })
    }
}

/// Under [`Duplicates::Refuse`], refuses a table in which a key occurs on
/// more than one row, naming the repeated lines (and the line each repeats).
pub fn check_duplicates(table: &KeyTable, duplicates: Duplicates) -> Result<(), TableError> {
    if duplicates == Duplicates::First || table.stats.duplicate_rows == 0 {
        return Ok(());
    }
    let lines = row_lines(&table.path)?;
    let mut first_line = vec![None; table.keys.len()];
    let mut repeats = Vec::new();
    for (row, row_key) in table.row_keys.iter().enumerate() {
        let (RowKey::Key(k), Some(&line)) = (row_key, lines.get(row)) else {
            continue;
        };
        match first_line.get_mut(*k as usize) {
            Some(slot @ None) => *slot = Some(line),
            Some(Some(first)) => repeats.push((line, *first)),
            None => {}
        }
    }
    Err(TableError::DuplicateKeys {
        path: table.path.clone(),
        count: table.stats.duplicate_rows,
        lines: repeats
            .iter()
            .take(10)
            .map(|(line, first)| format!("line {line} repeats line {first}"))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// The line on which each data row starts.
fn row_lines(path: &Path) -> Result<Vec<u64>, TableError> {
    let mut rdr = reader(HashingReader::open(path)?);
    let mut record = csv::ByteRecord::new();
    let mut lines = Vec::new();
    while rdr
        .read_byte_record(&mut record)
        .map_err(|e| csv_error(path, e))?
    {
        lines.push(record.position().map_or(0, csv::Position::line));
    }
    Ok(lines)
}

/// Where and how an aligned output is written.
pub struct AlignedSpec<'a> {
    /// The output file and what it holds (rows or keys; not flags).
    pub output: Option<&'a (PathBuf, OutputKind)>,
    /// Replace the key columns by this column of per-session pseudonyms.
    pub id_column: Option<&'a str>,
}

/// An aligned output, staged.
pub struct AlignedOutput {
    /// Rows written (one per shared key).
    pub rows: u64,
    /// Matched rows left out because their key occurred on an earlier row.
    pub dropped: u64,
    /// The alignment digest of the rows.
    pub digest: [u8; 32],
    /// The file, not yet in place.
    pub file: Option<AtomicFile>,
}

/// What a finishing party writes: its rows (aligned or in input order),
/// staged, and the alignment block of its report.
pub struct FinishRows {
    /// Rows written (or that would be, without an output file).
    pub rows: u64,
    /// The output file, not yet in place.
    pub file: Option<AtomicFile>,
    /// Under alignment, what the report says of it.
    pub alignment: Option<AlignmentReport>,
    /// Under alignment, the digest to sign in the receipt.
    pub digest: Option<[u8; 32]>,
}

/// Stages a finishing party's rows: aligned when `align` gives the session
/// id, its pseudonym key and the optional pseudonym column, else every
/// matched row in input order.
pub fn stage_rows(
    table: &KeyTable,
    spec: &KeySpec,
    matched: &[u32],
    output: Option<&(PathBuf, OutputKind)>,
    align: Option<(&SessionId, &PseudonymKey, Option<&str>)>,
) -> Result<FinishRows, TableError> {
    let Some((sid, key, id_column)) = align else {
        let staged = stage_matches(table, spec, matched, output)?;
        return Ok(FinishRows {
            rows: staged.rows,
            file: staged.file,
            alignment: None,
            digest: None,
        });
    };
    let aligned = stage_aligned(
        table,
        spec,
        matched,
        sid,
        key,
        &AlignedSpec { output, id_column },
    )?;
    Ok(FinishRows {
        rows: aligned.rows,
        file: aligned.file,
        alignment: Some(AlignmentReport {
            digest: hex::encode(aligned.digest),
            rows: aligned.rows,
            dropped_duplicates: aligned.dropped,
            order: "ascending normalized key (UTF-8 bytes, column by column)",
            id_column: id_column.map(str::to_owned),
        }),
        digest: Some(aligned.digest),
    })
}

/// The matched distinct keys in ascending order of the normalized key: the
/// UTF-8 bytes of the first key column, then of the next for composite keys.
pub fn aligned_order(table: &KeyTable, matched: &[u32]) -> Vec<u32> {
    let mut order: Vec<u32> = matched
        .iter()
        .copied()
        .filter(|&k| (k as usize) < table.keys.len())
        .collect();
    order.sort_unstable_by(|a, b| {
        key_parts(table.keys.get(*a as usize)).cmp(key_parts(table.keys.get(*b as usize)))
    });
    order.dedup();
    order
}

/// Computes the aligned order, its digest and, if asked for, stages the
/// output file (mode 0600).
pub fn stage_aligned(
    table: &KeyTable,
    spec: &KeySpec,
    matched: &[u32],
    sid: &SessionId,
    key: &PseudonymKey,
    out: &AlignedSpec<'_>,
) -> Result<AlignedOutput, TableError> {
    let order = aligned_order(table, matched);
    let tags: Vec<KeyTag> = order
        .iter()
        .map(|&k| key.tag(table.keys.get(k as usize)))
        .collect();
    let digest = alignment_digest(sid, tags.iter());
    let matched_rows = count_rows(table, &order);
    let file = match out.output {
        None => None,
        Some((path, kind)) => Some(write_aligned(
            table,
            spec,
            &order,
            &tags,
            kind,
            path,
            out.id_column,
        )?),
    };
    Ok(AlignedOutput {
        rows: order.len() as u64,
        dropped: matched_rows - order.len() as u64,
        digest,
        file,
    })
}

fn count_rows(table: &KeyTable, order: &[u32]) -> u64 {
    let mut matched = vec![false; table.keys.len()];
    for &k in order {
        matched[k as usize] = true;
    }
    table
        .row_keys
        .iter()
        .filter(|r| matches!(r, RowKey::Key(k) if matched[*k as usize]))
        .count() as u64
}

fn write_aligned(
    table: &KeyTable,
    spec: &KeySpec,
    order: &[u32],
    tags: &[KeyTag],
    kind: &OutputKind,
    out: &Path,
    id_column: Option<&str>,
) -> Result<AtomicFile, TableError> {
    let rows = match kind {
        OutputKind::KeysOnly => None,
        OutputKind::Rows => Some(first_rows(table, order)?),
        OutputKind::Flag(_) => {
            return Err(TableError::FlagWithAlign {
                path: out.to_owned(),
            })
        }
    };
    let mut file = AtomicFile::create(out, Visibility::Private)?;
    {
        let mut wtr = csv::Writer::from_writer(file.writer());
        let pseudonym = |i: usize| hex::encode(&tags[i][..16]);
        match (rows, id_column) {
            (None, None) => {
                wtr.write_record(&spec.columns)
                    .map_err(|e| csv_error(out, e))?;
                for &k in order {
                    wtr.write_record(key_columns(table.keys.get(k as usize)))
                        .map_err(|e| csv_error(out, e))?;
                }
            }
            (None, Some(name)) => {
                wtr.write_record([name]).map_err(|e| csv_error(out, e))?;
                for i in 0..order.len() {
                    wtr.write_record([pseudonym(i)])
                        .map_err(|e| csv_error(out, e))?;
                }
            }
            (Some((header, records)), None) => {
                wtr.write_byte_record(&header)
                    .map_err(|e| csv_error(out, e))?;
                for record in &records {
                    wtr.write_byte_record(record)
                        .map_err(|e| csv_error(out, e))?;
                }
            }
            (Some((header, records)), Some(name)) => {
                let keys = key_positions(table, spec, &header)?;
                wtr.write_byte_record(&without(&header, &keys, name.as_bytes()))
                    .map_err(|e| csv_error(out, e))?;
                for (i, record) in records.iter().enumerate() {
                    wtr.write_byte_record(&without(record, &keys, pseudonym(i).as_bytes()))
                        .map_err(|e| csv_error(out, e))?;
                }
            }
        }
        wtr.flush().map_err(io_error(out, "write"))?;
    }
    Ok(file)
}

/// The header and, in `order`, the first row of each key, read from the
/// input (which must still be the file that was read).
fn first_rows(
    table: &KeyTable,
    order: &[u32],
) -> Result<(csv::ByteRecord, Vec<csv::ByteRecord>), TableError> {
    let path = &table.path;
    let mut slot_of = vec![usize::MAX; table.keys.len()];
    for (slot, &k) in order.iter().enumerate() {
        slot_of[k as usize] = slot;
    }
    let mut rows = vec![csv::ByteRecord::new(); order.len()];
    let mut filled = vec![false; order.len()];
    let mut rdr = reader(HashingReader::open(path)?);
    let header = rdr.byte_headers().map_err(|e| csv_error(path, e))?.clone();
    let mut record = csv::ByteRecord::new();
    for row_key in &table.row_keys {
        if !rdr
            .read_byte_record(&mut record)
            .map_err(|e| csv_error(path, e))?
        {
            return Err(TableError::Changed { path: path.clone() });
        }
        if let RowKey::Key(k) = row_key {
            let slot = slot_of[*k as usize];
            if slot != usize::MAX && !filled[slot] {
                rows[slot] = record.clone();
                filled[slot] = true;
            }
        }
    }
    let extra_row = rdr
        .read_byte_record(&mut record)
        .map_err(|e| csv_error(path, e))?;
    if extra_row || rdr.into_inner().digest() != table.digest {
        return Err(TableError::Changed { path: path.clone() });
    }
    Ok((header, rows))
}

fn key_positions(
    table: &KeyTable,
    spec: &KeySpec,
    header: &csv::ByteRecord,
) -> Result<Vec<usize>, TableError> {
    let names: Vec<String> = header
        .iter()
        .map(|h| String::from_utf8_lossy(h).into_owned())
        .collect();
    column_indices(&table.path, &names, &spec.columns)
}

/// `record` with the fields at `drop` removed and `first` put in front.
fn without(record: &csv::ByteRecord, drop: &[usize], first: &[u8]) -> csv::ByteRecord {
    let mut out = csv::ByteRecord::new();
    out.push_field(first);
    for (i, field) in record.iter().enumerate() {
        if !drop.contains(&i) {
            out.push_field(field);
        }
    }
    out
}

/// Why two reports do not prove aligned outputs.
#[derive(Debug, thiserror::Error)]
pub enum AlignmentError {
    /// A report cannot be read, or lacks what an aligned session writes.
    #[error("{report}: {reason}")]
    Report {
        /// Which report.
        report: String,
        /// What is wrong.
        reason: String,
    },
    /// The two reports disagree.
    #[error("the two outputs do not line up: {0}")]
    Mismatch(String),
}

/// What two matching reports establish.
#[derive(Debug)]
pub struct AlignmentVerdict {
    /// The session.
    pub session: String,
    /// Rows in each output.
    pub rows: u64,
    /// The common alignment digest (hex).
    pub digest: String,
    /// The requester's identity key (hex), as its receipt names it.
    pub requester: String,
    /// The provider's identity key (hex), as its receipt names it.
    pub provider: String,
}

/// One party's report of an aligned session, with its own signed receipt
/// checked against the identity it names.
struct AlignedReport {
    session: String,
    role: Role,
    digest: String,
    rows: u64,
    own: Receipt,
    requester_receipt: String,
}

fn read_report(name: &str, json: &[u8]) -> Result<AlignedReport, AlignmentError> {
    let bad = |reason: String| AlignmentError::Report {
        report: name.to_owned(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| {
        bad(format!(
            "not JSON (line {}, column {}): {e}",
            e.line(),
            e.column()
        ))
    })?;
    let text = |path: &str| {
        value
            .pointer(path)
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                bad(format!(
                    "no {path} (is it the report of an aligned session?)"
                ))
            })
    };
    let role: Role = text("/role")?.parse().map_err(bad)?;
    let receipt_hex = text(&format!("/receipts/{role}"))?;
    let own = decode_receipt(&receipt_hex).map_err(|e| bad(format!("its {role} receipt: {e}")))?;
    own_receipt_checks(&own, role).map_err(bad)?;
    Ok(AlignedReport {
        session: text("/session")?,
        role,
        digest: text("/alignment/digest")?,
        rows: value
            .pointer("/alignment/rows")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad("no /alignment/rows".into()))?,
        own,
        requester_receipt: text("/receipts/requester")?,
    })
}

fn decode_receipt(hex_text: &str) -> Result<Receipt, String> {
    let bytes = hex::decode(hex_text).map_err(|e| format!("not hex: {e}"))?;
    let mut r = Reader::new(&bytes);
    let receipt = Receipt::decode(&mut r).map_err(|e| e.to_string())?;
    r.expect_end().map_err(|e| e.to_string())?;
    Ok(receipt)
}

/// A party's own final receipt: signed by the identity it names for that
/// role, and carrying an alignment digest.
fn own_receipt_checks(receipt: &Receipt, role: Role) -> Result<(), String> {
    let signer = match role {
        Role::Requester => receipt.requester,
        Role::Provider => receipt.provider,
    };
    if receipt.signer != role {
        return Err(format!(
            "its own receipt is signed as the {}",
            receipt.signer
        ));
    }
    signer
        .verify(
            crate::wire::RECEIPT_DOMAIN,
            &receipt.signed_bytes(),
            &receipt.signature,
            "receipt",
        )
        .map_err(|_| {
            "its own receipt's signature does not verify (the report was edited)".to_owned()
        })?;
    if receipt.alignment.is_none() {
        return Err("its own receipt signs no alignment digest (not an aligned session)".into());
    }
    Ok(())
}

/// Checks that two parties' reports of one aligned session prove that their
/// outputs line up row for row: the same session, one report per role, each
/// party's own receipt signed by the identity it names and signing the
/// digest its report states, equal digests and row counts, and the same
/// requester receipt in both.
pub fn verify_alignment(
    mine: (&str, &[u8]),
    theirs: (&str, &[u8]),
) -> Result<AlignmentVerdict, AlignmentError> {
    let a = read_report(mine.0, mine.1)?;
    let b = read_report(theirs.0, theirs.1)?;
    let mismatch = |what: String| Err(AlignmentError::Mismatch(what));
    if a.session != b.session {
        return mismatch(format!(
            "the reports are of sessions {} and {}",
            a.session, b.session
        ));
    }
    if a.role == b.role {
        return mismatch(format!("both reports are the {}'s", a.role));
    }
    for r in [&a, &b] {
        let signed = r.own.alignment.map(hex::encode).unwrap_or_default();
        if r.own.sid.to_string() != r.session || signed != r.digest {
            return mismatch(format!(
                "the {}'s report states digest {} but its receipt signs {signed} (the report was edited)",
                r.role, r.digest
            ));
        }
    }
    if (a.own.requester, a.own.provider) != (b.own.requester, b.own.provider) {
        return mismatch("the receipts name different parties".into());
    }
    if a.requester_receipt != b.requester_receipt {
        return mismatch("the reports hold different requester receipts".into());
    }
    if a.digest != b.digest || a.rows != b.rows {
        return mismatch(format!(
            "the {} wrote {} rows with digest {}, the {} {} rows with digest {}",
            a.role, a.rows, a.digest, b.role, b.rows, b.digest
        ));
    }
    Ok(AlignmentVerdict {
        session: a.session,
        rows: a.rows,
        digest: a.digest,
        requester: a.own.requester.to_string(),
        provider: a.own.provider.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(parts: &[&str]) -> Vec<u8> {
        let mut key = Vec::new();
        for p in parts {
            key.extend_from_slice(&(p.len() as u32).to_be_bytes());
            key.extend_from_slice(p.as_bytes());
        }
        key
    }

    #[test]
    fn keys_order_by_their_text_column_by_column_not_by_length() {
        let (short, long) = (stored(&["b"]), stored(&["ab"]));
        assert!(
            key_parts(&long).cmp(key_parts(&short)).is_lt(),
            "ab before b"
        );
        let (a, b) = (stored(&["x", "2"]), stored(&["x", "10"]));
        assert!(
            key_parts(&b).cmp(key_parts(&a)).is_lt(),
            "byte order within a column"
        );
        let (a, b) = (stored(&["x", "z"]), stored(&["xy", "a"]));
        assert!(
            key_parts(&a).cmp(key_parts(&b)).is_lt(),
            "first column decides"
        );
    }
}
