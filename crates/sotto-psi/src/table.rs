//! Reading identifier columns from a CSV file and writing the session's
//! outputs. Keys are normalized (trim by default, optional case folding and
//! Unicode NFKC), joined length-prefixed for composite keys, and
//! de-duplicated; every row keeps a link to its distinct key so the output can
//! list every matched row in input order.

use std::path::{Path, PathBuf};

use sotto_node::files::{AtomicFile, Visibility};
use unicode_normalization::UnicodeNormalization;

use crate::error::TableError;
use crate::keystore::{Deduplicator, KeyStore};
use crate::wire::{KeyParams, ShardParams};

/// Which columns form the key and how they are normalized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// Column names, in key order.
    pub columns: Vec<String>,
    /// Strip leading and trailing whitespace.
    pub trim: bool,
    /// Fold case (Unicode lowercase).
    pub casefold: bool,
    /// Apply Unicode NFKC.
    pub nfkc: bool,
    /// Keep only the keys of one shard.
    pub shard: Option<Shard>,
}

/// One part of a partition of the key space, so that N independent sessions
/// (one per shard, both parties using the same partition) together give the
/// whole intersection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This shard, from 0.
    pub index: u32,
    /// Number of shards.
    pub count: u32,
    /// Salt of the partition hash; both parties must use the same.
    pub salt: String,
}

impl KeySpec {
    /// What the peer must share: column count, normalization, shard.
    pub fn params(&self) -> KeyParams {
        KeyParams {
            columns: u8::try_from(self.columns.len()).unwrap_or(u8::MAX),
            trim: self.trim,
            casefold: self.casefold,
            nfkc: self.nfkc,
            shard: self.shard.as_ref().map(|s| ShardParams {
                index: s.index,
                count: s.count,
                salt_digest: s.salt_digest(),
            }),
        }
    }
}

impl Shard {
    /// SHA-256 of the salt under its own domain: what the peer is told.
    pub fn salt_digest(&self) -> [u8; 32] {
        let mut hasher = sotto_crypto::hash::FieldHasher::new("sotto/psi/shard-salt/v1");
        hasher.field(self.salt.as_bytes());
        hasher.finish()
    }

    /// Whether a normalized key falls in this shard:
    /// `SHA-256("sotto/psi/shard/v1", salt, key) mod count == index`.
    pub fn contains(&self, key: &[u8]) -> bool {
        let mut hasher = sotto_crypto::hash::FieldHasher::new("sotto/psi/shard/v1");
        hasher.field(self.salt.as_bytes()).field(key);
        let digest = hasher.finish();
        let mut prefix = [0u8; 8];
        prefix.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(prefix) % u64::from(self.count.max(1)) == u64::from(self.index)
    }
}

/// What a data row contributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKey {
    /// The index of its key among the distinct keys.
    Key(u32),
    /// Skipped: a key column is empty.
    Empty,
    /// Skipped: its key belongs to another shard.
    OtherShard,
}

/// Counts about one input file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct InputStats {
    /// Data rows (header excluded).
    pub rows: u64,
    /// Rows skipped because a key column is empty.
    pub empty_key_rows: u64,
    /// Rows whose key already occurred on an earlier row.
    pub duplicate_rows: u64,
    /// Rows left to other shards.
    pub other_shard_rows: u64,
    /// Distinct keys.
    pub distinct_keys: u64,
}

/// The keys of one input file.
pub struct KeyTable {
    /// The file.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes.
    pub digest: [u8; 32],
    /// Distinct keys in order of first occurrence.
    pub keys: KeyStore,
    /// For every data row, what it contributes.
    pub row_keys: Vec<RowKey>,
    /// Counts.
    pub stats: InputStats,
    /// Size, modification time and inode of the file when it was read.
    stamp: Option<FileStamp>,
}

/// What identifies one version of a file without reading it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<std::time::SystemTime>,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<Self> {
        let meta = std::fs::metadata(path).ok()?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&meta);
        #[cfg(not(unix))]
        let inode = 0;
        Some(Self {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        })
    }
}

impl KeyTable {
    /// Checks that the file is still the one that was read (same size,
    /// modification time and inode), for a server that read it at start-up.
    pub fn check_unchanged(&self) -> Result<(), TableError> {
        let what = match FileStamp::of(&self.path) {
            None => "deleted",
            Some(now) if Some(now) != self.stamp => "changed",
            Some(_) => return Ok(()),
        };
        Err(TableError::InputReplaced {
            path: self.path.clone(),
            what,
        })
    }
}

pub(crate) fn io_error<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> TableError + 'a {
    move |source| TableError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

pub(crate) fn csv_error(path: &Path, err: csv::Error) -> TableError {
    let line = err.position().map_or(0, csv::Position::line);
    match err.into_kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => TableError::Ragged {
            path: path.to_owned(),
            line: pos.map_or(line, |p| p.line()),
            expected: expected_len,
            found: len,
        },
        csv::ErrorKind::Io(source) => TableError::Io {
            path: path.to_owned(),
            action: "read",
            source,
        },
        other => TableError::Csv {
            path: path.to_owned(),
            line,
            reason: format!("{other:?}"),
        },
    }
}

pub(crate) fn reader<R: std::io::Read>(input: R) -> csv::Reader<R> {
    csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .buffer_capacity(1 << 16)
        .from_reader(input)
}

/// Reads a file through SHA-256, so a file is read once, streaming, and its
/// digest is known at the end.
pub(crate) struct HashingReader {
    file: std::io::BufReader<std::fs::File>,
    hasher: sha2::Sha256,
}

impl HashingReader {
    pub(crate) fn open(path: &Path) -> Result<Self, TableError> {
        let file = std::fs::File::open(path).map_err(io_error(path, "open"))?;
        Ok(Self {
            file: std::io::BufReader::with_capacity(1 << 16, file),
            hasher: sha2::Digest::new(),
        })
    }

    pub(crate) fn digest(self) -> [u8; 32] {
        sha2::Digest::finalize(self.hasher).into()
    }
}

impl std::io::Read for HashingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }
}

/// Header names of the file, checked for UTF-8.
fn headers<R: std::io::Read>(
    path: &Path,
    rdr: &mut csv::Reader<R>,
) -> Result<Vec<String>, TableError> {
    let raw = rdr.byte_headers().map_err(|e| csv_error(path, e))?.clone();
    if raw.is_empty() {
        return Err(TableError::NoHeader {
            path: path.to_owned(),
        });
    }
    let names: Vec<String> = raw
        .iter()
        .enumerate()
        .map(|(i, h)| {
            std::str::from_utf8(h)
                .map(str::to_owned)
                .map_err(|_| TableError::InvalidUtf8 {
                    path: path.to_owned(),
                    line: 1,
                    column: i + 1,
                    column_name: format!("header field {}", i + 1),
                })
        })
        .collect::<Result<_, _>>()?;
    for (second, name) in names.iter().enumerate() {
        if let Some(first) = names[..second].iter().position(|n| n == name) {
            return Err(TableError::DuplicateColumn {
                path: path.to_owned(),
                name: name.clone(),
                first: first + 1,
                second: second + 1,
            });
        }
    }
    Ok(names)
}

pub(crate) fn column_indices(
    path: &Path,
    header: &[String],
    columns: &[String],
) -> Result<Vec<usize>, TableError> {
    columns
        .iter()
        .map(|c| {
            header
                .iter()
                .position(|h| h == c)
                .ok_or_else(|| TableError::MissingColumn {
                    path: path.to_owned(),
                    column: c.clone(),
                    available: header.join(", "),
                })
        })
        .collect()
}

fn normalize(value: &str, spec: &KeySpec) -> String {
    let mut s: String = if spec.nfkc {
        value.nfkc().collect()
    } else {
        value.to_owned()
    };
    if spec.casefold {
        s = s.to_lowercase();
    }
    if spec.trim {
        s = s.trim().to_owned();
    }
    s
}

/// Reads the file and extracts its keys.
pub fn read_keys(path: &Path, spec: &KeySpec) -> Result<KeyTable, TableError> {
    let stamp = FileStamp::of(path);
    let mut rdr = reader(HashingReader::open(path)?);
    let header = headers(path, &mut rdr)?;
    let indices = column_indices(path, &header, &spec.columns)?;
    let mut seen = Deduplicator::new();
    let mut table = KeyTable {
        path: path.to_owned(),
        digest: [0; 32],
        keys: KeyStore::new(),
        row_keys: Vec::new(),
        stats: InputStats::default(),
        stamp,
    };
    let mut record = csv::ByteRecord::new();
    while rdr
        .read_byte_record(&mut record)
        .map_err(|e| csv_error(path, e))?
    {
        table.stats.rows += 1;
        let line = record.position().map_or(0, csv::Position::line);
        let mut key = Vec::new();
        let mut empty = false;
        for (&index, name) in indices.iter().zip(&spec.columns) {
            let raw = record.get(index).unwrap_or_default();
            let text = std::str::from_utf8(raw).map_err(|_| TableError::InvalidUtf8 {
                path: path.to_owned(),
                line,
                column: index + 1,
                column_name: name.clone(),
            })?;
            let value = normalize(text, spec);
            empty |= value.is_empty();
            key.extend_from_slice(&(value.len() as u32).to_be_bytes());
            key.extend_from_slice(value.as_bytes());
        }
        // Check UTF-8 of every other cell too, so bad files fail early.
        for (index, cell) in record.iter().enumerate() {
            if std::str::from_utf8(cell).is_err() {
                return Err(TableError::InvalidUtf8 {
                    path: path.to_owned(),
                    line,
                    column: index + 1,
                    column_name: header[index].clone(),
                });
            }
        }
        if empty {
            table.stats.empty_key_rows += 1;
            table.row_keys.push(RowKey::Empty);
            continue;
        }
        if spec
            .shard
            .as_ref()
            .is_some_and(|shard| !shard.contains(&key))
        {
            table.stats.other_shard_rows += 1;
            table.row_keys.push(RowKey::OtherShard);
            continue;
        }
        let (index, new) = seen.insert(&key).ok_or_else(|| TableError::Csv {
            path: path.to_owned(),
            line,
            reason: "more than 2^32 distinct keys; split the input with --shard".into(),
        })?;
        if !new {
            table.stats.duplicate_rows += 1;
        }
        table.row_keys.push(RowKey::Key(index));
    }
    table.keys = seen.finish();
    table.row_keys.shrink_to_fit();
    table.stats.distinct_keys = table.keys.len() as u64;
    table.digest = rdr.into_inner().digest();
    Ok(table)
}

/// Splits a stored key back into its normalized column values.
pub fn key_columns(key: &[u8]) -> Vec<String> {
    key_parts(key)
        .map(|part| String::from_utf8_lossy(part).into_owned())
        .collect()
}

/// The column values of a stored key (each length-prefixed), in order; a
/// truncated last value is cut at the end of the key.
pub fn key_parts(key: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    let mut rest = key;
    std::iter::from_fn(move || {
        let (len, tail) = rest.split_first_chunk::<4>()?;
        let len = (u32::from_be_bytes(*len) as usize).min(tail.len());
        let (part, tail) = tail.split_at(len);
        rest = tail;
        Some(part)
    })
}

/// What the output file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// Every row whose key matched, original columns, input order.
    Rows,
    /// Each matched distinct key once (normalized key columns).
    KeysOnly,
    /// Every row, plus a column with `true` or `false`.
    Flag(String),
}

/// The output of a finishing party, written under a temporary name and
/// placed together with the step's other files ([`sotto_node::files::commit_all`]).
pub struct StagedMatches {
    /// Rows whose key matched.
    pub rows: u64,
    /// The output file, if one was asked for, not yet in place.
    pub file: Option<AtomicFile>,
}

/// Counts the rows whose key is among `matched_keys` (indices into
/// `table.keys`) and, if `output` is given, writes it under a temporary
/// name (mode 0600: it holds matched customers).
pub fn stage_matches(
    table: &KeyTable,
    spec: &KeySpec,
    matched_keys: &[u32],
    output: Option<&(PathBuf, OutputKind)>,
) -> Result<StagedMatches, TableError> {
    let mut matched = vec![false; table.keys.len()];
    for &k in matched_keys {
        if let Some(slot) = matched.get_mut(k as usize) {
            *slot = true;
        }
    }
    let rows = table
        .row_keys
        .iter()
        .filter(|k| matches!(k, RowKey::Key(k) if matched[*k as usize]))
        .count() as u64;
    let file = match output {
        Some((out, kind)) => Some(stage_output(table, spec, &matched, kind, out)?.1),
        None => None,
    };
    Ok(StagedMatches { rows, file })
}

/// Writes the output for `table` given which distinct keys matched, under
/// a temporary name. Returns the number of rows written (excluding the
/// header) and the file to commit.
pub fn stage_output(
    table: &KeyTable,
    spec: &KeySpec,
    matched: &[bool],
    kind: &OutputKind,
    out: &Path,
) -> Result<(u64, AtomicFile), TableError> {
    let mut file = AtomicFile::create(out, Visibility::Private)?;
    let written = {
        let mut wtr = csv::Writer::from_writer(file.writer());
        let written = match kind {
            OutputKind::KeysOnly => {
                wtr.write_record(&spec.columns)
                    .map_err(|e| csv_error(out, e))?;
                let mut n = 0;
                for (key, _) in table.keys.iter().zip(matched).filter(|(_, m)| **m) {
                    wtr.write_record(key_columns(key))
                        .map_err(|e| csv_error(out, e))?;
                    n += 1;
                }
                n
            }
            OutputKind::Rows | OutputKind::Flag(_) => copy_rows(table, matched, kind, &mut wtr)?,
        };
        wtr.flush().map_err(io_error(out, "write"))?;
        written
    };
    Ok((written, file))
}

fn copy_rows<W: std::io::Write>(
    table: &KeyTable,
    matched: &[bool],
    kind: &OutputKind,
    wtr: &mut csv::Writer<W>,
) -> Result<u64, TableError> {
    let path = &table.path;
    let mut rdr = reader(HashingReader::open(path)?);
    let mut header = rdr.byte_headers().map_err(|e| csv_error(path, e))?.clone();
    if let OutputKind::Flag(name) = kind {
        if header.iter().any(|h| h == name.as_bytes()) {
            return Err(TableError::FlagColumnExists {
                path: path.clone(),
                column: name.clone(),
            });
        }
        header.push_field(name.as_bytes());
    }
    wtr.write_byte_record(&header)
        .map_err(|e| csv_error(path, e))?;
    let mut record = csv::ByteRecord::new();
    let mut written = 0;
    for row_key in &table.row_keys {
        if !rdr
            .read_byte_record(&mut record)
            .map_err(|e| csv_error(path, e))?
        {
            return Err(TableError::Changed { path: path.clone() });
        }
        let is_match = match row_key {
            RowKey::Key(k) => matched.get(*k as usize).copied().unwrap_or(false),
            RowKey::Empty => false,
            RowKey::OtherShard => continue,
        };
        match kind {
            OutputKind::Flag(_) => {
                record.push_field(if is_match { b"true" } else { b"false" });
            }
            _ if !is_match => continue,
            _ => {}
        }
        wtr.write_byte_record(&record)
            .map_err(|e| csv_error(path, e))?;
        written += 1;
    }
    // The file must end here and hash as it did when the keys were read;
    // otherwise the output (not yet committed) is discarded.
    let extra_row = rdr
        .read_byte_record(&mut record)
        .map_err(|e| csv_error(path, e))?;
    if extra_row || rdr.into_inner().digest() != table.digest {
        return Err(TableError::Changed { path: path.clone() });
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(columns: &[&str]) -> KeySpec {
        KeySpec {
            columns: columns.iter().map(|s| s.to_string()).collect(),
            trim: true,
            casefold: false,
            nfkc: false,
            shard: None,
        }
    }

    #[test]
    fn shards_partition_the_keys() {
        let dir = tempfile::tempdir().expect("tmp");
        let body: String = std::iter::once("id\n".to_owned())
            .chain((0..500).map(|i| format!("k{i}\n")))
            .collect();
        let p = write(dir.path(), "a.csv", body.as_bytes());
        let mut seen = std::collections::HashSet::new();
        for index in 0..3 {
            let mut s = spec(&["id"]);
            s.shard = Some(Shard {
                index,
                count: 3,
                salt: "x".into(),
            });
            let t = read_keys(&p, &s).expect("read");
            assert!(t.keys.len() > 100, "shards are balanced enough");
            assert_eq!(t.stats.other_shard_rows + t.stats.distinct_keys, 500);
            for k in t.keys.iter() {
                assert!(seen.insert(k.to_vec()), "a key in two shards");
            }
        }
        assert_eq!(seen.len(), 500);
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).expect("write");
        p
    }

    #[test]
    fn keys_are_normalized_deduplicated_and_linked_to_rows() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(dir.path(), "a.csv", b"id,name\n a ,x\nb,y\na,z\n,empty\n");
        let t = read_keys(&p, &spec(&["id"])).expect("read");
        assert_eq!(t.keys.len(), 2);
        assert_eq!(
            t.row_keys,
            vec![
                RowKey::Key(0),
                RowKey::Key(1),
                RowKey::Key(0),
                RowKey::Empty
            ]
        );
        assert_eq!(
            t.stats,
            InputStats {
                rows: 4,
                empty_key_rows: 1,
                duplicate_rows: 1,
                other_shard_rows: 0,
                distinct_keys: 2
            }
        );
        let out = dir.path().join("out.csv");
        let (_, file) = stage_output(&t, &spec(&["id"]), &[true, false], &OutputKind::Rows, &out)
            .expect("write");
        file.commit().expect("commit");
        assert_eq!(
            std::fs::read_to_string(&out).expect("read"),
            "id,name\n a ,x\na,z\n"
        );
        let (_, file) = stage_output(
            &t,
            &spec(&["id"]),
            &[true, false],
            &OutputKind::Flag("hit".into()),
            &out,
        )
        .expect("w");
        file.commit().expect("commit");
        assert_eq!(
            std::fs::read_to_string(&out).expect("read"),
            "id,name,hit\n a ,x,true\nb,y,false\na,z,true\n,empty,false\n"
        );
    }

    #[test]
    fn composite_keys_cannot_collide_by_concatenation() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(dir.path(), "a.csv", b"x,y\nab,c\na,bc\n");
        let t = read_keys(&p, &spec(&["x", "y"])).expect("read");
        assert_eq!(t.keys.len(), 2);
        assert_eq!(key_columns(t.keys.get(0)), vec!["ab", "c"]);
    }

    #[test]
    fn casefold_and_nfkc_merge_variants() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(
            dir.path(),
            "a.csv",
            "e\nAlice@X.org\nalice@x.org\n\u{FF21}lice@x.org\n".as_bytes(),
        );
        let mut s = spec(&["e"]);
        s.casefold = true;
        s.nfkc = true;
        assert_eq!(read_keys(&p, &s).expect("read").keys.len(), 1);
    }

    #[test]
    fn bad_inputs_name_file_line_and_column() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = write(dir.path(), "bad.csv", b"id,v\nok,1\n\xff\xfe,2\n");
        let e = read_keys(&p, &spec(&["id"]))
            .err()
            .expect("utf8")
            .to_string();
        assert!(
            e.contains("bad.csv:3:1") && e.contains("invalid UTF-8"),
            "{e}"
        );
        let p = write(dir.path(), "ragged.csv", b"id,v\nok,1\nshort\n");
        let e = read_keys(&p, &spec(&["id"])).err().expect("ragged");
        assert!(
            matches!(
                e,
                TableError::Ragged {
                    line: 3,
                    expected: 2,
                    found: 1,
                    ..
                }
            ),
            "{e}"
        );
        let e = read_keys(&p, &spec(&["email"]))
            .err()
            .expect("missing")
            .to_string();
        assert!(
            e.contains("no column named \"email\"") && e.contains("id, v"),
            "{e}"
        );
        let p = write(dir.path(), "empty.csv", b"");
        assert!(matches!(
            read_keys(&p, &spec(&["id"])),
            Err(TableError::NoHeader { .. })
        ));
    }
}
