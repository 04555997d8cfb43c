//! The privacy ledger with the real binary: `sotto demo ledger` runs every
//! role as a process over mutual TLS and fails unless every answer matches
//! the plaintext truth, a restarted business node catches up, a revoked
//! compute enclave is refused and no record is in clear at rest; and
//! `sotto ledger genesis` reports a bad file at its line and column and
//! never overwrites its input or an existing block 0.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{fails, fails_within, ok};

#[test]
fn the_ledger_runs_as_processes_and_every_answer_is_the_truth() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let out = ok(&[&"demo", &"ledger", &"--dir", &work]);
    for needle in [
        "the endorsers put the center's signed membership on the chain",
        "6 loans recorded by two banks, each VALID at b1",
        "an over-repayment refused inside the enclave",
        "every customer's total exposure matches the plaintext truth",
        "b2 restarted, replayed its store, caught up",
        "killed the ordering leader",
        "replayed to the ordering service: DUPLICATE_TXID at b1 and b2",
        "restarted and caught up through Raft",
        "its request refused",
        "no customer or loan id in any of the",
        "the same answers with b2 serving the reads",
        "b2 (plaintext mode, bank-b's own node) holds the records it was named for in clear",
        "one endorsement where the policy asks two of three: ENDORSEMENT_POLICY_FAILURE (10) at b1 and b2",
        "the endorsements of another packet: ENDORSEMENT_POLICY_FAILURE (10) at b1 and b2",
        "named business nodes were changed: ENDORSEMENT_POLICY_FAILURE (10) at b1 and b2",
        "a forged TEE signature (refused by the endorsers, ordered anyway): BAD_TEE_SIGNATURE (100) at b1 and b2",
        "stripped of an endorsement after the client signed it: BAD_CREATOR_SIGNATURE (4) at b1 and b2",
        "ordered after it: ENCLAVE_NOT_MEMBER (101) at b1 and b2",
        "ordered together: VALID (0) then MVCC_READ_CONFLICT (11) at b1 and b2",
        "compute c1 refused a business node's envelope-key and execute calls; b2 refused a client's load and a member's load without a load channel",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(work.join("b1/ledger.redb").exists());
    assert!(work.join("o1/ledger-orderer.redb").exists());
    a_business_node_whose_store_was_altered_refuses_to_start(&work);
    an_orderer_whose_stored_block_was_altered_refuses_to_start(&work);
}

/// Runs `sotto ledger ROLE serve` on `home` and returns its error output
/// once it exits (it must, within a minute, and not successfully).
fn serve_must_fail(work: &std::path::Path, role: &str, home: &str) -> String {
    fails_within(
        &[
            &"ledger",
            &role,
            &"serve",
            &"--listen",
            &"127.0.0.1:0",
            &"--home",
            &work.join(home),
            &"--genesis",
            &work.join("block0.bin"),
        ],
        std::time::Duration::from_secs(60),
    )
}

/// After the demo: one transaction of block 2 in o2's chain altered on
/// disk; `ledger orderer serve` must stop, naming the block, before it
/// joins the Raft group or delivers anything.
fn an_orderer_whose_stored_block_was_altered_refuses_to_start(work: &std::path::Path) {
    use prost::Message;
    use redb::ReadableTable;
    const BLOCKS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("blocks");
    {
        let db = redb::Database::open(work.join("o2/ledger-orderer.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut blocks = tx.open_table(BLOCKS).unwrap();
            let bytes = blocks.get(2).unwrap().unwrap().value().to_vec();
            let mut block = sotto_ledger::block::Block::decode(bytes.as_slice()).unwrap();
            block.transactions[0][10] ^= 1;
            blocks.insert(2, block.encode_to_vec().as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let stderr = serve_must_fail(work, "orderer", "o2");
    assert!(
        stderr.contains("stored block 2: its transactions do not match its data hash (tampered)"),
        "{stderr}"
    );
}

/// After the demo: one key version in b2's store altered on disk, as an
/// attacker with file access would; `ledger peer serve` must stop, naming
/// what was altered, instead of serving.
fn a_business_node_whose_store_was_altered_refuses_to_start(work: &std::path::Path) {
    use redb::{ReadableTable, TableDefinition};
    const VERSIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("versions");
    {
        let db = redb::Database::open(work.join("b2/ledger.redb")).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let mut versions = tx.open_table(VERSIONS).unwrap();
            let key = versions
                .iter()
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
                .0
                .value()
                .to_vec();
            versions
                .insert(key.as_slice(), [0u8; 12].as_slice())
                .unwrap();
        }
        tx.commit().unwrap();
    }
    let stderr = serve_must_fail(work, "peer", "b2");
    assert!(
        stderr.contains("a key version was altered on disk"),
        "{stderr}"
    );
}

/// A valid genesis file for one node of each role, keys made up.
fn genesis_text() -> String {
    let key = |seed: u8| {
        let k = sotto_crypto::identity::IdentityKey::from_seed(&[seed; 32]).unwrap();
        hex::encode(k.public().to_bytes())
    };
    format!(
        "format = 1\nname = \"t\"\ncreated = 1\nca_sha256 = \"{}\"\n\n[center]\nname = \"center\"\nidentity = \"{}\"\n\n\
         [[orderer]]\nname = \"o1\"\norg = \"ops\"\nidentity = \"{}\"\naddress = \"127.0.0.1:7050\"\n\n\
         [[endorser]]\nname = \"e1\"\norg = \"ops\"\nidentity = \"{}\"\naddress = \"127.0.0.1:7051\"\n\n\
         [[business]]\nname = \"b1\"\norg = \"bank\"\nidentity = \"{}\"\naddress = \"127.0.0.1:7052\"\nmode = \"ciphertext\"\n\n\
         [[client]]\nname = \"bank\"\norg = \"bank\"\nidentity = \"{}\"\n\n\
         [[contract]]\nname = \"credit\"\nversion = 1\npolicy = \"'e1'\"\ncallers = [\"bank\"]\n",
        "00".repeat(32),
        key(1),
        key(2),
        key(3),
        key(4),
        key(5)
    )
}

#[test]
fn genesis_errors_name_file_line_and_column_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("genesis.toml");
    let block0 = dir.path().join("block0.bin");
    let bad = genesis_text().replace("policy = \"'e1'\"", "policy = \"AND('e1' 'e2')\"");
    std::fs::write(&config, &bad).unwrap();
    let err = fails(&[
        &"ledger",
        &"genesis",
        &"--config",
        &config,
        &"--output",
        &block0,
    ]);
    let line = bad.lines().position(|l| l.starts_with("policy")).unwrap() + 1;
    assert!(
        err.contains(&format!(
            "genesis.toml:{line}:20: policy: expected ',' or ')'"
        )),
        "{err}"
    );
    assert!(!block0.exists(), "nothing written for a refused file");
    std::fs::write(&config, genesis_text()).unwrap();
    let out = ok(&[
        &"ledger",
        &"genesis",
        &"--config",
        &config,
        &"--output",
        &block0,
    ]);
    assert!(
        out.contains("1 orderers, 1 endorsers, 1 business nodes, 1 clients, 1 contracts"),
        "{out}"
    );
    let written = std::fs::read(&block0).unwrap();
    let again = fails(&[
        &"ledger",
        &"genesis",
        &"--config",
        &config,
        &"--output",
        &block0,
    ]);
    assert!(again.contains("already exists"), "{again}");
    assert_eq!(std::fs::read(&block0).unwrap(), written);
    let over_input = fails(&[
        &"ledger",
        &"genesis",
        &"--config",
        &config,
        &"--output",
        &config,
        &"--force",
    ]);
    assert!(over_input.contains("input"), "{over_input}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), genesis_text());
}
