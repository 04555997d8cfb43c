//! The handshake refuses, before any element is computed, a requester whose
//! keys are made differently (column count, normalization, shard, shard
//! salt), a hello too old or dated in the future, and an accept that
//! changes the key parameters, the group or another proposed parameter. Each refusal names the parameter and both
//! values.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use sotto_crypto::group::GroupId;
use sotto_psi::engine::{AcceptPolicy, Session, SessionParams, CLOCK_SKEW, HELLO_LIFETIME};
use sotto_psi::wire::{Hello, KeyParams, Reveal, ShardParams, SigningMode, HELLO_DOMAIN};
use sotto_psi::EngineError;

mod support;

use support::{Parties, NOW};

fn parties() -> Parties {
    support::parties(7)
}

/// The requester opens with `ours` at `created`; the provider accepts with
/// `theirs` at `NOW`.
fn handshake(ours: KeyParams, created: u64, theirs: KeyParams) -> Result<(), EngineError> {
    let mut p = parties();
    let params = SessionParams::fresh(
        support::group(),
        SigningMode::Element,
        Reveal::Requester,
        8,
        ours,
        created,
        &mut p.rng,
    );
    let (_, hello) = Session::request(params, &p.a.signer(), &p.b.peer_keys(), 3, &mut p.rng)?;
    let policy = AcceptPolicy {
        keys: theirs,
        ..AcceptPolicy::default()
    };
    Session::accept(
        &hello,
        &p.b.signer(),
        &p.a.peer_keys(),
        3,
        &policy,
        NOW,
        &mut p.rng,
    )
    .map(|_| ())
}

/// The requester's session and hello: element mode, default key
/// parameters, three identifiers.
fn request(
    p: &mut Parties,
    batch_size: u32,
    created: u64,
) -> Result<(Session, Hello), EngineError> {
    let params = SessionParams::fresh(
        support::group(),
        SigningMode::Element,
        Reveal::Requester,
        batch_size,
        KeyParams::default(),
        created,
        &mut p.rng,
    );
    Session::request(params, &p.a.signer(), &p.b.peer_keys(), 3, &mut p.rng)
}

/// The provider's answer to `hello` under the default policy, at `NOW`.
fn accept(p: &mut Parties, hello: &Hello) -> Result<(Session, Hello), EngineError> {
    Session::accept(
        hello,
        &p.b.signer(),
        &p.a.peer_keys(),
        3,
        &AcceptPolicy::default(),
        NOW,
        &mut p.rng,
    )
}

fn shard(index: u32, count: u32, salt: u8) -> Option<ShardParams> {
    Some(ShardParams {
        index,
        count,
        salt_digest: [salt; 32],
    })
}

fn mismatch(err: EngineError) -> (&'static str, String, String) {
    match err {
        EngineError::ParameterMismatch {
            parameter,
            ours,
            theirs,
        } => (parameter, ours, theirs),
        other => panic!("expected a parameter mismatch, got {other}"),
    }
}

#[test]
fn equal_parameters_are_accepted() {
    let sharded = KeyParams {
        columns: 2,
        casefold: true,
        shard: shard(1, 4, 9),
        ..KeyParams::default()
    };
    handshake(sharded, NOW, sharded).expect("same parameters");
}

#[test]
fn each_key_parameter_mismatch_is_refused_naming_both_values() {
    let base = KeyParams::default();
    let cases = [
        (
            KeyParams { columns: 2, ..base },
            "number of key columns",
            "1",
            "2",
        ),
        (
            KeyParams {
                casefold: true,
                ..base
            },
            "case folding (--casefold)",
            "off",
            "on",
        ),
        (
            KeyParams {
                trim: false,
                ..base
            },
            "trimming (--no-trim)",
            "on",
            "off",
        ),
        (
            KeyParams { nfkc: true, ..base },
            "NFKC normalization (--nfkc)",
            "off",
            "on",
        ),
        (
            KeyParams {
                shard: shard(0, 4, 1),
                ..base
            },
            "shard (--shard)",
            "none (not sharded)",
            "0/4",
        ),
    ];
    for (requester, parameter, provider_value, requester_value) in cases {
        let (p, ours, theirs) = mismatch(handshake(requester, NOW, base).expect_err(parameter));
        assert_eq!(
            (p, ours.as_str(), theirs.as_str()),
            (parameter, provider_value, requester_value)
        );
    }
}

#[test]
fn shards_differing_in_index_count_or_salt_are_refused() {
    let with = |s| KeyParams {
        shard: s,
        ..KeyParams::default()
    };
    let (p, ours, theirs) =
        mismatch(handshake(with(shard(1, 4, 1)), NOW, with(shard(0, 4, 1))).expect_err("index"));
    assert_eq!(
        (p, ours.as_str(), theirs.as_str()),
        ("shard (--shard)", "0/4", "1/4")
    );
    let (p, _, _) =
        mismatch(handshake(with(shard(0, 2, 1)), NOW, with(shard(0, 4, 1))).expect_err("count"));
    assert_eq!(p, "shard (--shard)");
    let (p, ours, theirs) =
        mismatch(handshake(with(shard(0, 4, 1)), NOW, with(shard(0, 4, 2))).expect_err("salt"));
    assert_eq!(p, "shard salt (--shard-salt)");
    assert_ne!(ours, theirs);
}

#[test]
fn hellos_older_than_the_lifetime_or_from_the_future_are_refused() {
    let keys = KeyParams::default();
    handshake(keys, NOW - HELLO_LIFETIME, keys).expect("at the limit");
    handshake(keys, NOW + CLOCK_SKEW, keys).expect("small skew");
    for created in [NOW - HELLO_LIFETIME - 1, NOW + CLOCK_SKEW + 1, 0] {
        assert_eq!(
            handshake(keys, created, keys).expect_err("stale"),
            EngineError::HelloExpired { created, now: NOW }
        );
    }
}

#[test]
fn an_accept_that_changes_the_key_parameters_is_refused_by_the_requester() {
    let mut p = parties();
    let (mut alice, hello) = request(&mut p, 8, NOW).unwrap();
    let (_, mut accept) = accept(&mut p, &hello).unwrap();
    accept.keys.casefold = true;
    accept.signature =
        p.b.signer()
            .identity
            .sign(HELLO_DOMAIN, &accept.signed_bytes());
    let (parameter, _, _) = mismatch(
        alice
            .on_accept(&accept, &p.b.peer_keys())
            .expect_err("changed"),
    );
    assert_eq!(parameter, "case folding (--casefold)");
}

/// A provider that answers in another group (or another signing mode,
/// reveal or batch size) than proposed is refused before any element, even
/// with the accept correctly signed.
#[test]
fn an_accept_that_changes_the_group_or_another_proposed_parameter_is_refused() {
    let other_group = match support::group() {
        GroupId::Ristretto255 => GroupId::X25519,
        GroupId::X25519 => GroupId::Ristretto255,
    };
    type Change = Box<dyn Fn(&mut Hello)>;
    let changes: [(&str, Change); 3] = [
        ("group", Box::new(move |a| a.group = other_group)),
        ("mode", Box::new(|a| a.mode = SigningMode::None)),
        ("batch size", Box::new(|a| a.batch_size += 1)),
    ];
    for (what, change) in changes {
        let mut p = parties();
        let (mut alice, hello) = request(&mut p, 8, NOW).unwrap();
        let (_, mut accept) = accept(&mut p, &hello).unwrap();
        change(&mut accept);
        accept.signature =
            p.b.signer()
                .identity
                .sign(HELLO_DOMAIN, &accept.signed_bytes());
        assert_eq!(
            alice.on_accept(&accept, &p.b.peer_keys()),
            Err(EngineError::Handshake(
                "the accept changes the proposed parameters".into()
            )),
            "{what}"
        );
    }
}

fn aligned_rounds() -> (Session, Session, Parties) {
    let r = support::rounds(7, Reveal::Both, true);
    (r.alice, r.bob, r.parties)
}

#[test]
fn an_aligned_session_needs_reveal_both_and_the_providers_consent() {
    let mut p = parties();
    let keys = KeyParams::default();
    let params = SessionParams {
        align: true,
        ..SessionParams::fresh(
            support::group(),
            SigningMode::Element,
            Reveal::Requester,
            8,
            keys,
            NOW,
            &mut p.rng,
        )
    };
    let err = Session::request(params, &p.a.signer(), &p.b.peer_keys(), 3, &mut p.rng)
        .expect_err("align without reveal both");
    assert!(
        matches!(err, EngineError::Handshake(ref m) if m.contains("needs reveal `both`")),
        "{err}"
    );
    let params = SessionParams {
        reveal: Reveal::Both,
        ..params
    };
    let (_, hello) =
        Session::request(params, &p.a.signer(), &p.b.peer_keys(), 3, &mut p.rng).unwrap();
    let err = Session::accept(
        &hello,
        &p.b.signer(),
        &p.a.peer_keys(),
        3,
        &AcceptPolicy::default(),
        NOW,
        &mut p.rng,
    )
    .expect_err("provider does not agree");
    assert_eq!(err, EngineError::AlignRefused);
}

#[test]
fn the_pseudonym_key_is_shared_and_alignment_digests_are_compared_in_receipts() {
    let (mut alice, mut bob, p) = aligned_rounds();
    let (ka, kb) = (alice.pseudonym_key().unwrap(), bob.pseudonym_key().unwrap());
    assert_eq!(ka.tag(b"customer"), kb.tag(b"customer"));
    assert_ne!(ka.tag(b"customer"), ka.tag(b"customer2"));
    let provider_round2 = bob.receipt(&p.b.signer(), None).unwrap();
    alice.set_alignment([1; 32]);
    alice
        .check_receipt(&provider_round2, &p.b.peer_keys(), None)
        .expect("the provider's round-2 receipt precedes its alignment");
    let requester = alice.receipt(&p.a.signer(), Some(3)).unwrap();
    assert_eq!(requester.alignment, Some([1; 32]));
    bob.set_alignment([2; 32]);
    assert_eq!(
        bob.check_receipt(&requester, &p.a.peer_keys(), Some(3)),
        Err(EngineError::ReceiptMismatch(
            "alignment digest (the two aligned outputs would not line up)".into()
        ))
    );
    bob.set_alignment([1; 32]);
    bob.check_receipt(&requester, &p.a.peer_keys(), Some(3))
        .expect("equal digests");
}

#[test]
fn an_aligned_requester_receipt_without_a_digest_is_refused() {
    let (mut alice, mut bob, p) = aligned_rounds();
    let unaligned = alice.receipt(&p.a.signer(), Some(3)).unwrap();
    bob.set_alignment([1; 32]);
    assert_eq!(
        bob.check_receipt(&unaligned, &p.a.peer_keys(), Some(3)),
        Err(EngineError::ReceiptMismatch(
            "alignment digest (missing from an aligned session's receipt)".into()
        ))
    );
}

/// A batch size outside 1..=MAX_BATCH_SIZE: the requester refuses to open
/// the session; a provider refuses a hello stating it (signed correctly).
#[test]
fn batch_sizes_outside_the_bounds_are_refused_on_both_sides() {
    use sotto_psi::engine::MAX_BATCH_SIZE;
    let open = |batch_size: u32| request(&mut parties(), batch_size, NOW).map(|_| ());
    let bounds = format!("batch size must be 1..={MAX_BATCH_SIZE}");
    assert_eq!(open(0), Err(EngineError::Handshake(bounds.clone())));
    assert_eq!(
        open(MAX_BATCH_SIZE + 1),
        Err(EngineError::Handshake(bounds))
    );
    open(1).expect("one is allowed");
    open(MAX_BATCH_SIZE).expect("the maximum is allowed");

    for stated in [0, MAX_BATCH_SIZE + 1, MAX_BATCH_SIZE] {
        let mut p = parties();
        let (_, mut hello) = request(&mut p, 8, NOW).unwrap();
        hello.batch_size = stated;
        hello.signature =
            p.a.signer()
                .identity
                .sign(HELLO_DOMAIN, &hello.signed_bytes());
        let refused = accept(&mut p, &hello).map(|_| ());
        if stated == MAX_BATCH_SIZE {
            refused.expect("the maximum is accepted");
            continue;
        }
        assert_eq!(
            refused,
            Err(EngineError::Handshake(format!(
                "batch size {stated} is outside 1..={MAX_BATCH_SIZE}"
            )))
        );
    }
}

/// The accept carries the provider's own time (it signs when it answered),
/// not a copy of the hello's; the requester counts its signature once.
#[test]
fn the_accept_is_dated_by_the_provider_and_counted_once() {
    let mut p = parties();
    let created = NOW - 3600;
    let (mut requester, hello) = request(&mut p, 8, created).unwrap();
    assert_eq!(hello.created, created);
    let (_, accept) = accept(&mut p, &hello).unwrap();
    assert_eq!(accept.created, NOW);
    // The requester counts the accept's signature as verified, once.
    assert_eq!(requester.counts().verified, 0);
    requester.on_accept(&accept, &p.b.peer_keys()).unwrap();
    assert_eq!(requester.counts().verified, 1);
}

/// Every test above, again in the x25519 group on both of its backends.
#[test]
fn every_test_of_this_file_passes_in_x25519_too() {
    support::rerun_in_x25519("every_test_of_this_file_passes_in_x25519_too");
}
