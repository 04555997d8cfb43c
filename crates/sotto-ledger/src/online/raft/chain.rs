//! The ordering group's state machine: the block chain of one orderer, in
//! the same redb file as its Raft log. Applying a committed entry stores
//! the block it carries if the block extends the chain (checked against
//! block 0 as every business node will check it); an entry that does not
//! is refused alike by every orderer. The last applied log id and the
//! group membership are written in the same transaction as the blocks, so
//! a restart resumes exactly where the chain ends (applying is not synced
//! on its own: after a crash the durable Raft log replays what was lost).
//! A snapshot is the chain itself (every block after block 0).

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, Entry, EntryPayload, LogId, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};
use prost::Message;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use tokio::sync::watch;

use super::log::{failed, read_meta, META};
use super::{AppliedBlock, OrderingRaft, RaftId};
use crate::block::{Block, ChainTip};
use crate::config::LedgerConfig;
use crate::online::OnlineError;

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const APPLIED: &str = "applied";
const MEMBERSHIP: &str = "membership";

type StoreResult<T> = Result<T, StorageError<RaftId>>;
type Membership = StoredMembership<RaftId, openraft::EmptyNode>;

/// One orderer's chain: blocks in redb, the tip, and a watch of the height
/// that block streams follow.
pub struct Chain {
    db: Arc<Database>,
    path: PathBuf,
    config: LedgerConfig,
    genesis: ChainTip,
    tip: Mutex<ChainTip>,
    height: watch::Sender<u64>,
}

impl Chain {
    /// Opens the chain in `db`: stores block 0 in a new store, or checks
    /// every stored block against it.
    pub fn open(
        db: Arc<Database>,
        path: &Path,
        config: LedgerConfig,
        genesis: &Block,
        genesis_tip: ChainTip,
    ) -> Result<Self, OnlineError> {
        let tip = open_blocks(&db, path, &config, genesis, genesis_tip)?;
        let (height, _) = watch::channel(tip.number);
        Ok(Self {
            db,
            path: path.to_owned(),
            config,
            genesis: genesis_tip,
            tip: Mutex::new(tip),
            height,
        })
    }

    /// The last stored block's tip.
    pub fn tip(&self) -> Result<ChainTip, OnlineError> {
        self.tip
            .lock()
            .map(|t| *t)
            .map_err(|_| self.failure("the chain tip lock was poisoned".into()))
    }

    /// A watch of the chain's height.
    pub fn height(&self) -> watch::Receiver<u64> {
        self.height.subscribe()
    }

    /// Block `number`, if stored.
    pub fn block(&self, number: u64) -> Result<Option<Vec<u8>>, OnlineError> {
        let err = |e: &dyn std::fmt::Display| self.failure(e.to_string());
        let tx = self.db.begin_read().map_err(|e| err(&e))?;
        let blocks = tx.open_table(BLOCKS).map_err(|e| err(&e))?;
        let value = blocks.get(number).map_err(|e| err(&e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn failure(&self, reason: String) -> OnlineError {
        OnlineError::Database {
            path: self.path.clone(),
            reason,
        }
    }

    fn publish(&self, tip: ChainTip) -> Result<(), AnyError> {
        *self
            .tip
            .lock()
            .map_err(|_| failed("chain tip lock poisoned"))? = tip;
        self.height.send_replace(tip.number);
        Ok(())
    }
}

/// Stores block 0 in a new store, or checks a stored chain against it.
fn open_blocks(
    db: &Database,
    path: &Path,
    config: &LedgerConfig,
    genesis: &Block,
    tip0: ChainTip,
) -> Result<ChainTip, OnlineError> {
    let err = |reason: String| OnlineError::Database {
        path: path.to_owned(),
        reason,
    };
    let tx = db.begin_write().map_err(|e| err(e.to_string()))?;
    let mut tip = tip0;
    {
        let mut blocks = tx.open_table(BLOCKS).map_err(|e| err(e.to_string()))?;
        let stored_genesis = blocks
            .get(0)
            .map_err(|e| err(e.to_string()))?
            .map(|v| v.value().to_vec());
        match stored_genesis {
            None => {
                blocks
                    .insert(0, genesis.encode_to_vec().as_slice())
                    .map_err(|e| err(e.to_string()))?;
            }
            Some(bytes) if bytes == genesis.encode_to_vec() => {}
            Some(_) => {
                return Err(OnlineError::Misconfigured(format!(
                    "{} holds the chain of another block 0; give this orderer its own home",
                    path.display()
                )))
            }
        }
        let count = blocks.len().map_err(|e| err(e.to_string()))?;
        for number in 1..count {
            let bytes = blocks
                .get(number)
                .map_err(|e| err(e.to_string()))?
                .ok_or_else(|| err(format!("block {number} is missing")))?;
            let block =
                Block::decode(bytes.value()).map_err(|e| err(format!("block {number}: {e}")))?;
            tip = tip
                .check_next(config, &block)
                .map_err(|e| err(format!("stored {e}")))?;
        }
    }
    tx.commit().map_err(|e| err(e.to_string()))?;
    Ok(tip)
}

/// The blocks of a snapshot (each a 4-byte big-endian length and the
/// block's bytes), checked one after the other from block 0's tip; returns
/// the tip they make and each block's bytes.
pub fn snapshot_blocks<'a>(
    config: &LedgerConfig,
    genesis: ChainTip,
    data: &'a [u8],
) -> Result<(ChainTip, Vec<&'a [u8]>), String> {
    let mut tip = genesis;
    let mut blocks = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or("truncated block length")?;
        let len = u32::from_be_bytes(*len) as usize;
        if tail.len() < len {
            return Err(format!("block {} is truncated", tip.number + 1));
        }
        let (bytes, tail) = tail.split_at(len);
        let block = Block::decode(bytes).map_err(|e| format!("block {}: {e}", tip.number + 1))?;
        tip = tip.check_next(config, &block).map_err(|e| e.to_string())?;
        blocks.push(bytes);
        rest = tail;
    }
    Ok((tip, blocks))
}

/// What one entry does to the chain whose tip is `tip`: the number of the
/// block it stores, or why its block is refused.
fn apply_one(
    config: &LedgerConfig,
    tip: &mut ChainTip,
    payload: &EntryPayload<OrderingRaft>,
) -> AppliedBlock {
    let EntryPayload::Normal(proposed) = payload else {
        return AppliedBlock::default();
    };
    let checked = Block::decode(proposed.block.as_slice())
        .map_err(|e| format!("the proposed block does not decode: {e}"))
        .and_then(|block| {
            tip.check_next(config, &block)
                .map_err(|e| format!("the proposed {e}"))
        });
    match checked {
        Ok(next) => {
            *tip = next;
            AppliedBlock {
                number: Some(next.number),
                refused: None,
            }
        }
        Err(reason) => AppliedBlock {
            number: None,
            refused: Some(reason),
        },
    }
}

/// The state machine openraft drives.
pub struct ChainMachine {
    chain: Arc<Chain>,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

/// The last snapshot built or installed (kept in memory: after a restart
/// openraft builds a new one when a follower needs it).
type StoredSnapshot = (SnapshotMeta<RaftId, openraft::EmptyNode>, Vec<u8>);

impl ChainMachine {
    /// The state machine over `chain`.
    pub fn new(chain: Arc<Chain>) -> Self {
        Self {
            chain,
            current: Arc::new(Mutex::new(None)),
        }
    }

    fn apply_all(
        &mut self,
        entries: Vec<Entry<OrderingRaft>>,
    ) -> Result<Vec<AppliedBlock>, AnyError> {
        let chain = &self.chain;
        let mut tip = chain
            .tip
            .lock()
            .map(|t| *t)
            .map_err(|_| failed("poisoned"))?;
        let mut membership: Option<Membership> = None;
        let mut last: Option<LogId<RaftId>> = None;
        let mut replies = Vec::with_capacity(entries.len());
        let mut tx = chain.db.begin_write().map_err(failed)?;
        // Applying needs no fsync of its own: the entries are already
        // durable in the Raft log, and redb either keeps this commit whole
        // or loses it whole in a crash, in which case the last durable
        // applied log id is older and openraft applies the same entries
        // again to the same blocks.
        tx.set_durability(redb::Durability::None);
        {
            let mut blocks = tx.open_table(BLOCKS).map_err(failed)?;
            for entry in &entries {
                last = Some(entry.log_id);
                if let EntryPayload::Membership(m) = &entry.payload {
                    membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                }
                let reply = apply_one(&chain.config, &mut tip, &entry.payload);
                if let (Some(number), EntryPayload::Normal(proposed)) =
                    (reply.number, &entry.payload)
                {
                    blocks
                        .insert(number, proposed.block.as_slice())
                        .map_err(failed)?;
                }
                replies.push(reply);
            }
            let mut meta = tx.open_table(META).map_err(failed)?;
            let applied = serde_json::to_vec(&last).map_err(failed)?;
            meta.insert(APPLIED, applied.as_slice()).map_err(failed)?;
            if let Some(m) = &membership {
                let bytes = serde_json::to_vec(m).map_err(failed)?;
                meta.insert(MEMBERSHIP, bytes.as_slice()).map_err(failed)?;
            }
        }
        tx.commit().map_err(failed)?;
        chain.publish(tip)?;
        Ok(replies)
    }

    fn build(&self) -> Result<Snapshot<OrderingRaft>, AnyError> {
        let db = &self.chain.db;
        let tx = db.begin_read().map_err(failed)?;
        let blocks = tx.open_table(BLOCKS).map_err(failed)?;
        let meta = tx.open_table(META).map_err(failed)?;
        let json = |key: &str| -> Result<Option<Vec<u8>>, AnyError> {
            Ok(meta.get(key).map_err(failed)?.map(|v| v.value().to_vec()))
        };
        let last: Option<LogId<RaftId>> = match json(APPLIED)? {
            Some(b) => serde_json::from_slice(&b).map_err(failed)?,
            None => None,
        };
        let membership: Membership = match json(MEMBERSHIP)? {
            Some(b) => serde_json::from_slice(&b).map_err(failed)?,
            None => Membership::default(),
        };
        let mut data = Vec::new();
        let mut count = 0u64;
        for item in blocks.range(1..).map_err(failed)? {
            let (_, bytes) = item.map_err(failed)?;
            let len = u32::try_from(bytes.value().len()).map_err(failed)?;
            data.extend_from_slice(&len.to_be_bytes());
            data.extend_from_slice(bytes.value());
            count += 1;
        }
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id: format!("{}-{count}", last.map_or(0, |l| l.index)),
        };
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }

    /// Replaces the chain with a snapshot's blocks, each checked against
    /// block 0 first.
    fn install(
        &mut self,
        meta: &SnapshotMeta<RaftId, openraft::EmptyNode>,
        data: &[u8],
    ) -> Result<(), AnyError> {
        let chain = &self.chain;
        let (tip, decoded) = snapshot_blocks(&chain.config, chain.genesis, data)
            .map_err(|e| failed(format!("snapshot: {e}")))?;
        let tx = chain.db.begin_write().map_err(failed)?;
        {
            let mut blocks = tx.open_table(BLOCKS).map_err(failed)?;
            blocks.retain_in(1.., |_, _| false).map_err(failed)?;
            for (number, bytes) in (1..).zip(&decoded) {
                blocks.insert(number, *bytes).map_err(failed)?;
            }
            let mut table = tx.open_table(META).map_err(failed)?;
            let applied = serde_json::to_vec(&meta.last_log_id).map_err(failed)?;
            table.insert(APPLIED, applied.as_slice()).map_err(failed)?;
            let membership = serde_json::to_vec(&meta.last_membership).map_err(failed)?;
            table
                .insert(MEMBERSHIP, membership.as_slice())
                .map_err(failed)?;
        }
        tx.commit().map_err(failed)?;
        chain.publish(tip)?;
        self.keep(meta.clone(), data.to_vec())
    }

    fn keep(
        &self,
        meta: SnapshotMeta<RaftId, openraft::EmptyNode>,
        data: Vec<u8>,
    ) -> Result<(), AnyError> {
        *self.current.lock().map_err(|_| failed("poisoned"))? = Some((meta, data));
        Ok(())
    }
}

impl RaftSnapshotBuilder<OrderingRaft> for ChainMachine {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<OrderingRaft>> {
        let snapshot = self.build().map_err(StorageIOError::read_state_machine)?;
        self.keep(snapshot.meta.clone(), snapshot.snapshot.get_ref().clone())
            .map_err(|e| StorageIOError::write_snapshot(None, e))?;
        Ok(snapshot)
    }
}

impl RaftStateMachine<OrderingRaft> for ChainMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StoreResult<(Option<LogId<RaftId>>, Membership)> {
        let read = || -> Result<(Option<LogId<RaftId>>, Membership), AnyError> {
            let applied = read_meta::<Option<LogId<RaftId>>>(&self.chain.db, APPLIED)?.flatten();
            let membership = read_meta(&self.chain.db, MEMBERSHIP)?.unwrap_or_default();
            Ok((applied, membership))
        };
        read().map_err(|e| StorageIOError::read_state_machine(e).into())
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<AppliedBlock>>
    where
        I: IntoIterator<Item = Entry<OrderingRaft>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        self.apply_all(entries)
            .map_err(|e| StorageIOError::write_state_machine(e).into())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        Self {
            chain: Arc::clone(&self.chain),
            current: Arc::clone(&self.current),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftId, openraft::EmptyNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        self.install(meta, snapshot.get_ref())
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e).into())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<OrderingRaft>>> {
        let current = self
            .current
            .lock()
            .map_err(|_| StorageIOError::read_snapshot(None, failed("poisoned")))?;
        Ok(current.as_ref().map(|(meta, data)| Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(Cursor::new(data.clone())),
        }))
    }
}
