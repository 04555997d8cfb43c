//! An active attacker between the parties alters, drops, duplicates,
//! reorders and replays elements and batches. Every attack must be refused
//! with the specific error, before anything is computed.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::ids::SessionId;
use sotto_psi::engine::{AcceptPolicy, Session, SessionParams};
use sotto_psi::local::LocalParty;
use sotto_psi::steps::{check_stream, send_own};
use sotto_psi::wire::{Batch, KeyParams, Reveal, SigningMode, StreamKind, HEADER_DOMAIN};
use sotto_psi::{EngineError, Rejection};

mod support;

const N: usize = 20;
const BATCH: u32 = 8;
/// The clock of every party in these tests, Unix seconds.
const NOW: u64 = 1_800_000_000;

struct Setup {
    provider: Session,
    requester_party: LocalParty,
    batches: Vec<Batch>,
}

fn setup(mode: SigningMode, seed: u64) -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let a = LocalParty::generate(
        &"a".parse().expect("name"),
        2,
        &mut ChaCha20Rng::seed_from_u64(1),
    );
    let b = LocalParty::generate(
        &"b".parse().expect("name"),
        2,
        &mut ChaCha20Rng::seed_from_u64(2),
    );
    let params = SessionParams {
        sid: SessionId::random(&mut rng),
        group: support::group(),
        mode,
        reveal: Reveal::Requester,
        batch_size: BATCH,
        keys: KeyParams::default(),
        created: NOW,
        align: false,
    };
    let policy = AcceptPolicy {
        modes: SigningMode::ALL.to_vec(),
        keys: KeyParams::default(),
        allow_align: false,
    };
    let keys = sotto_psi::keystore::KeyStore::from_keys((0..N).map(|i| format!("k{i}")));
    let (mut alice, hello) =
        Session::request(params, &a.signer(), &b.peer_keys(), N as u64, &mut rng).expect("hello");
    let (provider, accept) = Session::accept(
        &hello,
        &b.signer(),
        &a.peer_keys(),
        5,
        &policy,
        NOW,
        &mut rng,
    )
    .expect("accept");
    alice.on_accept(&accept, &b.peer_keys()).expect("on_accept");
    let batches = send_own(
        &mut alice,
        StreamKind::RequesterEncrypted,
        &keys,
        &a.signer(),
        &|_| {},
    )
    .expect("send");
    Setup {
        provider,
        requester_party: a,
        batches,
    }
}

fn verify(s: &mut Setup, batches: &[Batch]) -> Result<(), EngineError> {
    let peer = s.requester_party.peer_keys();
    check_stream(
        &mut s.provider,
        StreamKind::RequesterEncrypted,
        N as u64,
        batches,
        &peer,
        &|_| {},
    )
}

fn rejection(err: EngineError) -> (u32, Rejection) {
    match err {
        EngineError::BatchRejected {
            batch,
            reason,
            round: 1,
            ..
        } => (batch, reason),
        other => panic!("expected a round-1 batch rejection, got {other}"),
    }
}

#[test]
fn untouched_stream_passes() {
    let mut s = setup(SigningMode::Element, 1);
    let batches = s.batches.clone();
    verify(&mut s, &batches).expect("honest stream verifies");
}

#[test]
fn flipped_bit_in_an_element_is_named() {
    let mut s = setup(SigningMode::Element, 2);
    let mut batches = s.batches.clone();
    batches[1].elements[3][7] ^= 0x10;
    let (batch, reason) = rejection(verify(&mut s, &batches).expect_err("tampered"));
    assert_eq!(batch, 1);
    assert_eq!(
        reason,
        Rejection::TamperedElements {
            positions: vec![11]
        }
    );
}

#[test]
fn flipped_bit_in_a_signature_is_named() {
    let mut s = setup(SigningMode::Element, 3);
    let mut batches = s.batches.clone();
    batches[2].signatures[1][20] ^= 0x01;
    let (batch, reason) = rejection(verify(&mut s, &batches).expect_err("tampered"));
    assert_eq!(batch, 2);
    assert_eq!(
        reason,
        Rejection::TamperedElements {
            positions: vec![17]
        }
    );
}

#[test]
fn flipped_bit_in_a_batch_header_is_refused() {
    let mut s = setup(SigningMode::Element, 4);
    let mut batches = s.batches.clone();
    batches[0].header.digest[0] ^= 0x80;
    let (batch, reason) = rejection(verify(&mut s, &batches).expect_err("tampered"));
    assert_eq!((batch, reason), (0, Rejection::BadHeaderSignature));
}

#[test]
fn dropped_element_is_refused() {
    let mut s = setup(SigningMode::Element, 5);
    let mut batches = s.batches.clone();
    batches[0].elements.remove(2);
    batches[0].signatures.remove(2);
    let (batch, reason) = rejection(verify(&mut s, &batches).expect_err("dropped"));
    assert_eq!(batch, 0);
    assert_eq!(
        reason,
        Rejection::CountMismatch {
            announced: BATCH,
            elements: BATCH as usize - 1,
            signatures: BATCH as usize - 1
        }
    );
}

#[test]
fn duplicated_element_is_named() {
    let mut s = setup(SigningMode::Element, 6);
    let mut batches = s.batches.clone();
    batches[0].elements[5] = batches[0].elements[4];
    batches[0].signatures[5] = batches[0].signatures[4];
    let (batch, reason) = rejection(verify(&mut s, &batches).expect_err("duplicated"));
    assert_eq!(
        (batch, reason),
        (0, Rejection::TamperedElements { positions: vec![5] })
    );
}

#[test]
fn reordered_elements_are_named() {
    let mut s = setup(SigningMode::Element, 7);
    let mut batches = s.batches.clone();
    batches[1].elements.swap(0, 6);
    batches[1].signatures.swap(0, 6);
    let (batch, reason) = rejection(verify(&mut s, &batches).expect_err("reordered"));
    assert_eq!(
        (batch, reason),
        (
            1,
            Rejection::TamperedElements {
                positions: vec![8, 14]
            }
        )
    );
}

#[test]
fn reordered_batches_and_dropped_batch_are_refused() {
    let mut s = setup(SigningMode::Element, 8);
    let mut swapped = s.batches.clone();
    swapped.swap(0, 1);
    let (batch, reason) = rejection(verify(&mut s, &swapped).expect_err("reordered"));
    assert_eq!(batch, 1, "the batch that arrived first is named");
    assert_eq!(
        reason,
        Rejection::OutOfOrder {
            expected: 0,
            found: 1
        }
    );
    let mut s = setup(SigningMode::Element, 8);
    let mut short = s.batches.clone();
    short.pop();
    match verify(&mut s, &short).expect_err("dropped batch") {
        EngineError::StreamIncomplete {
            expected, received, ..
        } => assert_eq!((expected, received), (20, 16)),
        other => panic!("unexpected {other}"),
    }
}

#[test]
fn batch_replayed_from_another_session_is_refused() {
    let other = setup(SigningMode::Element, 9);
    let mut s = setup(SigningMode::Element, 10);
    let mut batches = s.batches.clone();
    batches[1] = other.batches[1].clone();
    let (batch, reason) = rejection(verify(&mut s, &batches).expect_err("replayed"));
    assert_eq!(batch, 1);
    assert_eq!(
        reason,
        Rejection::ForeignSession {
            expected: s.provider.params().sid,
            found: other.provider.params().sid,
        }
    );
}

#[test]
fn digest_mode_detects_alteration_without_positions() {
    let mut s = setup(SigningMode::Digest, 11);
    let mut batches = s.batches.clone();
    batches[2].elements[0][0] ^= 1;
    let (batch, reason) = rejection(verify(&mut s, &batches).expect_err("tampered"));
    assert_eq!((batch, reason), (2, Rejection::DigestMismatch));
    let mut s = setup(SigningMode::Digest, 12);
    let mut batches = s.batches.clone();
    batches[0].digest_signature = batches[1].digest_signature;
    let (batch, reason) =
        rejection(verify(&mut s, &batches).expect_err("swapped digest signature"));
    assert_eq!((batch, reason), (0, Rejection::BadDigestSignature));
}

#[test]
fn batch_from_an_unknown_sender_is_refused() {
    let mut s = setup(SigningMode::Element, 13);
    let stranger = LocalParty::generate(
        &"x".parse().expect("name"),
        2,
        &mut ChaCha20Rng::seed_from_u64(99),
    );
    let peer = stranger.peer_keys();
    let batches = s.batches.clone();
    let err = check_stream(
        &mut s.provider,
        StreamKind::RequesterEncrypted,
        N as u64,
        &batches,
        &peer,
        &|_| {},
    )
    .expect_err("wrong sender");
    assert!(matches!(rejection(err).1, Rejection::WrongSender { .. }));
}

#[test]
fn hello_from_unpinned_peer_or_altered_hello_is_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    let a = LocalParty::generate(&"a".parse().expect("name"), 2, &mut rng);
    let b = LocalParty::generate(&"b".parse().expect("name"), 2, &mut rng);
    let mallory = LocalParty::generate(&"a".parse().expect("name"), 2, &mut rng);
    let params = SessionParams {
        sid: SessionId::random(&mut rng),
        group: support::group(),
        mode: SigningMode::Element,
        reveal: Reveal::Requester,
        batch_size: 8,
        keys: KeyParams::default(),
        created: NOW,
        align: false,
    };
    let policy = AcceptPolicy::default();
    let (_, hello) =
        Session::request(params, &mallory.signer(), &b.peer_keys(), 3, &mut rng).expect("hello");
    let err = Session::accept(
        &hello,
        &b.signer(),
        &a.peer_keys(),
        3,
        &policy,
        NOW,
        &mut rng,
    )
    .expect_err("unknown");
    assert!(
        matches!(err, EngineError::Handshake(ref m) if m.contains("not the pinned peer")),
        "{err}"
    );
    let (_, mut hello) =
        Session::request(params, &a.signer(), &b.peer_keys(), 3, &mut rng).expect("hello");
    hello.input_size += 1;
    let err = Session::accept(
        &hello,
        &b.signer(),
        &a.peer_keys(),
        3,
        &policy,
        NOW,
        &mut rng,
    )
    .expect_err("altered");
    assert_eq!(err, EngineError::BadSignature { what: "hello" });
    let params_none = SessionParams {
        mode: SigningMode::None,
        ..params
    };
    let (_, hello) =
        Session::request(params_none, &a.signer(), &b.peer_keys(), 3, &mut rng).expect("hello");
    let err = Session::accept(
        &hello,
        &b.signer(),
        &a.peer_keys(),
        3,
        &policy,
        NOW,
        &mut rng,
    )
    .expect_err("policy");
    assert!(
        matches!(err, EngineError::Handshake(ref m) if m.contains("not allowed")),
        "{err}"
    );
}

/// Sealing a batch counts every signature it made, in every mode: the
/// header's, the digest's, one per element (none in mode none).
#[test]
fn sealing_counts_every_signature_made_in_every_mode() {
    let provider = LocalParty::generate(
        &"b".parse().expect("name"),
        2,
        &mut ChaCha20Rng::seed_from_u64(2),
    );
    for &mode in SigningMode::ALL {
        let mut s = setup(mode, 20);
        let before = s.provider.counts().made;
        let elements = s.batches[0].elements.clone();
        let batch = s.provider.seal(
            StreamKind::ProviderEncrypted,
            0,
            0,
            elements,
            &provider.signer(),
        );
        let made = u64::from(batch.header_signature.is_some())
            + u64::from(batch.digest_signature.is_some())
            + batch.signatures.len() as u64;
        assert!(before > 0, "{mode}");
        assert_eq!(s.provider.counts().made, before + made, "{mode}");
    }
}

/// The requester's batch with `change` applied and its header signed again
/// by the requester: a sender that announces what it should not.
fn signed_again(s: &Setup, mut batch: Batch, change: impl FnOnce(&mut Batch)) -> Batch {
    change(&mut batch);
    let signer = s.requester_party.signer();
    batch.header_signature = Some(
        signer
            .identity
            .sign(HEADER_DOMAIN, &batch.header.to_bytes()),
    );
    batch
}

/// Sizes a stream cannot hold — an empty batch, one larger than the
/// session's batch size, one running past the announced total — are each
/// refused even when the sender signed them.
#[test]
fn batch_sizes_the_stream_cannot_hold_are_refused() {
    let bad_size = |count: u32, first: u64| Rejection::BadSize {
        count,
        first,
        total: N as u64,
        limit: BATCH,
    };
    let mut s = setup(SigningMode::Element, 30);
    let empty = signed_again(&s, s.batches[0].clone(), |b| {
        b.header.count = 0;
        b.elements.clear();
        b.signatures.clear();
    });
    let err = verify(&mut s, &[empty]).expect_err("empty");
    assert_eq!(rejection(err), (0, bad_size(0, 0)));

    let mut s = setup(SigningMode::Element, 31);
    let mut joined = s.batches[0].clone();
    joined.elements.push(s.batches[1].elements[0]);
    joined.signatures.push(s.batches[1].signatures[0]);
    let large = signed_again(&s, joined, |b| b.header.count = BATCH + 1);
    let err = verify(&mut s, &[large]).expect_err("larger than a batch");
    assert_eq!(rejection(err), (0, bad_size(BATCH + 1, 0)));

    let mut s = setup(SigningMode::Element, 32);
    let mut last = s.batches[2].clone();
    last.elements.push(last.elements[0]);
    last.signatures.push(last.signatures[0]);
    let count = last.elements.len() as u32;
    let past = signed_again(&s, last, |b| b.header.count = count);
    let (first, second) = (s.batches[0].clone(), s.batches[1].clone());
    let err = verify(&mut s, &[first, second, past]).expect_err("past the total");
    assert_eq!(rejection(err), (2, bad_size(count, 2 * u64::from(BATCH))));
}

/// A batch missing one element's signature is refused by count, even with
/// every element present.
#[test]
fn a_batch_missing_one_signature_is_refused_by_count() {
    let mut s = setup(SigningMode::Element, 33);
    let mut batch = s.batches[0].clone();
    batch.signatures.pop();
    let err = verify(&mut s, &[batch]).expect_err("a signature short");
    assert_eq!(
        rejection(err),
        (
            0,
            Rejection::CountMismatch {
                announced: BATCH,
                elements: BATCH as usize,
                signatures: BATCH as usize - 1,
            }
        )
    );
}

/// A receiver counts every signature it verified: the header's, the
/// digest's, one per element.
#[test]
fn a_receiver_counts_every_signature_it_verified() {
    for &mode in SigningMode::ALL {
        let s = setup(mode, 34);
        let peer = s.requester_party.peer_keys();
        let mut receiver = s
            .provider
            .receiver(StreamKind::RequesterEncrypted, N as u64);
        for batch in &s.batches {
            receiver.check(batch, &peer).unwrap();
        }
        let expected: u64 = s
            .batches
            .iter()
            .map(|b| {
                u64::from(b.header_signature.is_some())
                    + u64::from(b.digest_signature.is_some())
                    + b.signatures.len() as u64
            })
            .sum();
        assert_eq!(receiver.verified(), expected, "{mode}");
        let per_batch = match mode {
            SigningMode::None => 0,
            SigningMode::Digest => 2,
            SigningMode::Element => 1,
        };
        let elements = if mode == SigningMode::Element { N } else { 0 };
        assert_eq!(expected as usize, 3 * per_batch + elements, "{mode}");
    }
}

/// Every test above, again in the x25519 group on both of its backends.
#[test]
fn every_test_of_this_file_passes_in_x25519_too() {
    support::rerun_in_x25519("every_test_of_this_file_passes_in_x25519_too");
}
