//! The ordering group's Raft storage in redb: openraft's own storage test
//! suite over the log and the chain state machine, and what applying an
//! entry does to the chain — a block that extends it is stored, one that
//! does not is refused alike on every orderer, a restart resumes at the
//! last applied entry, and a snapshot is installed only if its every block
//! extends block 0's chain.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::io::Cursor;
use std::sync::Arc;

use common::World;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder, StorageError};
use prost::Message;
use redb::Database;
use sotto_crypto::identity::IdentityKey;
use sotto_ledger::block::{Block, ChainTip};
use sotto_ledger::online::raft::chain::{Chain, ChainMachine};
use sotto_ledger::online::raft::log::RaftLog;
use sotto_ledger::online::raft::{AppliedBlock, OrderingRaft, ProposedBlock};

/// A fresh store in a temporary directory, for block 0 of `World`.
struct Fresh;

fn open(dir: &std::path::Path, world: &World) -> (RaftLog, ChainMachine, Arc<Chain>) {
    let path = dir.join("ledger-orderer.redb");
    let db = Arc::new(Database::create(&path).expect("database"));
    let (_, tip0) = world.genesis.open_genesis("block 0").expect("block 0");
    let chain = Arc::new(
        Chain::open(
            Arc::clone(&db),
            &path,
            world.config.clone(),
            &world.genesis,
            tip0,
        )
        .expect("chain"),
    );
    (
        RaftLog::new(db),
        ChainMachine::new(Arc::clone(&chain)),
        chain,
    )
}

impl StoreBuilder<OrderingRaft, RaftLog, ChainMachine, tempfile::TempDir> for Fresh {
    async fn build(&self) -> Result<(tempfile::TempDir, RaftLog, ChainMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (log, machine, _) = open(dir.path(), &World::new());
        Ok((dir, log, machine))
    }
}

#[test]
fn the_redb_store_passes_openraft_storage_suite() {
    Suite::test_all(Fresh).expect("openraft's storage suite");
}

fn entry(index: u64, block: &Block) -> Entry<OrderingRaft> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(ProposedBlock {
            block: block.encode_to_vec(),
        }),
    }
}

/// Block `number`-like blocks on `tip`, cut by orderer `o1` with `key`.
fn cut_on(tip: &ChainTip, key: &IdentityKey, n: u8) -> Block {
    Block::cut(tip, "o1", key, common::START_MS + 1000, vec![vec![n]])
}

/// Blocks 1 and 2 of o1 on block 0, with the tips they make.
struct Chained {
    tip0: ChainTip,
    first: Block,
    tip1: ChainTip,
    second: Block,
}

fn chained(world: &World) -> Chained {
    let (_, tip0) = world.genesis.open_genesis("block 0").unwrap();
    let o1 = &world.consortium.orderers[0];
    let first = cut_on(&tip0, o1, 1);
    let tip1 = tip0.check_next(&world.config, &first).unwrap();
    let second = cut_on(&tip1, o1, 2);
    Chained {
        tip0,
        first,
        tip1,
        second,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

#[test]
fn a_block_that_does_not_extend_the_chain_is_refused_alike_on_every_orderer() {
    let world = World::new();
    let Chained {
        tip0,
        first,
        tip1,
        second,
    } = chained(&world);
    // A former leader's block on the same tip as `first`, and a block
    // signed with a key that is no orderer's.
    let stale = cut_on(&tip0, &world.consortium.orderers[0], 3);
    let forged = cut_on(&tip1, &world.consortium.clients[0], 4);
    let entries = [
        entry(1, &first),
        entry(2, &stale),
        entry(3, &forged),
        entry(4, &second),
    ];
    let replies: Vec<Vec<AppliedBlock>> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let (_, mut machine, chain) = open(dir.path(), &world);
            let replies = runtime()
                .block_on(machine.apply(entries.clone()))
                .expect("applied");
            assert_eq!(chain.tip().unwrap().number, 2);
            assert_eq!(chain.block(2).unwrap(), Some(second.encode_to_vec()));
            replies
        })
        .collect();
    assert_eq!(replies[0], replies[1], "every orderer decides alike");
    let r = &replies[0];
    assert_eq!((r[0].number, r[3].number), (Some(1), Some(2)));
    assert_eq!(r[1].number, None);
    assert_eq!(
        r[1].refused.as_deref(),
        Some("the proposed block 1 arrived where block 2 was expected")
    );
    assert_eq!(r[2].number, None);
    assert_eq!(
        r[2].refused.as_deref(),
        Some("the proposed block 2: not signed by orderer o1 of this ledger")
    );
}

#[test]
fn a_restart_resumes_at_the_last_applied_entry() {
    let world = World::new();
    let (_, tip0) = world.genesis.open_genesis("block 0").unwrap();
    let first = cut_on(&tip0, &world.consortium.orderers[0], 1);
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, mut machine, _) = open(dir.path(), &world);
        let rt = runtime();
        rt.block_on(machine.apply([entry(1, &first)])).unwrap();
        rt.block_on(log.save_committed(Some(LogId::new(CommittedLeaderId::new(1, 1), 1))))
            .unwrap();
    }
    let (mut log, mut machine, chain) = open(dir.path(), &world);
    let rt = runtime();
    let (applied, _) = rt.block_on(machine.applied_state()).unwrap();
    assert_eq!(applied.map(|l| l.index), Some(1));
    assert_eq!(chain.tip().unwrap().number, 1);
    assert_eq!(
        rt.block_on(log.read_committed()).unwrap().map(|l| l.index),
        Some(1)
    );
}

#[test]
fn a_snapshot_is_installed_only_if_every_block_extends_the_chain() {
    let world = World::new();
    let Chained { first, second, .. } = chained(&world);
    let rt = runtime();
    let source = tempfile::tempdir().unwrap();
    let (_, mut machine, _) = open(source.path(), &world);
    rt.block_on(machine.apply([entry(1, &first), entry(2, &second)]))
        .unwrap();
    let mut builder = rt.block_on(machine.get_snapshot_builder());
    let snapshot = rt.block_on(builder.build_snapshot()).unwrap();
    let data = snapshot.snapshot.get_ref().clone();

    let target = tempfile::tempdir().unwrap();
    let (_, mut replica, chain) = open(target.path(), &world);
    let mut tampered = data.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let refused =
        rt.block_on(replica.install_snapshot(&snapshot.meta, Box::new(Cursor::new(tampered))));
    let message = refused.expect_err("a tampered block").to_string();
    assert!(message.contains("snapshot"), "{message}");
    assert_eq!(chain.tip().unwrap().number, 0, "nothing installed");

    rt.block_on(replica.install_snapshot(&snapshot.meta, Box::new(Cursor::new(data))))
        .expect("the chain's own snapshot");
    assert_eq!(chain.tip().unwrap().number, 2);
    assert_eq!(chain.block(2).unwrap(), Some(second.encode_to_vec()));
    let (applied, _) = rt.block_on(replica.applied_state()).unwrap();
    assert_eq!(applied, snapshot.meta.last_log_id);
}
