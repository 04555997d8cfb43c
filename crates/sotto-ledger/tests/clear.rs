//! Plaintext mode's two channels, each check on its own: the clear copy of a
//! transaction's writes opens only at its node, for its transaction; the
//! load channel is granted only to the calling, current, signing member,
//! for this ledger, node, moment and keys, and its values open only for
//! their key and version.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use prost::Message;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::identity::{IdentityKey, IdentityPublic};
use sotto_ledger::clear::{
    ask, open_copy, seal_copy, ChannelAsk, ChannelRequest, ClearError, Judge, CHANNEL_SKEW_MS,
};
use sotto_ledger::packet::Version;

const LEDGER: [u8; 32] = [7; 32];
const NOW: u64 = 1_764_547_200_000;

struct Setup {
    rng: ChaCha20Rng,
    node: IdentityKey,
    member: IdentityKey,
    members: BTreeMap<String, IdentityPublic>,
}

fn setup() -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let node = IdentityKey::generate(&mut rng);
    let member = IdentityKey::generate(&mut rng);
    let members = BTreeMap::from([("c1".to_owned(), member.public())]);
    Setup {
        rng,
        node,
        member,
        members,
    }
}

fn judge<'a>(s: &'a Setup, caller: &'a str, now_ms: u64) -> Judge<'a> {
    Judge {
        ledger: &LEDGER,
        me: "b2",
        caller,
        members: &s.members,
        now_ms,
    }
}

const KEYS: [[u8; 32]; 2] = [[1; 32], [2; 32]];

#[test]
fn a_clear_copy_opens_only_at_its_node_for_its_transaction() {
    let mut s = setup();
    let writes = [([1u8; 32], &b"cust-1/100"[..]), ([2u8; 32], &b"7"[..])];
    let copy = seal_copy(
        "b2",
        &s.node.public(),
        &LEDGER,
        &[9; 16],
        &writes,
        &mut s.rng,
    )
    .expect("seal");
    let key = s.node.to_hpke().expect("key");
    let values = open_copy(&key, &LEDGER, &[9; 16], "b2", &copy.sealed).expect("opens");
    assert_eq!(values[&[1u8; 32]], b"cust-1/100");
    assert_eq!(values[&[2u8; 32]], b"7");
    let other = s.member.to_hpke().expect("key");
    let refused = |key, ledger, tx: &[u8], me| open_copy(key, ledger, tx, me, &copy.sealed);
    assert_eq!(
        refused(&other, &LEDGER, &[9; 16], "b2"),
        Err(ClearError::CopySealed),
        "another node's key"
    );
    assert_eq!(
        refused(&key, &LEDGER, &[8; 16], "b2"),
        Err(ClearError::CopySealed),
        "moved to another transaction"
    );
    assert_eq!(
        refused(&key, &[6; 32], &[9; 16], "b2"),
        Err(ClearError::CopySealed),
        "another ledger"
    );
    assert_eq!(
        refused(&key, &LEDGER, &[9; 16], "b1"),
        Err(ClearError::CopySealed),
        "another node's name"
    );
}

#[test]
fn a_granted_channel_carries_values_for_their_key_and_version_only() {
    let mut s = setup();
    let (asked, secret) = ask(&s.member, "c1", &LEDGER, "b2", &KEYS, NOW, &mut s.rng);
    let mut rng = s.rng.clone();
    let (node_key, sealed_reply_key) = judge(&s, "c1", NOW + 1_000)
        .grant(&asked, &KEYS, &mut rng)
        .expect("granted");
    let version = Some(Version { block: 3, tx: 1 });
    let sealed = node_key
        .seal_value(&KEYS[0], version, b"cust-1/100", &mut rng)
        .expect("seal");
    let enclave_key = secret.open(&sealed_reply_key).expect("reply key");
    assert_eq!(
        enclave_key.open_value(&KEYS[0], version, &sealed),
        Ok(b"cust-1/100".to_vec())
    );
    assert_eq!(
        enclave_key.open_value(&KEYS[1], version, &sealed),
        Err(ClearError::ReplySealed),
        "moved to another key"
    );
    assert_eq!(
        enclave_key.open_value(&KEYS[0], Some(Version { block: 2, tx: 0 }), &sealed),
        Err(ClearError::ReplySealed),
        "claimed at another version"
    );
    let (_, other_secret) = ask(&s.member, "c1", &LEDGER, "b2", &KEYS, NOW, &mut rng);
    assert_eq!(
        other_secret.open(&sealed_reply_key).err(),
        Some(ClearError::ReplySealed),
        "the reply key opens only for the channel that asked"
    );
}

/// Grants `asked` at b2 to `caller` at `now`, for `keys`; returns the
/// refusal.
fn refusal(s: &Setup, asked: &ChannelAsk, caller: &str, now: u64, keys: &[[u8; 32]]) -> ClearError {
    judge(s, caller, now)
        .grant(asked, keys, &mut s.rng.clone())
        .expect_err("refused")
}

/// A channel request changed by `change` and signed by `signer`.
fn altered(
    s: &Setup,
    signer: &IdentityKey,
    change: impl FnOnce(&mut ChannelRequest),
) -> ChannelAsk {
    let (asked, _) = ask(
        &s.member,
        "c1",
        &LEDGER,
        "b2",
        &KEYS,
        NOW,
        &mut s.rng.clone(),
    );
    let mut request = ChannelRequest::decode(asked.request.as_slice()).expect("decodes");
    change(&mut request);
    let request = request.encode_to_vec();
    let signature = signer
        .sign(sotto_ledger::clear::CHANNEL_DOMAIN, &request)
        .to_vec();
    ChannelAsk { request, signature }
}

#[test]
fn a_channel_is_refused_for_each_reason_it_names() {
    let s = setup();
    let member = s.member.duplicate();
    let good = altered(&s, &member, |_| {});
    assert!(judge(&s, "c1", NOW)
        .grant(&good, &KEYS, &mut s.rng.clone())
        .is_ok());
    assert_eq!(
        refusal(&s, &ChannelAsk::default(), "c1", NOW, &KEYS),
        ClearError::NoChannel
    );
    let garbage = ChannelAsk {
        request: vec![0xff; 5],
        signature: good.signature.clone(),
    };
    assert!(matches!(
        refusal(&s, &garbage, "c1", NOW, &KEYS),
        ClearError::Malformed(_)
    ));
    let format = altered(&s, &member, |r| r.format = 9);
    assert_eq!(
        refusal(&s, &format, "c1", NOW, &KEYS),
        ClearError::Format(9)
    );
    let ledger = altered(&s, &member, |r| r.ledger = vec![6; 32]);
    assert_eq!(
        refusal(&s, &ledger, "c1", NOW, &KEYS),
        ClearError::WrongLedger
    );
    let node = altered(&s, &member, |r| r.node = "b1".into());
    assert_eq!(
        refusal(&s, &node, "c1", NOW, &KEYS),
        ClearError::WrongNode("b1".into())
    );
    assert_eq!(
        refusal(&s, &good, "c2", NOW, &KEYS),
        ClearError::NotCaller {
            member: "c1".into(),
            caller: "c2".into()
        }
    );
    let stranger = altered(&s, &member, |r| r.member = "c9".into());
    assert_eq!(
        refusal(&s, &stranger, "c9", NOW, &KEYS),
        ClearError::NotMember("c9".into())
    );
    let forged = altered(&s, &s.node, |_| {});
    assert_eq!(
        refusal(&s, &forged, "c1", NOW, &KEYS),
        ClearError::BadSignature("c1".into())
    );
    let late = NOW + CHANNEL_SKEW_MS + 1_000;
    assert_eq!(
        refusal(&s, &good, "c1", late, &KEYS),
        ClearError::Stale(CHANNEL_SKEW_MS / 1000 + 1)
    );
    assert_eq!(
        refusal(&s, &good, "c1", NOW - CHANNEL_SKEW_MS - 1_000, &KEYS),
        ClearError::Stale(CHANNEL_SKEW_MS / 1000 + 1),
        "from the future too"
    );
    assert!(judge(&s, "c1", NOW + CHANNEL_SKEW_MS)
        .grant(&good, &KEYS, &mut s.rng.clone())
        .is_ok());
    assert_eq!(
        refusal(&s, &good, "c1", NOW, &KEYS[..1]),
        ClearError::KeysDiffer
    );
    let no_key = altered(&s, &member, |r| r.channel_key = vec![1; 5]);
    assert!(matches!(
        refusal(&s, &no_key, "c1", NOW, &KEYS),
        ClearError::Malformed(_)
    ));
}
