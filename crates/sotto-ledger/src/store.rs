//! A business node's chain and world state in redb: every block as the
//! orderer cut it, its validation codes and the commit hash after it, and
//! the state it leaves (key versions, the values this node keeps: sealed,
//! or in clear on a plaintext-mode node; the transaction ids seen), written in one transaction per block. At
//! start-up the node replays its stored blocks through validation and
//! compares the result with the stored codes, commit hashes and state, so
//! a tampered stored block or state is refused before the node serves.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use prost::Message;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use sotto_crypto::identity::IdentityKey;
use sotto_crypto::ids::TxId;

use crate::block::{Block, BlockError};
use crate::code::ValidationCode;
use crate::memory::{MemoryLedger, Prepared};

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const CODES: TableDefinition<u64, &[u8]> = TableDefinition::new("codes");
const COMMITS: TableDefinition<u64, &[u8]> = TableDefinition::new("commits");
const VERSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("versions");
const VALUES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("values");
const TX_IDS: TableDefinition<&[u8], ()> = TableDefinition::new("tx_ids");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// Why the store refused to open or to take a block.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb could not open, read or write the file.
    #[error("ledger store {path}: {reason}")]
    Database {
        /// The file.
        path: PathBuf,
        /// What redb said.
        reason: String,
    },
    /// The file already holds a ledger (create never overwrites).
    #[error("ledger store {0} already exists; start the node on it instead of creating it again")]
    Exists(PathBuf),
    /// The block does not extend the chain.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// Stored data does not match what replaying the stored blocks gives.
    #[error("ledger store {path}: {what} was altered on disk ({detail}); restore the node from a copy or another business node")]
    Tampered {
        /// The file.
        path: PathBuf,
        /// What does not match.
        what: String,
        /// Where.
        detail: String,
    },
}

/// One business node's persistent ledger.
pub struct BusinessStore {
    db: Database,
    path: PathBuf,
    ledger: MemoryLedger,
}

fn db_error(path: &Path) -> impl Fn(String) -> StoreError + '_ {
    move |reason| StoreError::Database {
        path: path.to_owned(),
        reason,
    }
}

impl BusinessStore {
    /// Creates the store of business node `me` from block 0 (a
    /// plaintext-mode node needs its identity key, see
    /// [`MemoryLedger::open`]).
    pub fn create(
        path: &Path,
        genesis: &Block,
        me: &str,
        identity: Option<&IdentityKey>,
    ) -> Result<Self, StoreError> {
        if path.exists() {
            return Err(StoreError::Exists(path.to_owned()));
        }
        let ledger = MemoryLedger::open(genesis, me, identity)?;
        let err = db_error(path);
        let db = Database::create(path).map_err(|e| err(e.to_string()))?;
        match Self::write_genesis(&db, path, genesis, me) {
            Ok(()) => Ok(Self {
                db,
                path: path.to_owned(),
                ledger,
            }),
            Err(e) => {
                // A store without block 0 would be refused at every later
                // start; leave none behind.
                drop(db);
                let _ = std::fs::remove_file(path);
                Err(e)
            }
        }
    }

    fn write_genesis(
        db: &Database,
        path: &Path,
        genesis: &Block,
        me: &str,
    ) -> Result<(), StoreError> {
        let err = db_error(path);
        let tx = db.begin_write().map_err(|e| err(e.to_string()))?;
        {
            let mut blocks = tx.open_table(BLOCKS).map_err(|e| err(e.to_string()))?;
            blocks
                .insert(0, genesis.encode_to_vec().as_slice())
                .map_err(|e| err(e.to_string()))?;
            let mut meta = tx.open_table(META).map_err(|e| err(e.to_string()))?;
            meta.insert("me", me.as_bytes())
                .map_err(|e| err(e.to_string()))?;
            for table in [CODES, COMMITS] {
                tx.open_table(table).map_err(|e| err(e.to_string()))?;
            }
            for table in [VERSIONS, VALUES] {
                tx.open_table(table).map_err(|e| err(e.to_string()))?;
            }
            tx.open_table(TX_IDS).map_err(|e| err(e.to_string()))?;
        }
        tx.commit().map_err(|e| err(e.to_string()))
    }

    /// Opens the store, replays every stored block and checks the stored
    /// codes, commit hashes and state against the replay.
    pub fn open(path: &Path, identity: Option<&IdentityKey>) -> Result<Self, StoreError> {
        let err = db_error(path);
        let db = Database::open(path).map_err(|e| err(e.to_string()))?;
        let ledger = replay(&db, path, identity)?;
        Ok(Self {
            db,
            path: path.to_owned(),
            ledger,
        })
    }

    /// Validates and stores the next block (one redb transaction), then
    /// applies it in memory; returns its codes.
    pub fn append(&mut self, block: &Block) -> Result<Vec<ValidationCode>, StoreError> {
        let prepared = self.prepare(block)?;
        self.persist(block, &prepared)?;
        let codes = prepared.validated.codes.clone();
        self.apply(prepared);
        Ok(codes)
    }

    /// Checks and validates the next block against the state in memory.
    pub fn prepare(&self, block: &Block) -> Result<Prepared, StoreError> {
        Ok(self.ledger.prepare(block)?)
    }

    /// Writes a prepared block and its state changes in one redb
    /// transaction; readers of the in-memory state are not held up.
    pub fn persist(&self, block: &Block, prepared: &Prepared) -> Result<(), StoreError> {
        self.write(block, prepared)
    }

    /// Applies a persisted block in memory.
    pub fn apply(&mut self, prepared: Prepared) {
        self.ledger.apply(prepared);
    }

    fn write(&self, block: &Block, prepared: &Prepared) -> Result<(), StoreError> {
        let err = db_error(&self.path);
        let number = prepared.tip.number;
        let validated = &prepared.validated;
        let tx = self.db.begin_write().map_err(|e| err(e.to_string()))?;
        {
            let mut blocks = tx.open_table(BLOCKS).map_err(|e| err(e.to_string()))?;
            blocks
                .insert(number, block.encode_to_vec().as_slice())
                .map_err(|e| err(e.to_string()))?;
            let mut stored_codes = tx.open_table(CODES).map_err(|e| err(e.to_string()))?;
            stored_codes
                .insert(number, encode_codes(&validated.codes).as_slice())
                .map_err(|e| err(e.to_string()))?;
            let mut commits = tx.open_table(COMMITS).map_err(|e| err(e.to_string()))?;
            commits
                .insert(number, validated.commit_hash.as_slice())
                .map_err(|e| err(e.to_string()))?;
            let mut versions = tx.open_table(VERSIONS).map_err(|e| err(e.to_string()))?;
            let mut values = tx.open_table(VALUES).map_err(|e| err(e.to_string()))?;
            for write in &validated.writes {
                let key = write.key.as_slice();
                match (&write.value, write.addressed) {
                    (Some(value), addressed) => {
                        let version = encode_version(write.version.block, write.version.tx);
                        versions
                            .insert(key, version.as_slice())
                            .map_err(|e| err(e.to_string()))?;
                        if addressed {
                            values
                                .insert(key, value.as_slice())
                                .map_err(|e| err(e.to_string()))?;
                        } else {
                            values.remove(key).map_err(|e| err(e.to_string()))?;
                        }
                    }
                    (None, _) => {
                        versions.remove(key).map_err(|e| err(e.to_string()))?;
                        values.remove(key).map_err(|e| err(e.to_string()))?;
                    }
                }
            }
            let mut tx_ids = tx.open_table(TX_IDS).map_err(|e| err(e.to_string()))?;
            for id in &validated.tx_ids {
                tx_ids
                    .insert(id.as_bytes().as_slice(), ())
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        tx.commit().map_err(|e| err(e.to_string()))
    }

    /// The ledger as validated.
    pub fn ledger(&self) -> &MemoryLedger {
        &self.ledger
    }

    /// Stored block `number`.
    pub fn block(&self, number: u64) -> Result<Option<Block>, StoreError> {
        let err = db_error(&self.path);
        let tx = self.db.begin_read().map_err(|e| err(e.to_string()))?;
        let blocks = tx.open_table(BLOCKS).map_err(|e| err(e.to_string()))?;
        let Some(bytes) = blocks.get(number).map_err(|e| err(e.to_string()))? else {
            return Ok(None);
        };
        Block::decode(bytes.value())
            .map(Some)
            .map_err(|e| StoreError::Tampered {
                path: self.path.clone(),
                what: format!("block {number}"),
                detail: e.to_string(),
            })
    }
}

fn encode_codes(codes: &[ValidationCode]) -> Vec<u8> {
    codes
        .iter()
        .flat_map(|c| c.number().to_be_bytes())
        .collect()
}

fn encode_version(block: u64, tx: u32) -> Vec<u8> {
    let mut out = block.to_be_bytes().to_vec();
    out.extend_from_slice(&tx.to_be_bytes());
    out
}

/// Replays the stored blocks and compares everything stored with the replay.
fn replay(
    db: &Database,
    path: &Path,
    identity: Option<&IdentityKey>,
) -> Result<MemoryLedger, StoreError> {
    let err = db_error(path);
    let tampered = |what: String, detail: String| StoreError::Tampered {
        path: path.to_owned(),
        what,
        detail,
    };
    let tx = db.begin_read().map_err(|e| err(e.to_string()))?;
    let meta = tx.open_table(META).map_err(|e| err(e.to_string()))?;
    let me = meta
        .get("me")
        .map_err(|e| err(e.to_string()))?
        .map(|v| String::from_utf8_lossy(v.value()).into_owned())
        .ok_or_else(|| tampered("the node name".into(), "missing".into()))?;
    let blocks = tx.open_table(BLOCKS).map_err(|e| err(e.to_string()))?;
    let codes = tx.open_table(CODES).map_err(|e| err(e.to_string()))?;
    let commits = tx.open_table(COMMITS).map_err(|e| err(e.to_string()))?;
    let mut ledger: Option<MemoryLedger> = None;
    let count = blocks.len().map_err(|e| err(e.to_string()))?;
    for number in 0..count {
        let bytes = blocks
            .get(number)
            .map_err(|e| err(e.to_string()))?
            .ok_or_else(|| tampered(format!("block {number}"), "missing".into()))?;
        let block = Block::decode(bytes.value())
            .map_err(|e| tampered(format!("block {number}"), e.to_string()))?;
        let Some(current) = ledger.as_mut() else {
            ledger = Some(
                // Block 0 that still opens means the node, not the file, is
                // at fault (a plaintext-mode node without its key).
                MemoryLedger::open(&block, &me, identity).map_err(|e| {
                    match block.open_genesis("block 0") {
                        Ok(_) => StoreError::Block(e),
                        Err(_) => tampered("block 0".into(), e.to_string()),
                    }
                })?,
            );
            continue;
        };
        let replayed = current
            .append(&block)
            .map_err(|e| tampered(format!("block {number}"), e.to_string()))?;
        let stored = codes
            .get(number)
            .map_err(|e| err(e.to_string()))?
            .map(|v| v.value().to_vec());
        if stored.as_deref() != Some(encode_codes(replayed).as_slice()) {
            return Err(tampered(
                format!("the validation codes of block {number}"),
                "they differ from a replay".into(),
            ));
        }
        let commit = commits
            .get(number)
            .map_err(|e| err(e.to_string()))?
            .map(|v| v.value().to_vec());
        if commit.as_deref() != Some(current.commit_hash().as_slice()) {
            return Err(tampered(
                format!("the commit hash after block {number}"),
                "it differs from a replay".into(),
            ));
        }
    }
    let ledger = ledger.ok_or_else(|| tampered("block 0".into(), "missing".into()))?;
    check_state(&tx, &ledger, path)?;
    Ok(ledger)
}

/// Compares the stored state tables with the replayed ledger.
fn check_state(
    tx: &redb::ReadTransaction,
    ledger: &MemoryLedger,
    path: &Path,
) -> Result<(), StoreError> {
    let err = db_error(path);
    let tampered = |what: &str, key: &[u8]| StoreError::Tampered {
        path: path.to_owned(),
        what: what.to_owned(),
        detail: format!("key {}", hex::encode(key)),
    };
    let versions = tx.open_table(VERSIONS).map_err(|e| err(e.to_string()))?;
    let mut stored_versions = BTreeMap::new();
    for entry in versions.iter().map_err(|e| err(e.to_string()))? {
        let (key, value) = entry.map_err(|e| err(e.to_string()))?;
        stored_versions.insert(key.value().to_vec(), value.value().to_vec());
    }
    let expected: BTreeMap<Vec<u8>, Vec<u8>> = ledger
        .versions()
        .iter()
        .map(|(k, v)| (k.to_vec(), encode_version(v.block, v.tx)))
        .collect();
    if let Some(key) = differing(&stored_versions, &expected) {
        return Err(tampered("a key version", &key));
    }
    let values = tx.open_table(VALUES).map_err(|e| err(e.to_string()))?;
    let mut stored_values = BTreeMap::new();
    for entry in values.iter().map_err(|e| err(e.to_string()))? {
        let (key, value) = entry.map_err(|e| err(e.to_string()))?;
        stored_values.insert(key.value().to_vec(), value.value().to_vec());
    }
    let expected: BTreeMap<Vec<u8>, Vec<u8>> = ledger
        .versions()
        .keys()
        .filter_map(|k| ledger.value(k).map(|v| (k.to_vec(), v.to_vec())))
        .collect();
    if let Some(key) = differing(&stored_values, &expected) {
        return Err(tampered("a stored value", &key));
    }
    let tx_ids = tx.open_table(TX_IDS).map_err(|e| err(e.to_string()))?;
    let mut stored_ids = HashSet::new();
    for entry in tx_ids.iter().map_err(|e| err(e.to_string()))? {
        let (key, _) = entry.map_err(|e| err(e.to_string()))?;
        let id: [u8; 16] = key
            .value()
            .try_into()
            .map_err(|_| tampered("a transaction id", key.value()))?;
        stored_ids.insert(TxId::from_bytes(id));
    }
    if &stored_ids != ledger.tx_ids() {
        return Err(StoreError::Tampered {
            path: path.to_owned(),
            what: "the set of transaction ids".into(),
            detail: format!(
                "{} stored, {} replayed",
                stored_ids.len(),
                ledger.tx_ids().len()
            ),
        });
    }
    Ok(())
}

/// The first key whose entry differs between two maps.
fn differing(a: &BTreeMap<Vec<u8>, Vec<u8>>, b: &BTreeMap<Vec<u8>, Vec<u8>>) -> Option<Vec<u8>> {
    a.iter()
        .find(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, _)| k.clone())
        .or_else(|| b.keys().find(|k| !a.contains_key(*k)).cloned())
}
