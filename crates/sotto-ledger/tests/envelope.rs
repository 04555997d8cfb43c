//! The client's check of a compute node's envelope key: accepted only with
//! the center's signature over a membership no older than the chain's, the
//! signer in it, and the signer's own signature over this ledger's key.

#![allow(clippy::expect_used)]

mod common;

use common::World;
use sotto_crypto::secret::SecretBytes;
use sotto_ledger::keys::LedgerKeys;
use sotto_ledger::online::compute::{check_envelope_key, envelope_statement, ENVELOPE_KEY_DOMAIN};
use sotto_tee::registry::{Membership, MEMBERSHIP_DOMAIN};
use sotto_wire::ledger::EnvelopeKeyReply;

/// A reply from c1 (membership version 2 listing `members`), signed by
/// `signer` for ledger `ledger`.
fn reply(world: &World, members: &[usize], signer: usize, ledger: [u8; 32]) -> EnvelopeKeyReply {
    let keys = LedgerKeys::from_group_keys(&[(1, SecretBytes::new([4; 32]))]).expect("keys");
    let public_key = keys.envelope_public(1).expect("v1").to_bytes();
    let membership = Membership {
        version: 2,
        measurement: Some(hex::encode([0x5a; 32])),
        members: members
            .iter()
            .map(|&i| {
                (
                    format!("c{}", i + 1),
                    hex::encode(world.enclaves[i].public().to_bytes()),
                    "00".repeat(32),
                )
            })
            .collect(),
        group_key_version: 1,
    };
    let bytes = membership.signed_bytes();
    EnvelopeKeyReply {
        version: 1,
        signature: world.enclaves[signer]
            .sign(
                ENVELOPE_KEY_DOMAIN,
                &envelope_statement(&ledger, 1, &public_key),
            )
            .to_vec(),
        public_key,
        member: "c1".into(),
        membership_signature: world
            .consortium
            .center
            .sign(MEMBERSHIP_DOMAIN, &bytes)
            .to_vec(),
        membership: bytes,
    }
}

#[test]
fn a_current_members_signed_key_is_accepted() {
    let world = World::new();
    let ledger = world.tip.ledger;
    let good = reply(&world, &[0, 1], 0, ledger);
    let checked = check_envelope_key(&world.config, &ledger, &good, 2).expect("accepted");
    assert_eq!((checked.version, checked.membership_version), (1, 2));
}

#[test]
fn every_part_of_the_envelope_key_is_checked() {
    let world = World::new();
    let ledger = world.tip.ledger;
    let refusal = |reply: &EnvelopeKeyReply, on_chain: u64| {
        check_envelope_key(&world.config, &ledger, reply, on_chain).expect_err("refused")
    };
    let good = reply(&world, &[0, 1], 0, ledger);
    let stale = refusal(&good, 3);
    assert!(
        stale.contains("shows membership v2, older than v3 on the ledger"),
        "{stale}"
    );
    let mut forged = good.clone();
    forged.membership_signature[0] ^= 1;
    assert!(refusal(&forged, 2).contains("not the registration center's"));
    let without_c1 = reply(&world, &[1], 0, ledger);
    assert!(refusal(&without_c1, 2).contains("c1 is not a member of the compute group"));
    let by_c2 = reply(&world, &[0, 1], 1, ledger);
    assert!(refusal(&by_c2, 2).contains("the envelope key is not signed by c1"));
    let other_ledger = reply(&world, &[0, 1], 0, [9; 32]);
    assert!(refusal(&other_ledger, 2).contains("the envelope key is not signed by c1"));
    let mut swapped_key = good.clone();
    swapped_key.public_key = LedgerKeys::from_group_keys(&[(1, SecretBytes::new([5; 32]))])
        .expect("keys")
        .envelope_public(1)
        .expect("v1")
        .to_bytes();
    assert!(refusal(&swapped_key, 2).contains("the envelope key is not signed by c1"));
    let mut other_version = good;
    other_version.version = 2;
    assert!(refusal(&other_version, 2).contains("the envelope key is not signed by c1"));
}
