//! Untrusted ledger inputs — a genesis file's text, an endorsement policy,
//! a block's bytes, a transaction in a block — are decoded, validated or
//! refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sotto_crypto::identity::IdentityKey;
use sotto_ledger::block::Block;
use sotto_ledger::memory::MemoryLedger;
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
    let text = genesis();
    let Ok(config) = LedgerConfig::parse("genesis.toml", &text) else {
        return;
    };
    let block0 = Block::genesis(&config, &text);
    let Ok(mut ledger) = MemoryLedger::open(&block0, "b1") else {
        return;
    };
    if let Ok(block) = Block::decode(data) {
        let _ = ledger.clone().append(&block);
    }
    let next = Block::cut(ledger.tip(), "o1", &key(2), 2_000, vec![data.to_vec()]);
    let _ = ledger.append(&next);
});
