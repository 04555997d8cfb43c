//! The business node's redb store: blocks and state survive a restart and
//! equal the in-memory reference, creating never overwrites, and every kind
//! of stored data altered on disk is refused at start-up, naming what.

#![allow(clippy::expect_used)]

mod common;

use common::{key, TxSpec, World, MEASUREMENT};
use redb::{Database, ReadableTable, TableDefinition};
use sotto_ledger::memory::MemoryLedger;
use sotto_ledger::store::{BusinessStore, StoreError};
use sotto_ledger::ValidationCode::*;

/// A store of b1 with three blocks (membership, two invokes, a conflict),
/// the reference ledger that took the same blocks, and the world.
fn filled(path: &std::path::Path) -> (World, MemoryLedger) {
    let mut world = World::new();
    let mut store = BusinessStore::create(path, &world.genesis, "b1", None).expect("create");
    let mut reference = world.node("b1");
    let mut b2_only = TxSpec::credit(3, vec![], vec![(key(3), vec![3])]);
    b2_only.targets = vec!["b2".into()];
    let blocks = vec![
        vec![world.membership(1, &[0, 1], &MEASUREMENT)],
        vec![
            world.invoke(&TxSpec::credit(
                1,
                vec![(key(1), None)],
                vec![(key(1), vec![1])],
            )),
            world.invoke(&TxSpec::credit(
                2,
                vec![(key(1), None)],
                vec![(key(1), vec![2])],
            )),
        ],
        vec![
            world.invoke(&b2_only),
            world.invoke(&TxSpec::credit(4, vec![], vec![(key(2), vec![4])])),
        ],
    ];
    let expected = [
        vec![Valid],
        vec![Valid, MvccReadConflict],
        vec![NotAddressed, Valid],
    ];
    for (txs, codes) in blocks.into_iter().zip(expected) {
        let block = world.cut(txs);
        assert_eq!(store.append(&block).expect("stored"), codes);
        reference.append(&block).expect("reference");
    }
    (world, reference)
}

#[test]
fn a_restarted_node_has_exactly_the_state_it_validated_and_goes_on() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ledger.redb");
    let (mut world, mut reference) = filled(&path);
    let mut store = BusinessStore::open(&path, None).expect("reopen");
    assert_eq!(store.ledger().tip(), reference.tip());
    assert_eq!(store.ledger().commit_hash(), reference.commit_hash());
    assert_eq!(store.ledger().versions(), reference.versions());
    assert_eq!(store.ledger().value(&key(1)), Some(&[1u8][..]));
    assert_eq!(store.ledger().value(&key(3)), None, "not addressed to b1");
    assert_eq!(store.ledger().tx_ids(), reference.tx_ids());
    let replay = world.invoke(&TxSpec::credit(4, vec![], vec![(key(5), vec![5])]));
    let block = world.cut(vec![replay]);
    assert_eq!(
        store.append(&block).expect("next"),
        [DuplicateTxid],
        "ids survive the restart"
    );
    reference.append(&block).expect("reference");
    assert_eq!(store.block(4).expect("read").as_ref(), Some(&block));
    drop(store);
    let store = BusinessStore::open(&path, None).expect("again");
    assert_eq!(store.ledger().commit_hash(), reference.commit_hash());
}

#[test]
fn a_plaintext_node_keeps_clear_values_across_a_restart_and_needs_its_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ledger.redb");
    let mut world = World::new();
    let identity = world.business_key("b2").duplicate();
    let mut store =
        BusinessStore::create(&path, &world.genesis, "b2", Some(&identity)).expect("create");
    let mut spec = TxSpec::credit(1, vec![], vec![(key(1), b"cust-1/100".to_vec())]);
    spec.targets = vec!["b2".into()];
    let blocks = [
        vec![world.membership(1, &[0, 1], &MEASUREMENT)],
        vec![world.invoke(&spec)],
    ];
    for txs in blocks {
        let block = world.cut(txs);
        assert_eq!(store.append(&block).expect("stored"), [Valid]);
    }
    assert_eq!(store.ledger().value(&key(1)), Some(&b"cust-1/100"[..]));
    drop(store);
    let bytes = std::fs::read(&path).expect("read");
    assert!(
        bytes.windows(10).any(|w| w == b"cust-1/100"),
        "the record is in clear in the file"
    );
    let Err(err) = BusinessStore::open(&path, None) else {
        panic!("a plaintext node opened without its key");
    };
    assert!(
        matches!(&err, StoreError::Block(_)) && err.to_string().contains("needs its identity key"),
        "{err}"
    );
    let store = BusinessStore::open(&path, Some(&identity)).expect("reopen");
    assert_eq!(store.ledger().value(&key(1)), Some(&b"cust-1/100"[..]));
}

#[test]
fn creating_a_store_never_overwrites_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ledger.redb");
    let (world, _) = filled(&path);
    let before = std::fs::read(&path).expect("read");
    let err = BusinessStore::create(&path, &world.genesis, "b1", None)
        .err()
        .expect("refused");
    assert!(matches!(err, StoreError::Exists(_)), "{err}");
    assert_eq!(std::fs::read(&path).expect("read"), before);
}

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const CODES: TableDefinition<u64, &[u8]> = TableDefinition::new("codes");
const COMMITS: TableDefinition<u64, &[u8]> = TableDefinition::new("commits");
const VERSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("versions");
const VALUES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("values");
const TX_IDS: TableDefinition<&[u8], ()> = TableDefinition::new("tx_ids");

/// Fills a store, alters it with `tamper` as an attacker with file access
/// would, and returns the refusal at start-up.
fn tampered(tamper: impl FnOnce(&redb::WriteTransaction)) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ledger.redb");
    filled(&path);
    {
        let db = Database::open(&path).expect("open");
        let tx = db.begin_write().expect("write");
        tamper(&tx);
        tx.commit().expect("commit");
    }
    match BusinessStore::open(&path, None) {
        Ok(_) => panic!("a tampered store opened"),
        Err(e @ StoreError::Tampered { .. }) => e.to_string(),
        Err(e) => panic!("not a tamper refusal: {e}"),
    }
}

fn flip_last(bytes: &[u8]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if let Some(b) = out.last_mut() {
        *b ^= 1;
    }
    out
}

#[test]
fn a_tampered_block_is_refused_at_start() {
    let err = tampered(|tx| {
        let mut blocks = tx.open_table(BLOCKS).expect("blocks");
        let block = blocks
            .get(2)
            .expect("get")
            .expect("block 2")
            .value()
            .to_vec();
        let mut altered = block.clone();
        let at = altered.len() / 2;
        altered[at] ^= 1;
        blocks.insert(2, altered.as_slice()).expect("insert");
    });
    assert!(err.contains("block 2 was altered on disk"), "{err}");
}

#[test]
fn tampered_codes_or_commit_hashes_are_refused_at_start() {
    let err = tampered(|tx| {
        let mut codes = tx.open_table(CODES).expect("codes");
        codes
            .insert(2, [0u8, 0, 0, 0, 0, 0, 0, 0].as_slice())
            .expect("insert");
    });
    assert!(
        err.contains("the validation codes of block 2 was altered"),
        "{err}"
    );
    let err = tampered(|tx| {
        let mut commits = tx.open_table(COMMITS).expect("commits");
        commits.insert(3, [0u8; 32].as_slice()).expect("insert");
    });
    assert!(
        err.contains("the commit hash after block 3 was altered"),
        "{err}"
    );
}

#[test]
fn tampered_state_is_refused_at_start() {
    let err = tampered(|tx| {
        let mut values = tx.open_table(VALUES).expect("values");
        let value = values
            .get(key(1).as_slice())
            .expect("get")
            .expect("value")
            .value()
            .to_vec();
        values
            .insert(key(1).as_slice(), flip_last(&value).as_slice())
            .expect("insert");
    });
    assert!(err.contains("a stored value was altered"), "{err}");
    let err = tampered(|tx| {
        let mut values = tx.open_table(VALUES).expect("values");
        values
            .insert(key(3).as_slice(), [3u8].as_slice())
            .expect("insert");
    });
    assert!(
        err.contains("a stored value was altered"),
        "a value b1 never kept: {err}"
    );
    let err = tampered(|tx| {
        let mut versions = tx.open_table(VERSIONS).expect("versions");
        versions
            .insert(key(1).as_slice(), [0u8; 12].as_slice())
            .expect("insert");
    });
    assert!(err.contains("a key version was altered"), "{err}");
    let err = tampered(|tx| {
        let mut ids = tx.open_table(TX_IDS).expect("ids");
        ids.remove([1u8; 16].as_slice()).expect("remove");
    });
    assert!(
        err.contains("the set of transaction ids was altered"),
        "{err}"
    );
}
