//! Validation codes, one check at a time: each test builds a transaction
//! that fails exactly one check and asserts the one code it gets, on both
//! business nodes.

#![allow(clippy::expect_used)]

mod common;

use common::{key, TxSpec, World, MEASUREMENT};
use sotto_ledger::block::{Block, BlockError};
use sotto_ledger::memory::MemoryLedger;
use sotto_ledger::packet::Version;
use sotto_ledger::ValidationCode::{self, *};

/// A world whose enclaves c1 and c2 are members (block 1), and both nodes.
fn started() -> (World, MemoryLedger, MemoryLedger) {
    let mut world = World::new();
    let mut b1 = world.node("b1");
    let mut b2 = world.node("b2");
    let block = world.cut(vec![world.membership(1, &[0, 1], &MEASUREMENT)]);
    assert_eq!(b1.append(&block).expect("block 1"), [Valid]);
    assert_eq!(b2.append(&block).expect("block 1"), [Valid]);
    (world, b1, b2)
}

/// Cuts one block of `txs` and returns the codes at b1 (b2's agree).
fn codes(
    world: &mut World,
    b1: &mut MemoryLedger,
    b2: &mut MemoryLedger,
    txs: Vec<Vec<u8>>,
) -> Vec<ValidationCode> {
    let block = world.cut(txs);
    let at_b1 = b1.append(&block).expect("b1 accepts the block").to_vec();
    let at_b2 = b2.append(&block).expect("b2 accepts the block").to_vec();
    let consensus =
        |codes: &[ValidationCode]| codes.iter().map(|c| c.consensus()).collect::<Vec<_>>();
    assert_eq!(consensus(&at_b1), consensus(&at_b2), "the nodes disagree");
    assert_eq!(b1.commit_hash(), b2.commit_hash());
    at_b1
}

fn one(spec: TxSpec) -> ValidationCode {
    let (mut world, mut b1, mut b2) = started();
    let tx = world.invoke(&spec);
    codes(&mut world, &mut b1, &mut b2, vec![tx])[0]
}

#[test]
fn a_valid_invoke_is_valid_where_addressed_and_not_addressed_elsewhere() {
    let (mut world, mut b1, mut b2) = started();
    let tx = world.invoke(&TxSpec::credit(
        1,
        vec![(key(1), None)],
        vec![(key(1), b"sealed".to_vec())],
    ));
    let block = world.cut(vec![tx]);
    assert_eq!(b1.append(&block).expect("b1"), [Valid]);
    assert_eq!(b2.append(&block).expect("b2"), [NotAddressed]);
    let version = Some(&Version { block: 2, tx: 0 });
    assert_eq!(b1.versions().get(&key(1)), version);
    assert_eq!(
        b2.versions().get(&key(1)),
        version,
        "versions advance on every node"
    );
    assert_eq!(b1.value(&key(1)), Some(&b"sealed"[..]));
    assert_eq!(b2.value(&key(1)), None, "only a target keeps the value");
}

#[test]
fn a_plaintext_target_keeps_the_clear_copy_and_every_node_checks_copies_match_targets() {
    let (mut world, mut b1, mut b2) = started();
    let mut both = TxSpec::credit(1, vec![], vec![(key(1), b"record".to_vec())]);
    both.targets = vec!["b1".into(), "b2".into()];
    let tx = world.invoke(&both);
    assert_eq!(codes(&mut world, &mut b1, &mut b2, vec![tx]), [Valid]);
    assert_eq!(b2.value(&key(1)), Some(&b"record"[..]), "in clear at b2");
    assert_eq!(b1.value(&key(1)), Some(&b"record"[..]), "as sealed at b1");
    let copy_for = |target: &str, tx: u8| {
        let mut spec = TxSpec::credit(tx, vec![], vec![]);
        spec.targets = vec![target.into()];
        world.clear_copies(&spec).pop()
    };
    let b2_copy = copy_for("b2", 2).expect("b2 is plaintext");
    let mut missing = TxSpec::credit(2, vec![], vec![(key(2), vec![2])]);
    missing.targets = vec!["b2".into()];
    missing.clear_copies = Some(Vec::new());
    let mut twice = TxSpec::credit(3, vec![], vec![]);
    twice.targets = vec!["b2".into()];
    twice.clear_copies = Some(vec![b2_copy.clone(), b2_copy.clone()]);
    let mut for_a_ciphertext_node = TxSpec::credit(4, vec![], vec![]);
    let mut misnamed = b2_copy;
    misnamed.target = "b1".into();
    for_a_ciphertext_node.clear_copies = Some(vec![misnamed]);
    let txs = [missing, twice, for_a_ciphertext_node]
        .iter()
        .map(|spec| world.invoke(spec))
        .collect();
    assert_eq!(
        codes(&mut world, &mut b1, &mut b2, txs),
        [BadPayload, BadPayload, BadPayload]
    );
}

#[test]
fn a_clear_copy_that_does_not_open_leaves_the_value_unkept_at_that_node_only() {
    let (mut world, mut b1, mut b2) = started();
    let mut spec = TxSpec::credit(1, vec![], vec![(key(1), b"record".to_vec())]);
    spec.targets = vec!["b2".into()];
    let mut copies = world.clear_copies(&spec);
    copies[0].sealed[40] ^= 1;
    spec.clear_copies = Some(copies);
    let block = world.cut(vec![world.invoke(&spec)]);
    let prepared = b2.prepare(&block).expect("b2");
    assert_eq!(prepared.validated.codes, [Valid], "the code is everyone's");
    assert_eq!(
        prepared.validated.unopened,
        [sotto_crypto::ids::TxId::from_bytes([1; 16])]
    );
    b2.apply(prepared);
    b1.append(&block).expect("b1");
    assert_eq!(b2.value(&key(1)), None, "nothing unreadable is kept");
    assert_eq!(b1.versions(), b2.versions());
    assert_eq!(b1.commit_hash(), b2.commit_hash());
}

#[test]
fn a_plaintext_node_opens_only_with_its_own_identity_key() {
    let world = World::new();
    let refused = |key: Option<&sotto_crypto::identity::IdentityKey>| {
        MemoryLedger::open(&world.genesis, "b2", key)
            .expect_err("refused")
            .to_string()
    };
    assert!(refused(None).contains("b2 keeps its records in clear and needs its identity key"));
    assert!(refused(Some(world.business_key("b1"))).contains("is not b2's in block 0"));
    assert!(MemoryLedger::open(&world.genesis, "b1", None).is_ok());
}

#[test]
fn a_client_signature_that_fails_is_bad_creator_signature() {
    let mut spec = TxSpec::credit(1, vec![], vec![(key(1), vec![1])]);
    spec.signing_client = 1;
    assert_eq!(one(spec), BadCreatorSignature);
}

#[test]
fn a_transaction_id_seen_before_is_a_duplicate_in_the_same_or_a_later_block() {
    let (mut world, mut b1, mut b2) = started();
    let tx = world.invoke(&TxSpec::credit(1, vec![], vec![(key(1), vec![1])]));
    let again = world.invoke(&TxSpec::credit(1, vec![], vec![(key(2), vec![2])]));
    assert_eq!(
        codes(&mut world, &mut b1, &mut b2, vec![tx.clone(), again]),
        [Valid, DuplicateTxid]
    );
    assert_eq!(
        codes(&mut world, &mut b1, &mut b2, vec![tx]),
        [DuplicateTxid]
    );
    assert_eq!(b1.versions().get(&key(2)), None);
}

#[test]
fn an_invalid_transaction_still_uses_up_its_id() {
    let (mut world, mut b1, mut b2) = started();
    let mut expired = TxSpec::credit(1, vec![], vec![(key(1), vec![1])]);
    expired.expires_ms = 0;
    let tx = world.invoke(&expired);
    assert_eq!(codes(&mut world, &mut b1, &mut b2, vec![tx]), [Expired]);
    let retry = world.invoke(&TxSpec::credit(1, vec![], vec![(key(1), vec![1])]));
    assert_eq!(
        codes(&mut world, &mut b1, &mut b2, vec![retry]),
        [DuplicateTxid]
    );
}

#[test]
fn an_unknown_contract_or_version_is_unknown_contract() {
    let mut spec = TxSpec::credit(1, vec![], vec![(key(1), vec![1])]);
    spec.contract = "loans".into();
    assert_eq!(one(spec.clone()), UnknownContract);
    spec.contract = "credit".into();
    spec.version = 2;
    assert_eq!(one(spec), UnknownContract);
}

#[test]
fn a_client_not_among_the_callers_is_refused() {
    let mut spec = TxSpec::credit(1, vec![], vec![(key(1), vec![1])]);
    spec.contract = "kv".into();
    spec.version = 1;
    spec.endorsers = vec![0, 1];
    assert_eq!(one(spec.clone()), Valid, "bank-a may call kv");
    spec.client = 1;
    spec.signing_client = 1;
    assert_eq!(one(spec), CallerNotAllowed);
}

#[test]
fn a_packet_past_its_expiry_is_expired() {
    let mut spec = TxSpec::credit(1, vec![], vec![(key(1), vec![1])]);
    spec.expires_ms = common::START_MS;
    assert_eq!(one(spec.clone()), Expired);
    // Its block is cut at START_MS + 2000 (block 1 a second earlier): a
    // packet is good up to and including its expiry time.
    spec.expires_ms = common::START_MS + 2000;
    assert_eq!(one(spec.clone()), Valid);
    spec.expires_ms = common::START_MS + 1999;
    assert_eq!(one(spec), Expired);
}

#[test]
fn a_signer_outside_the_group_or_with_other_code_is_not_a_member() {
    let mut spec = TxSpec::credit(1, vec![], vec![(key(1), vec![1])]);
    spec.member = "c9".into();
    assert_eq!(one(spec.clone()), EnclaveNotMember);
    spec.member = "c1".into();
    spec.measurement = vec![0x5b; 32];
    assert_eq!(one(spec), EnclaveNotMember);
}

#[test]
fn a_revoked_member_is_refused_from_the_block_after_its_revocation() {
    let (mut world, mut b1, mut b2) = started();
    let before = world.invoke(&TxSpec::credit(1, vec![], vec![(key(1), vec![1])]));
    let revoke = world.membership(2, &[1], &MEASUREMENT);
    let after = world.invoke(&TxSpec::credit(2, vec![], vec![(key(2), vec![2])]));
    assert_eq!(
        codes(&mut world, &mut b1, &mut b2, vec![before, revoke, after]),
        [Valid, Valid, EnclaveNotMember]
    );
    let mut by_c2 = TxSpec::credit(3, vec![], vec![(key(3), vec![3])]);
    by_c2.member = "c2".into();
    by_c2.tee_signer = 1;
    let by_c2 = world.invoke(&by_c2);
    assert_eq!(codes(&mut world, &mut b1, &mut b2, vec![by_c2]), [Valid]);
}

#[test]
fn a_forged_tee_signature_is_bad_tee_signature() {
    let mut spec = TxSpec::credit(1, vec![], vec![(key(1), vec![1])]);
    spec.tee_signer = 1;
    assert_eq!(one(spec), BadTeeSignature, "c2's key signing as c1");
}

#[test]
fn endorsements_that_do_not_satisfy_the_policy_fail_it() {
    let base = TxSpec::credit(1, vec![], vec![(key(1), vec![1])]);
    let mut too_few = base.clone();
    too_few.endorsers = vec![2];
    assert_eq!(one(too_few), EndorsementPolicyFailure);
    let mut same_twice = base.clone();
    same_twice.endorsers = vec![2, 2];
    assert_eq!(one(same_twice), EndorsementPolicyFailure);
    let mut other_packet = base.clone();
    other_packet.endorsed_digest = Some([9; 32]);
    assert_eq!(one(other_packet), EndorsementPolicyFailure);
    let mut other_node = base.clone();
    other_node.endorsed_targets = Some(vec!["b2".into()]);
    assert_eq!(one(other_node), EndorsementPolicyFailure);
    let mut two_of_three = base;
    two_of_three.endorsers = vec![2, 0];
    assert_eq!(one(two_of_three), Valid);
}

#[test]
fn a_stale_read_is_an_mvcc_conflict_in_the_same_block_and_later() {
    let (mut world, mut b1, mut b2) = started();
    let first = world.invoke(&TxSpec::credit(
        1,
        vec![(key(1), None)],
        vec![(key(1), vec![1])],
    ));
    let second = world.invoke(&TxSpec::credit(
        2,
        vec![(key(1), None)],
        vec![(key(1), vec![2])],
    ));
    assert_eq!(
        codes(&mut world, &mut b1, &mut b2, vec![first, second]),
        [Valid, MvccReadConflict]
    );
    let stale = world.invoke(&TxSpec::credit(
        3,
        vec![(key(1), None)],
        vec![(key(1), vec![3])],
    ));
    let current = Some(Version { block: 2, tx: 0 });
    let fresh = world.invoke(&TxSpec::credit(
        4,
        vec![(key(1), current)],
        vec![(key(1), vec![4])],
    ));
    assert_eq!(
        codes(&mut world, &mut b1, &mut b2, vec![stale, fresh]),
        [MvccReadConflict, Valid]
    );
    assert_eq!(b1.value(&key(1)), Some(&[4u8][..]));
}

#[test]
fn a_packet_of_another_ledger_is_target_chain_not_found() {
    let mut spec = TxSpec::credit(1, vec![], vec![(key(1), vec![1])]);
    spec.ledger = Some([7; 32]);
    assert_eq!(one(spec), TargetChainNotFound);
}

#[test]
fn a_target_that_is_not_a_business_node_is_invalid() {
    let mut spec = TxSpec::credit(1, vec![], vec![(key(1), vec![1])]);
    spec.targets = vec!["b9".into()];
    assert_eq!(one(spec), InvalidOtherReason);
}

#[test]
fn malformed_transactions_are_bad_payload() {
    let (mut world, mut b1, mut b2) = started();
    let mut twice = TxSpec::credit(3, vec![], vec![(key(1), vec![1]), (key(1), vec![2])]);
    twice.tx_id = [3; 16];
    let mut untargeted = TxSpec::credit(4, vec![], vec![(key(2), vec![1])]);
    untargeted.targets.clear();
    let txs = vec![
        b"not a transaction".to_vec(),
        Vec::new(),
        world.invoke(&twice),
        world.invoke(&untargeted),
    ];
    assert_eq!(
        codes(&mut world, &mut b1, &mut b2, txs),
        [BadPayload, BadPayload, BadPayload, BadPayload]
    );
}

#[test]
fn a_delete_removes_the_key_everywhere_and_must_carry_no_value() {
    let (mut world, mut b1, mut b2) = started();
    let put = world.invoke(&TxSpec::credit(1, vec![], vec![(key(1), vec![1])]));
    assert_eq!(codes(&mut world, &mut b1, &mut b2, vec![put]), [Valid]);
    let mut with_value = TxSpec::credit(2, vec![], vec![]);
    with_value.deletes = vec![(key(1), vec![9])];
    let mut delete = TxSpec::credit(3, vec![], vec![]);
    delete.deletes = vec![(key(1), Vec::new())];
    let txs = vec![world.invoke(&with_value), world.invoke(&delete)];
    assert_eq!(
        codes(&mut world, &mut b1, &mut b2, txs),
        [BadPayload, Valid]
    );
    assert_eq!(b1.versions().get(&key(1)), None);
    assert_eq!(b2.versions().get(&key(1)), None);
    assert_eq!(b1.value(&key(1)), None);
}

#[test]
fn membership_updates_must_be_the_centers_and_advance() {
    let (mut world, mut b1, mut b2) = started();
    let replayed = world.membership(1, &[0], &MEASUREMENT);
    let mut forged = world.membership(3, &[0], &MEASUREMENT);
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(
        codes(&mut world, &mut b1, &mut b2, vec![replayed, forged]),
        [InvalidConfigTransaction, InvalidConfigTransaction]
    );
    assert_eq!(b1.group().version, 1);
    assert_eq!(b1.group().members.len(), 2);
}

#[test]
fn blocks_that_do_not_extend_the_chain_are_refused_whole() {
    let (mut world, mut b1, _) = started();
    let tx = world.invoke(&TxSpec::credit(1, vec![], vec![(key(1), vec![1])]));
    let tip = world.tip;
    let block = world.cut(vec![tx.clone()]);
    let mut tampered = block.clone();
    tampered.transactions[0][5] ^= 1;
    assert_eq!(
        b1.append(&tampered),
        Err(BlockError::DataMismatch { number: 2 })
    );
    let forged = Block::cut(
        &tip,
        "o2",
        &world.consortium.orderers[0],
        common::START_MS + 9_000,
        vec![tx.clone()],
    );
    assert_eq!(
        b1.append(&forged),
        Err(BlockError::BadOrdererSignature {
            number: 2,
            orderer: "o2".into()
        })
    );
    let mut later = tip;
    later.number += 1;
    let skipping = Block::cut(
        &later,
        "o1",
        &world.consortium.orderers[0],
        common::START_MS + 9_000,
        vec![tx.clone()],
    );
    assert_eq!(
        b1.append(&skipping),
        Err(BlockError::OutOfOrder {
            expected: 2,
            got: 3
        })
    );
    let mut elsewhere = tip;
    elsewhere.hash = [3; 32];
    let unchained = Block::cut(
        &elsewhere,
        "o1",
        &world.consortium.orderers[0],
        common::START_MS + 9_000,
        vec![tx.clone()],
    );
    assert_eq!(
        b1.append(&unchained),
        Err(BlockError::BrokenChain { number: 2 })
    );
    let mut late_tip = tip;
    late_tip.time_ms = 0;
    let back = Block::cut(
        &late_tip,
        "o1",
        &world.consortium.orderers[0],
        1,
        vec![tx.clone()],
    );
    assert_eq!(
        b1.append(&back),
        Err(BlockError::TimeWentBack { number: 2 })
    );
    let many = Block::cut(
        &tip,
        "o1",
        &world.consortium.orderers[0],
        common::START_MS + 9_000,
        vec![tx; 101],
    );
    assert_eq!(b1.append(&many), Err(BlockError::TooLarge { number: 2 }));
    assert_eq!(b1.tip().number, 1, "nothing of a refused block is applied");
    assert_eq!(b1.append(&block).expect("the real block"), [Valid]);
}
