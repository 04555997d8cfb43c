//! Untrusted ledger inputs — a genesis file's text, an endorsement policy,
//! a block's bytes, a transaction in a block, a client's request at a
//! compute enclave, a packet at an endorser, a Raft message or snapshot
//! from another orderer, a load channel request at a plaintext-mode node, a
//! clear copy at its node — are decoded, validated or refused, never a
//! panic.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sotto_crypto::identity::IdentityKey;
use sotto_crypto::secret::SecretBytes;
use sotto_ledger::block::Block;
use sotto_ledger::clear::{open_copy, ChannelAsk, Judge};
use sotto_ledger::compute::Enclave;
use sotto_ledger::contracts::builtin;
use sotto_ledger::endorse::Endorser;
use sotto_ledger::group::ComputeGroup;
use sotto_ledger::keys::LedgerKeys;
use sotto_ledger::request::Request;
use sotto_ledger::memory::MemoryLedger;
use sotto_ledger::online::raft::chain::snapshot_blocks;
use sotto_ledger::online::raft::{from_cbor, OrderingRaft};
use sotto_ledger::policy::Policy;
use sotto_ledger::LedgerConfig;

fn key(n: u8) -> IdentityKey {
    IdentityKey::from_seed(&[n; 32]).expect("32 bytes")
}

/// A one-of-each consortium whose node i has the key seeded with i.
fn genesis() -> String {
    let hex = |n: u8| hex::encode(key(n).public().to_bytes());
    format!(
        "format = 1\nname = \"fuzz\"\ncreated = 1\nca_sha256 = \"{}\"\n[center]\nname = \"center\"\nidentity = \"{}\"\n\
         [[orderer]]\nname = \"o1\"\norg = \"ops\"\nidentity = \"{}\"\naddress = \"127.0.0.1:1\"\n\
         [[endorser]]\nname = \"e1\"\norg = \"ops\"\nidentity = \"{}\"\naddress = \"127.0.0.1:2\"\n\
         [[business]]\nname = \"b1\"\norg = \"bank\"\nidentity = \"{}\"\naddress = \"127.0.0.1:3\"\nmode = \"ciphertext\"\n\
         [[client]]\nname = \"bank\"\norg = \"bank\"\nidentity = \"{}\"\n\
         [[contract]]\nname = \"kv\"\nversion = 1\npolicy = \"'e1'\"\ncallers = [\"bank\"]\n",
        "00".repeat(32),
        hex(1),
        hex(2),
        hex(3),
        hex(4),
        hex(5)
    )
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = LedgerConfig::parse("fuzz.toml", text);
        let _ = text.parse::<Policy>();
    }
    if let Ok(block) = Block::decode(data) {
        let _ = block.open_genesis("fuzz");
    }
    let _ = from_cbor::<openraft::raft::AppendEntriesRequest<OrderingRaft>>(data);
    let _ = from_cbor::<openraft::raft::VoteRequest<u64>>(data);
    let _ = from_cbor::<openraft::raft::InstallSnapshotRequest<OrderingRaft>>(data);
    let _ = from_cbor::<openraft::Entry<OrderingRaft>>(data);
    let text = genesis();
    let Ok(config) = LedgerConfig::parse("genesis.toml", &text) else {
        return;
    };
    let block0 = Block::genesis(&config, &text);
    let Ok(mut ledger) = MemoryLedger::open(&block0, "b1", None) else {
        return;
    };
    if let Ok(block) = Block::decode(data) {
        let _ = ledger.clone().append(&block);
    }
    let ledger_id = ledger.tip().ledger;
    let _ = snapshot_blocks(&config, *ledger.tip(), data);
    if let Ok(request) = Request::decode(data) {
        if let Ok(keys) = LedgerKeys::from_group_keys(&[(1, SecretBytes::new([7; 32]))]) {
            let contracts = builtin();
            let enclave = Enclave {
                config: &config,
                ledger: ledger_id,
                member: "c1",
                identity: &key(9),
                measurement: &[1; 32],
                keys: &keys,
                contracts: &contracts,
            };
            let _ = enclave.open(&request);
        }
    }
    let endorser = Endorser {
        config: &config,
        ledger: ledger_id,
        name: "e1",
        key: &key(3),
    };
    let _ = endorser.endorse(&ComputeGroup::default(), data, &[0; 64], 0);
    let members = BTreeMap::from([("c1".to_owned(), key(9).public())]);
    let judge = Judge {
        ledger: &ledger_id,
        me: "b1",
        caller: "c1",
        members: &members,
        now_ms: 0,
    };
    let (request, signature) = data.split_at(data.len() / 2);
    let ask = ChannelAsk {
        request: request.to_vec(),
        signature: signature.to_vec(),
    };
    let _ = judge.grant(&ask, &[], &mut rand::rngs::OsRng);
    if let Ok(node_key) = key(3).to_hpke() {
        let _ = open_copy(&node_key, &ledger_id, &[0; 16], "b1", data);
    }
    let next = Block::cut(ledger.tip(), "o1", &key(2), 2_000, vec![data.to_vec()]);
    let _ = ledger.append(&next);
});
