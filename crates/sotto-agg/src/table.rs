//! Client tables (an id column and numeric columns, encoded at the job's
//! scales and checked against its ranges), query files (a column of ids) and
//! the result file. Every refusal names file, line and column.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sotto_crypto::hash::FieldHasher;
use sotto_node::files::{AtomicFile, Visibility};

use crate::error::TableError;
use crate::fixed;
use crate::job::ColumnSpec;

/// A client's numeric table, keyed by id.
pub struct ClientTable {
    /// The file it was read from.
    pub path: PathBuf,
    index: HashMap<Box<str>, u32>,
    values: Vec<i64>,
    width: usize,
}

/// Which CSV column feeds which job column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnMap {
    /// The id column.
    pub id: String,
    /// For each job column in job order, the header name in the table.
    pub sources: Vec<String>,
}

impl ColumnMap {
    /// Every job column read from the table column of the same name, except
    /// where `renames` (`job column -> table column`) says otherwise.
    pub fn new(id: &str, columns: &[ColumnSpec], renames: &[(String, String)]) -> Self {
        let sources = columns
            .iter()
            .map(|c| {
                renames
                    .iter()
                    .find(|(job, _)| *job == c.name)
                    .map_or_else(|| c.name.clone(), |(_, table)| table.clone())
            })
            .collect();
        Self {
            id: id.to_owned(),
            sources,
        }
    }
}

fn open_csv(path: &Path) -> Result<(csv::Reader<std::fs::File>, Vec<String>), TableError> {
    let file = std::fs::File::open(path).map_err(|source| TableError::Io {
        path: path.to_owned(),
        action: "open",
        source,
    })?;
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(file);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .map(str::to_owned)
        .collect();
    for (second, name) in headers.iter().enumerate() {
        if let Some(first) = headers[..second]
            .iter()
            .position(|h| h.trim() == name.trim())
        {
            return Err(TableError::DuplicateColumn {
                path: path.to_owned(),
                name: name.trim().to_owned(),
                first: first + 1,
                second: second + 1,
            });
        }
    }
    Ok((reader, headers))
}

fn csv_error(path: &Path, err: csv::Error) -> TableError {
    let line = err.position().map_or(1, csv::Position::line);
    match err.into_kind() {
        csv::ErrorKind::Io(source) => TableError::Io {
            path: path.to_owned(),
            action: "read",
            source,
        },
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => TableError::Csv {
            path: path.to_owned(),
            line: pos.map_or(line, |p| p.line()),
            reason: format!("row has {len} fields but the header has {expected_len}"),
        },
        csv::ErrorKind::Utf8 { pos, err } => TableError::Csv {
            path: path.to_owned(),
            line: pos.map_or(line, |p| p.line()),
            reason: format!(
                "field {} is not valid UTF-8; re-encode the file as UTF-8",
                err.field() + 1
            ),
        },
        other => TableError::Csv {
            path: path.to_owned(),
            line,
            reason: format!("{other:?}"),
        },
    }
}

fn column_index(path: &Path, headers: &[String], name: &str) -> Result<usize, TableError> {
    headers
        .iter()
        .position(|h| h.trim() == name)
        .ok_or_else(|| TableError::MissingColumn {
            path: path.to_owned(),
            column: name.to_owned(),
            available: headers.join(", "),
        })
}

/// Reads the id cell of a row, refusing an empty one.
fn id_cell<'r>(
    path: &Path,
    record: &'r csv::StringRecord,
    line: u64,
    column: usize,
) -> Result<&'r str, TableError> {
    let id = record.get(column).unwrap_or("").trim();
    if id.is_empty() {
        return Err(TableError::EmptyId {
            path: path.to_owned(),
            line,
            column: column + 1,
        });
    }
    Ok(id)
}

impl ClientTable {
    /// Reads a table, encoding every mapped column at its job scale and
    /// checking it against the job's range. Nothing is sent before this
    /// succeeds.
    pub fn read(path: &Path, map: &ColumnMap, columns: &[ColumnSpec]) -> Result<Self, TableError> {
        let (mut reader, headers) = open_csv(path)?;
        let id_col = column_index(path, &headers, &map.id)?;
        let value_cols = map
            .sources
            .iter()
            .map(|name| column_index(path, &headers, name))
            .collect::<Result<Vec<_>, _>>()?;
        let mut index: HashMap<Box<str>, u32> = HashMap::new();
        let mut first_line: Vec<u64> = Vec::new();
        let mut values = Vec::new();
        let mut record = csv::StringRecord::new();
        while reader
            .read_record(&mut record)
            .map_err(|e| csv_error(path, e))?
        {
            let line = record.position().map_or(0, csv::Position::line);
            let id = id_cell(path, &record, line, id_col)?;
            if let Some(&row) = index.get(id) {
                return Err(TableError::DuplicateId {
                    path: path.to_owned(),
                    line,
                    column: id_col + 1,
                    first_line: first_line[row as usize],
                    id: id.to_owned(),
                });
            }
            for (spec, &col) in columns.iter().zip(&value_cols) {
                values.push(read_value(path, &record, line, col, &headers[col], spec)?);
            }
            let row = u32::try_from(first_line.len()).map_err(|_| TableError::Csv {
                path: path.to_owned(),
                line,
                reason: "more than 4 billion rows".into(),
            })?;
            index.insert(id.into(), row);
            first_line.push(line);
        }
        Ok(Self {
            path: path.to_owned(),
            index,
            values,
            width: columns.len(),
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.index.len()
    }

    /// Every row: its id and its values at the columns' scales, in no set
    /// order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[i64])> + '_ {
        self.index.iter().map(|(id, &row)| {
            let start = row as usize * self.width;
            (&**id, &self.values[start..start + self.width])
        })
    }

    /// This client's vector for `query` (row-major, `width + 1` per row):
    /// its values for the ids it has, zeros for the others, and the presence
    /// column. Also returns how many query ids it has.
    pub fn vector_for(&self, query: &[String]) -> (Vec<u64>, usize) {
        let stride = self.width + 1;
        let mut out = vec![0u64; query.len() * stride];
        let mut found = 0;
        for (slot, id) in out.chunks_exact_mut(stride).zip(query) {
            if let Some(&row) = self.index.get(id.as_str()) {
                let start = row as usize * self.width;
                for (dst, v) in slot.iter_mut().zip(&self.values[start..start + self.width]) {
                    // Two's complement: negative amounts are their ring
                    // negation, so wrapping sums decode as signed totals.
                    *dst = *v as u64;
                }
                slot[self.width] = 1;
                found += 1;
            }
        }
        (out, found)
    }
}

fn read_value(
    path: &Path,
    record: &csv::StringRecord,
    line: u64,
    col: usize,
    header: &str,
    spec: &ColumnSpec,
) -> Result<i64, TableError> {
    let text = record.get(col).unwrap_or("");
    let value = fixed::parse(text, spec.scale).map_err(|source| TableError::BadNumber {
        path: path.to_owned(),
        line,
        column: col + 1,
        column_name: header.to_owned(),
        text: text.to_owned(),
        source,
    })?;
    if value < spec.min || value > spec.max {
        return Err(TableError::OutOfRange {
            path: path.to_owned(),
            line,
            column: col + 1,
            column_name: header.to_owned(),
            text: text.trim().to_owned(),
            range: format!("[{}, {}]", spec.min_text(), spec.max_text()),
        });
    }
    Ok(value)
}

/// The query: the ids the coordinator asks about, in file order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// The ids.
    pub ids: Vec<String>,
}

impl Query {
    /// Reads the ids of one column; empty and repeated ids are refused.
    pub fn read(path: &Path, column: &str) -> Result<Self, TableError> {
        let (mut reader, headers) = open_csv(path)?;
        let id_col = column_index(path, &headers, column)?;
        let mut seen: HashMap<String, u64> = HashMap::new();
        let mut ids = Vec::new();
        let mut record = csv::StringRecord::new();
        while reader
            .read_record(&mut record)
            .map_err(|e| csv_error(path, e))?
        {
            let line = record.position().map_or(0, csv::Position::line);
            let id = id_cell(path, &record, line, id_col)?.to_owned();
            if let Some(&first_line) = seen.get(&id) {
                return Err(TableError::DuplicateId {
                    path: path.to_owned(),
                    line,
                    column: id_col + 1,
                    first_line,
                    id,
                });
            }
            seen.insert(id.clone(), line);
            ids.push(id);
        }
        Ok(Self { ids })
    }

    /// The digest signed in the query statement.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = FieldHasher::new("sotto/agg/query/v1");
        h.field(&(self.ids.len() as u64).to_be_bytes());
        for id in &self.ids {
            h.field(id.as_bytes());
        }
        h.finish()
    }

    /// The wire form: each id as a 4-byte big-endian length and its bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.ids.iter().map(|i| i.len() + 4).sum());
        for id in &self.ids {
            out.extend_from_slice(&(id.len() as u32).to_be_bytes());
            out.extend_from_slice(id.as_bytes());
        }
        out
    }

    /// Parses the wire form; `None` when it is truncated or not UTF-8.
    pub fn decode(mut bytes: &[u8]) -> Option<Self> {
        let mut ids = Vec::new();
        while !bytes.is_empty() {
            let (len, rest) = bytes.split_first_chunk::<4>()?;
            let len = u32::from_be_bytes(*len) as usize;
            if rest.len() < len {
                return None;
            }
            let (id, rest) = rest.split_at(len);
            ids.push(std::str::from_utf8(id).ok()?.to_owned());
            bytes = rest;
        }
        Some(Self { ids })
    }
}

/// Writes the result CSV `id, <column>_total..., institutions` under a
/// temporary name, to be placed with the step's other outputs.
pub fn stage_result(
    path: &Path,
    query: &Query,
    columns: &[ColumnSpec],
    totals: &[u64],
) -> Result<AtomicFile, sotto_node::NodeError> {
    let mut file = AtomicFile::create(path, Visibility::Private)?;
    {
        let mut writer = csv::Writer::from_writer(file.writer());
        let mut header = vec!["id".to_owned()];
        header.extend(columns.iter().map(|c| format!("{}_total", c.name)));
        header.push("institutions".to_owned());
        let io = |e: csv::Error| sotto_node::NodeError::io(path, "write", e.into());
        writer.write_record(&header).map_err(io)?;
        let stride = columns.len() + 1;
        let mut row = Vec::with_capacity(stride + 1);
        for (id, cells) in query.ids.iter().zip(totals.chunks_exact(stride)) {
            row.clear();
            row.push(id.clone());
            for (c, v) in columns.iter().zip(cells) {
                row.push(fixed::format(*v as i64, c.scale));
            }
            row.push(cells[columns.len()].to_string());
            writer.write_record(&row).map_err(io)?;
        }
        writer
            .flush()
            .map_err(|e| sotto_node::NodeError::io(path, "write", e))?;
    }
    Ok(file)
}

/// Writes `value` as pretty JSON under a temporary name (mode 0600).
pub fn stage_json<T: serde::Serialize>(
    path: &Path,
    value: &T,
) -> Result<AtomicFile, sotto_node::NodeError> {
    let json = serde_json::to_vec_pretty(value).unwrap_or_default();
    let mut file = AtomicFile::create(path, Visibility::Private)?;
    std::io::Write::write_all(file.writer(), &json)
        .map_err(|e| sotto_node::NodeError::io(path, "write", e))?;
    Ok(file)
}
