//! Receipts and streams: every field a receipt is checked on, receipts swapped
//! between sessions, two sides whose transcripts differ, and a correctly
//! signed batch of the peer's other stream offered in place of the one
//! expected, and an invalid element named by its position in the stream.
//! Each is refused with its one specific error.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod support;

use sotto_crypto::group::{ElementFault, GroupId};
use sotto_psi::error::Rejection;
use sotto_psi::wire::{Receipt, Reveal, Role, StreamKind, RECEIPT_DOMAIN};
use sotto_psi::EngineError;
use support::{rounds, rounds_in, Rounds};

fn mismatch(what: &str) -> Result<(), EngineError> {
    Err(EngineError::ReceiptMismatch(what.to_owned()))
}

/// Each field of the provider's receipt, changed and signed again by the
/// provider itself (a buggy or dishonest peer): the requester names the
/// field. Changed without a new signature: the signature fails.
#[test]
fn every_field_of_a_receipt_is_checked() {
    type Change = fn(&mut Receipt);
    let cases: [(&str, Change, &str); 6] = [
        (
            "sid",
            |r| r.sid = sotto_crypto::ids::SessionId::from_bytes([9; 16]),
            "session id",
        ),
        ("signer", |r| r.signer = Role::Requester, "identities"),
        ("requester", |r| r.requester = r.provider, "identities"),
        ("provider", |r| r.provider = r.requester, "identities"),
        ("sizes", |r| r.provider_size += 1, "input sizes"),
        (
            "transcript",
            |r| r.transcript[0] ^= 1,
            "transcript hash (the two sides saw different messages)",
        ),
    ];
    for (field, change, expected) in cases {
        let mut r = rounds(1, Reveal::Requester, false);
        let honest = r.bob.receipt(&r.parties.b.signer(), None).unwrap();
        let mut altered = honest.clone();
        change(&mut altered);
        assert_eq!(
            r.alice
                .check_receipt(&altered, &r.parties.b.peer_keys(), Some(3)),
            Err(EngineError::BadSignature { what: "receipt" }),
            "{field}, unsigned"
        );
        altered.signature = r
            .parties
            .b
            .signer()
            .identity
            .sign(RECEIPT_DOMAIN, &altered.signed_bytes());
        assert_eq!(
            r.alice
                .check_receipt(&altered, &r.parties.b.peer_keys(), Some(3)),
            mismatch(expected),
            "{field}, signed again"
        );
        r.alice
            .check_receipt(&honest, &r.parties.b.peer_keys(), Some(3))
            .expect("the honest receipt still passes");
    }
}

#[test]
fn a_stated_intersection_size_must_equal_ours() {
    let mut r = rounds(2, Reveal::Both, false);
    let mut requester = r.alice.receipt(&r.parties.a.signer(), Some(3)).unwrap();
    requester.intersection_size = Some(4);
    requester.signature = r
        .parties
        .a
        .signer()
        .identity
        .sign(RECEIPT_DOMAIN, &requester.signed_bytes());
    assert_eq!(
        r.bob
            .check_receipt(&requester, &r.parties.a.peer_keys(), Some(3)),
        mismatch("intersection size")
    );
}

#[test]
fn a_receipt_of_another_session_is_refused_by_its_session_id() {
    let mut first = rounds(3, Reveal::Requester, false);
    let mut second = rounds(4, Reveal::Requester, false);
    let other = second
        .bob
        .receipt(&second.parties.b.signer(), None)
        .unwrap();
    assert_eq!(
        first
            .alice
            .check_receipt(&other, &first.parties.b.peer_keys(), Some(3)),
        mismatch("session id")
    );
}

#[test]
fn sides_that_saw_different_streams_disagree_only_in_the_transcript() {
    let mut r = rounds(5, Reveal::Requester, false);
    // The provider's record of stream u differs from what the requester
    // sent (everything else equal): its honest receipt names another
    // transcript.
    r.bob.record_stream(StreamKind::RequesterEncrypted, [7; 32]);
    let receipt = r.bob.receipt(&r.parties.b.signer(), None).unwrap();
    assert_eq!(
        r.alice
            .check_receipt(&receipt, &r.parties.b.peer_keys(), Some(3)),
        mismatch("transcript hash (the two sides saw different messages)")
    );
}

#[test]
fn a_signed_batch_of_the_other_stream_is_refused_as_such() {
    let r = rounds(6, Reveal::Requester, false);
    let peer = r.parties.b.peer_keys();
    let mut receiver = r.alice.receiver(StreamKind::Reencrypted, 6);
    let err = receiver
        .check(&r.v[0], &peer)
        .expect_err("v batch where w is expected");
    assert_eq!(
        err,
        EngineError::BatchRejected {
            round: 2,
            stream: StreamKind::Reencrypted,
            batch: 0,
            reason: Rejection::WrongStream {
                expected: StreamKind::Reencrypted,
                found: StreamKind::ProviderEncrypted,
            },
        }
    );
    // A batch of another round (the requester's own u, replayed back).
    let mut receiver = r.alice.receiver(StreamKind::ProviderEncrypted, 6);
    let err = receiver
        .check(&r.u[0], &peer)
        .expect_err("u batch where v is expected");
    assert!(
        matches!(
            err,
            EngineError::BatchRejected {
                reason: Rejection::WrongStream {
                    expected: StreamKind::ProviderEncrypted,
                    found: StreamKind::RequesterEncrypted,
                },
                ..
            }
        ),
        "{err}"
    );
}

/// The report's signature counts: making a receipt counts one signature
/// made, and only a receipt that passes every check counts one verified.
#[test]
fn receipts_are_counted_once_each_and_only_when_they_pass() {
    let mut r = rounds(7, Reveal::Requester, false);
    let (alice_before, bob_before) = (r.alice.counts(), r.bob.counts());
    let receipt = r.bob.receipt(&r.parties.b.signer(), None).unwrap();
    assert_eq!(r.bob.counts().made, bob_before.made + 1);
    assert_eq!(r.bob.counts().verified, bob_before.verified);
    let mut altered = receipt.clone();
    altered.provider_size += 1;
    r.alice
        .check_receipt(&altered, &r.parties.b.peer_keys(), Some(3))
        .expect_err("altered");
    assert_eq!(r.alice.counts(), alice_before);
    r.alice
        .check_receipt(&receipt, &r.parties.b.peer_keys(), Some(3))
        .unwrap();
    assert_eq!(r.alice.counts().verified, alice_before.verified + 1);
    assert_eq!(r.alice.counts().made, alice_before.made);
}

/// Bob multiplies round-1 batch 1 with its second element replaced by
/// `element`; the refusal must name the element by its position in the whole
/// stream (the batch's first position plus its index), not in the batch.
fn second_element_is_refused(r: &Rounds, element: [u8; 32], fault: ElementFault) {
    let mut batch = r.u[1].clone();
    assert!(batch.header.first_position > 0);
    batch.elements[1] = element;
    let err = r.bob.multiply(&batch).expect_err("refused");
    assert_eq!(
        err,
        EngineError::BatchRejected {
            round: 1,
            stream: StreamKind::RequesterEncrypted,
            batch: 1,
            reason: Rejection::InvalidElement {
                position: batch.header.first_position + 1,
                fault,
            },
        }
    );
}

#[test]
fn an_invalid_element_is_named_by_its_stream_position() {
    let fault = match support::group() {
        GroupId::Ristretto255 => ElementFault::NotRistretto255,
        GroupId::X25519 => ElementFault::NonCanonicalU,
    };
    second_element_is_refused(&rounds(8, Reveal::Requester, false), [0xff; 32], fault);
}

#[test]
fn an_x25519_element_of_small_order_is_named_by_its_stream_position() {
    let r = rounds_in(GroupId::X25519, 9, Reveal::Requester, false);
    second_element_is_refused(&r, [0; 32], ElementFault::SmallOrder);
}

/// A receiver's progress (what the online driver asks it to know what to
/// wait for and when a stream is done) follows the batches it accepted.
#[test]
fn a_receivers_progress_follows_the_batches_it_accepted() {
    let r = rounds(9, Reveal::Requester, false);
    let peer = r.parties.a.peer_keys();
    let mut receiver = r.bob.receiver(StreamKind::RequesterEncrypted, 6);
    assert_eq!((receiver.received(), receiver.next_batch()), (0, 0));
    assert!(!receiver.is_complete());
    let mut received = 0;
    for (i, batch) in r.u.iter().enumerate() {
        receiver.check(batch, &peer).unwrap();
        received += batch.elements.len() as u64;
        assert_eq!(receiver.received(), received);
        assert_eq!(receiver.next_batch() as usize, i + 1);
        assert_eq!(receiver.is_complete(), i + 1 == r.u.len());
    }
    assert_eq!((received, r.u.len()), (6, 2));
}

/// Every test above, again in the x25519 group on both of its backends.
#[test]
fn every_test_of_this_file_passes_in_x25519_too() {
    support::rerun_in_x25519("every_test_of_this_file_passes_in_x25519_too");
}
