//! The KMS engine without I/O: recovery answers only the owner, names why
//! it refuses and always yields the audit event; answers travel only under
//! the caller's own, unexpired reply channel; retired versions decrypt
//! nothing; rewrap moves to the newest version; public keys are signed and
//! can travel sealed; the rate limit holds per participant.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use rand_core::OsRng;
use sotto_crypto::hpke::HpkeSecretKey;
use sotto_crypto::identity::IdentityKey;
use sotto_kms::audit::AuditEvent;
use sotto_kms::engine::{KmsEngine, PublicKeyAnswer};
use sotto_kms::escrow::{self, Envelope, EscrowHeader, KeyRef, SecretKind};
use sotto_kms::keys::{KeyId, KeyRing};
use sotto_kms::reply_channel::{ChannelRequest, ReplyChannel};
use sotto_kms::{reply, KmsError};

fn engine(rate: u32, burst: u32) -> KmsEngine {
    let kms = KmsEngine::new(
        KeyRing::default(),
        IdentityKey::generate(&mut OsRng),
        rate,
        burst,
    );
    for key in ["bank-a/escrow", "bank-a/layer2", "bank-b/escrow"] {
        let change = kms
            .prepare_key(&key.parse().unwrap(), false, 1, &mut OsRng)
            .unwrap();
        kms.apply(change.record).unwrap();
    }
    kms
}

fn escrow(kms: &KmsEngine, owner: &str, id: &str, keys: &[&str], secret: &[u8]) -> Envelope {
    let chain: Vec<_> = keys
        .iter()
        .map(|k| {
            let answer = kms.public_key(owner, k, None, None, &mut OsRng);
            let Ok(PublicKeyAnswer::Plain(signed)) = answer.result else {
                panic!("public key")
            };
            let statement =
                reply::verify_statement(&kms.signing_public(), &signed.json, &signed.signature)
                    .unwrap();
            (
                KeyRef {
                    key_id: statement.key.key_id.clone(),
                    version: statement.key.version,
                },
                statement.public_key().unwrap(),
            )
        })
        .collect();
    let header = EscrowHeader {
        kind: SecretKind::IntermediateResult,
        owner: owner.into(),
        secret_id: id.into(),
    };
    escrow::seal(header, secret, &chain, &mut OsRng).unwrap()
}

fn open_channel(kms: &KmsEngine, caller: &str, now: Instant) -> ReplyChannel {
    let request = ChannelRequest::new(&mut OsRng);
    let answer = kms.open_channel(caller, &request.public(), now, &mut OsRng);
    assert!(matches!(
        answer.audit,
        Some(AuditEvent::ChannelOpened { ref participant, .. }) if participant == caller
    ));
    let grant = answer.result.unwrap();
    request
        .accept(&kms.signing_public(), caller, &grant)
        .unwrap()
        .0
}

fn recover_through(
    kms: &KmsEngine,
    caller: &str,
    channel: &ReplyChannel,
    envelope: &Envelope,
    now: Instant,
) -> (Result<Vec<u8>, KmsError>, AuditEvent) {
    let answer = kms.recover(
        caller,
        &serde_json::to_vec(envelope).unwrap(),
        channel.id().as_bytes(),
        now,
        &mut OsRng,
    );
    let audit = answer.audit.expect("every recovery is audited");
    let result = answer.result.map(|answer| {
        reply::open_recovered(
            &kms.signing_public(),
            envelope,
            channel,
            &answer.salt,
            &answer.sealed,
        )
        .unwrap()
        .to_vec()
    });
    (result, audit)
}

fn recover(
    kms: &KmsEngine,
    caller: &str,
    envelope: &Envelope,
    now: Instant,
) -> (Result<Vec<u8>, KmsError>, AuditEvent) {
    let channel = open_channel(kms, caller, now);
    recover_through(kms, caller, &channel, envelope, now)
}

#[test]
fn the_owner_recovers_layered_secrets_and_others_are_refused_and_audited() {
    let kms = engine(1000, 1000);
    let now = Instant::now();
    let env = escrow(
        &kms,
        "bank-a",
        "s",
        &["bank-a/escrow", "bank-a/layer2"],
        b"layered secret",
    );
    let (result, audit) = recover(&kms, "bank-a", &env, now);
    assert_eq!(result.unwrap(), b"layered secret");
    assert!(
        matches!(&audit, AuditEvent::RecoveryGranted { keys, .. } if *keys == ["bank-a/escrow@v1", "bank-a/layer2@v1"]),
        "the audit names every key the secret was sealed to: {audit:?}"
    );

    let (result, audit) = recover(&kms, "bank-b", &env, now);
    assert!(
        matches!(&result, Err(KmsError::NotOwner { caller, owner, what }) if caller == "bank-b" && owner == "bank-a" && what == "secret s"),
        "the envelope-owner check: {result:?}"
    );
    assert!(
        matches!(audit, AuditEvent::RecoveryRefused { ref requester, ref owner, .. } if requester == "bank-b" && owner == "bank-a")
    );

    // bank-b relabels the envelope as its own: the associated data no longer matches.
    let mut relabeled = env.clone();
    relabeled.header.owner = "bank-b".into();
    let (result, _) = recover(&kms, "bank-b", &relabeled, now);
    assert!(
        matches!(&result, Err(KmsError::NotOwner { caller, owner, what }) if caller == "bank-b" && owner == "bank-a" && what == "key bank-a/escrow"),
        "the key-owner check: bank-b may not use bank-a's keys: {result:?}"
    );

    let foreign = escrow(&kms, "bank-a", "f", &["bank-b/escrow"], b"sealed to bank-b");
    let (result, _) = recover(&kms, "bank-a", &foreign, now);
    assert!(
        matches!(&result, Err(KmsError::NotOwner { caller, owner, what }) if caller == "bank-a" && owner == "bank-b" && what == "key bank-b/escrow"),
        "{result:?}"
    );

    let mut tampered = env.clone();
    tampered.ciphertext[40] ^= 1;
    let (result, _) = recover(&kms, "bank-a", &tampered, now);
    assert!(matches!(result, Err(KmsError::Escrow(_))));

    let answer = kms.recover("bank-a", b"{ not json", &[0; 16], now, &mut OsRng);
    assert!(matches!(answer.result, Err(KmsError::Malformed { .. })));
    assert!(matches!(
        answer.audit,
        Some(AuditEvent::RecoveryRefused { .. })
    ));
}

#[test]
fn answers_travel_only_under_the_callers_own_open_channel() {
    let kms = engine(1000, 1000).with_channel_ttl(Duration::from_secs(60));
    let now = Instant::now();
    let env = escrow(&kms, "bank-a", "s", &["bank-a/escrow"], b"secret");
    let mine = open_channel(&kms, "bank-a", now);
    let (result, audit) = recover_through(&kms, "bank-a", &mine, &env, now);
    assert_eq!(result.unwrap(), b"secret");
    assert!(
        matches!(audit, AuditEvent::RecoveryGranted { ref channel, .. } if *channel == mine.id().to_string())
    );

    // bank-b names bank-a's channel for its own secret: refused, audited.
    let theirs = escrow(&kms, "bank-b", "t", &["bank-b/escrow"], b"theirs");
    let (result, audit) = recover_through(&kms, "bank-b", &mine, &theirs, now);
    assert!(
        matches!(result, Err(KmsError::NotOwner { ref what, .. }) if what.contains("reply channel"))
    );
    assert!(
        matches!(audit, AuditEvent::RecoveryRefused { ref requester, .. } if requester == "bank-b")
    );

    // The channel expires; a new one works.
    let later = now + Duration::from_secs(60);
    let (result, audit) = recover_through(&kms, "bank-a", &mine, &env, later);
    assert!(matches!(result, Err(KmsError::UnknownChannel { channel }) if channel == mine.id()));
    assert!(matches!(audit, AuditEvent::RecoveryRefused { .. }));
    let fresh = open_channel(&kms, "bank-a", later);
    assert_eq!(
        recover_through(&kms, "bank-a", &fresh, &env, later)
            .0
            .unwrap(),
        b"secret"
    );

    // A channel id of the wrong length is malformed input, refused and audited.
    let answer = kms.recover(
        "bank-a",
        &serde_json::to_vec(&env).unwrap(),
        &[1; 15],
        later,
        &mut OsRng,
    );
    assert!(
        matches!(answer.result, Err(KmsError::Malformed { ref what, .. }) if what == "channel")
    );
    assert!(matches!(
        answer.audit,
        Some(AuditEvent::RecoveryRefused { .. })
    ));

    // A malformed agent key opens no channel and leaves no audit entry.
    let answer = kms.open_channel("bank-a", &[0; 32], later, &mut OsRng);
    assert!(matches!(answer.result, Err(KmsError::Malformed { .. })));
    assert!(answer.audit.is_none());
}

#[test]
fn retired_versions_decrypt_nothing_and_rewrap_moves_to_the_newest() {
    let kms = engine(1000, 1000);
    let now = Instant::now();
    let key: KeyId = "bank-a/escrow".parse().unwrap();
    let old = escrow(&kms, "bank-a", "old", &["bank-a/escrow"], b"old secret");
    let v2 = kms.prepare_key(&key, true, 2, &mut OsRng).unwrap();
    assert!(matches!(v2.audit, AuditEvent::Rotated { version: 2, .. }));
    kms.apply(v2.record).unwrap();
    let rewrapped = kms.rewrap(
        "bank-a",
        false,
        &serde_json::to_vec(&old).unwrap(),
        &mut OsRng,
    );
    assert!(
        matches!(&rewrapped.audit, Some(AuditEvent::Rewrapped { from, to, .. }) if *from == ["bank-a/escrow@v1"] && *to == ["bank-a/escrow@v2"]),
        "the audit names the versions before and after: {:?}",
        rewrapped.audit
    );
    let rewrapped = rewrapped.result.unwrap();
    assert_eq!(rewrapped.layers[0].version, 2);
    let refused = kms
        .rewrap(
            "bank-b",
            false,
            &serde_json::to_vec(&old).unwrap(),
            &mut OsRng,
        )
        .result;
    assert!(
        matches!(&refused, Err(KmsError::NotOwner { caller, owner, .. }) if caller == "bank-b" && owner == "bank-a"),
        "a non-owner's rewrap: {refused:?}"
    );
    let retire = kms.prepare_retire(&key, 1).unwrap();
    kms.apply(retire.record).unwrap();
    let listed: Vec<_> = kms
        .key_infos()
        .unwrap()
        .into_iter()
        .filter(|k| k.key_id == "bank-a/escrow")
        .map(|k| (k.version, format!("{:?}", k.status)))
        .collect();
    assert_eq!(
        listed,
        [(1, "Retired".to_owned()), (2, "Active".to_owned())]
    );
    let (result, _) = recover(&kms, "bank-a", &old, now);
    assert!(matches!(
        result,
        Err(KmsError::RetiredKey { version: 1, .. })
    ));
    assert_eq!(
        recover(&kms, "bank-a", &rewrapped, now).0.unwrap(),
        b"old secret"
    );
}

#[test]
fn public_keys_are_signed_and_can_travel_sealed() {
    let kms = engine(1000, 1000);
    let (channel, channel_public) = HpkeSecretKey::generate(&mut OsRng);
    let answer = kms.public_key(
        "bank-a",
        "bank-a/escrow",
        None,
        Some(&channel_public.to_bytes()),
        &mut OsRng,
    );
    assert!(matches!(
        answer.audit,
        Some(AuditEvent::PublicKeyHandedOut { channel: true, .. })
    ));
    let Ok(PublicKeyAnswer::Sealed(sealed)) = answer.result else {
        panic!("sealed answer")
    };
    let (json, signature) = reply::open_channel(&channel, &sealed).unwrap();
    let statement = reply::verify_statement(&kms.signing_public(), &json, &signature).unwrap();
    assert_eq!(statement.key.key_id, "bank-a/escrow");
    let other = IdentityKey::generate(&mut OsRng);
    assert!(
        reply::verify_statement(&other.public(), &json, &signature)
            .expect_err("another signer")
            .contains("signature"),
        "a statement under another signing key"
    );
    let missing = kms.public_key("bank-a", "bank-a/nothing", None, None, &mut OsRng);
    assert!(matches!(missing.result, Err(KmsError::UnknownKey { .. })));
}

#[test]
fn recovery_rate_is_limited_per_participant() {
    let kms = engine(2, 2);
    let now = Instant::now();
    let a = escrow(&kms, "bank-a", "a", &["bank-a/escrow"], b"a");
    let b = escrow(&kms, "bank-b", "b", &["bank-b/escrow"], b"b");
    assert!(recover(&kms, "bank-a", &a, now).0.is_ok());
    assert!(recover(&kms, "bank-a", &a, now).0.is_ok());
    let (result, audit) = recover(&kms, "bank-a", &a, now);
    assert!(matches!(result, Err(KmsError::RateLimited { .. })));
    assert!(matches!(audit, AuditEvent::RecoveryRefused { .. }));
    assert!(recover(&kms, "bank-b", &b, now).0.is_ok());
    assert!(
        recover(&kms, "bank-a", &a, now + Duration::from_millis(600))
            .0
            .is_ok()
    );
}
