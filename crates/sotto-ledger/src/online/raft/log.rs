//! The Raft log and vote of one orderer, in its redb file: one table of
//! entries by index (each entry CBOR-encoded, as openraft serializes it),
//! one of metadata (vote, committed and purged log ids). Entries, vote and
//! purge are each one synced redb transaction, finished before openraft is
//! told they are flushed; the committed log id rides along unsynced.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{from_cbor, to_cbor, OrderingRaft, RaftId};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
/// Raft metadata of the log and of the state machine, by key.
pub(super) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";

type StoreResult<T> = Result<T, StorageError<RaftId>>;

/// A failure of the store, as openraft reports it.
pub(super) fn failed(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

/// Reads a JSON value stored under `key` in the metadata table.
pub(super) fn read_meta<T: DeserializeOwned>(
    db: &Database,
    key: &str,
) -> Result<Option<T>, AnyError> {
    let tx = db.begin_read().map_err(failed)?;
    let table = match tx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(failed(e)),
    };
    let Some(bytes) = table.get(key).map_err(failed)? else {
        return Ok(None);
    };
    serde_json::from_slice(bytes.value())
        .map(Some)
        .map_err(|e| failed(format!("raft metadata {key}: {e}")))
}

/// Stores a JSON value under `key` in the metadata table, synced to disk
/// before it returns if `synced` (otherwise with the next synced write).
fn write_meta<T: Serialize>(
    db: &Database,
    key: &str,
    value: &T,
    synced: bool,
) -> Result<(), AnyError> {
    let bytes = serde_json::to_vec(value).map_err(failed)?;
    let mut tx = db.begin_write().map_err(failed)?;
    if !synced {
        tx.set_durability(redb::Durability::None);
    }
    tx.open_table(META)
        .map_err(failed)?
        .insert(key, bytes.as_slice())
        .map_err(failed)?;
    tx.commit().map_err(failed)
}

/// The Raft log of one orderer.
#[derive(Clone)]
pub struct RaftLog {
    db: Arc<Database>,
}

impl RaftLog {
    /// The log in `db` (tables are created on first write).
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    fn last_entry(&self) -> Result<Option<LogId<RaftId>>, AnyError> {
        let tx = self.db.begin_read().map_err(failed)?;
        let table = match tx.open_table(ENTRIES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(failed(e)),
        };
        let Some((_, bytes)) = table.last().map_err(failed)? else {
            return Ok(None);
        };
        let entry: Entry<OrderingRaft> = from_cbor(bytes.value()).map_err(failed)?;
        Ok(Some(entry.log_id))
    }

    /// Removes the entries whose index is in `range`.
    fn remove(&self, range: impl RangeBounds<u64>) -> Result<(), AnyError> {
        let tx = self.db.begin_write().map_err(failed)?;
        {
            let mut table = tx.open_table(ENTRIES).map_err(failed)?;
            table.retain_in(range, |_, _| false).map_err(failed)?;
        }
        tx.commit().map_err(failed)
    }
}

impl RaftLogReader<OrderingRaft> for RaftLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<OrderingRaft>>> {
        let read = || -> Result<Vec<Entry<OrderingRaft>>, AnyError> {
            let tx = self.db.begin_read().map_err(failed)?;
            let table = match tx.open_table(ENTRIES) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(failed(e)),
            };
            let mut entries = Vec::new();
            for item in table.range(range).map_err(failed)? {
                let (_, bytes) = item.map_err(failed)?;
                entries.push(from_cbor(bytes.value()).map_err(failed)?);
            }
            Ok(entries)
        };
        read().map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogStorage<OrderingRaft> for RaftLog {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StoreResult<LogState<OrderingRaft>> {
        let purged: Option<LogId<RaftId>> =
            read_meta(&self.db, PURGED).map_err(StorageIOError::read_logs)?;
        let last = self.last_entry().map_err(StorageIOError::read_logs)?;
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> StoreResult<()> {
        write_meta(&self.db, VOTE, vote, true).map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<RaftId>>> {
        read_meta(&self.db, VOTE).map_err(|e| StorageIOError::read_vote(e).into())
    }

    /// The committed log id only shortens a restart (openraft may apply
    /// up to it before an election), so it is not synced on its own.
    async fn save_committed(&mut self, committed: Option<LogId<RaftId>>) -> StoreResult<()> {
        write_meta(&self.db, COMMITTED, &committed, false)
            .map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<RaftId>>> {
        read_meta::<Option<LogId<RaftId>>>(&self.db, COMMITTED)
            .map(Option::flatten)
            .map_err(|e| StorageIOError::read_logs(e).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<OrderingRaft>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<OrderingRaft>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let write = || -> Result<(), AnyError> {
            let tx = self.db.begin_write().map_err(failed)?;
            {
                let mut table = tx.open_table(ENTRIES).map_err(failed)?;
                for entry in entries {
                    let bytes = to_cbor(&entry).map_err(failed)?;
                    table
                        .insert(entry.log_id.index, bytes.as_slice())
                        .map_err(failed)?;
                }
            }
            tx.commit().map_err(failed)
        };
        match write() {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> StoreResult<()> {
        self.remove(log_id.index..)
            .map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId<RaftId>) -> StoreResult<()> {
        write_meta(&self.db, PURGED, &log_id, true).map_err(StorageIOError::write_logs)?;
        self.remove(..=log_id.index)
            .map_err(|e| StorageIOError::write_logs(e).into())
    }
}
