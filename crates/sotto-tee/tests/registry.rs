//! The registration center's engine with software enclaves: admission of
//! identical code bound to a fresh nonce and the node's keys, and refusal of
//! forged, replayed, tampered, unbound, unknown or revoked requests; group
//! keys sealed per member and rotated so a revoked member never sees a
//! newer one.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use rand_core::OsRng;
use sotto_crypto::hpke::{HpkePublicKey, HpkeSecretKey};
use sotto_crypto::identity::IdentityKey;
use sotto_tee::enclave::Enclave;
use sotto_tee::policy::Policy;
use sotto_tee::registry::{
    group_key_aad, registration_report_data, Registration, Registry, RegistryError, RegistryState,
    GROUP_KEY_INFO,
};
use sotto_tee::software::{verify_evidence, PlatformKey, SoftwareEnclave};

struct Node {
    name: String,
    identity: IdentityKey,
    hpke: HpkeSecretKey,
    enclave: SoftwareEnclave,
}

fn node(name: &str, measurement: u8, platform: &PlatformKey) -> Node {
    let bytes = platform.to_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k");
    std::fs::write(&path, bytes.as_slice()).unwrap();
    Node {
        name: name.into(),
        identity: IdentityKey::generate(&mut OsRng),
        hpke: HpkeSecretKey::generate(&mut OsRng).0,
        enclave: SoftwareEnclave::with_measurement(
            [measurement; 32],
            PlatformKey::read(&path).unwrap(),
        ),
    }
}

fn center(platform: &PlatformKey, measurements: &[u8]) -> Registry {
    let list: Vec<String> = measurements
        .iter()
        .map(|m| format!("\"{}\"", hex::encode([*m; 32])))
        .collect();
    let policy = Policy::parse(
        std::path::Path::new("policy.toml"),
        &format!(
            "platforms = [\"sgx\"]\nmeasurements = [{}]\nallow_software = true\nsoftware_platform_keys = [\"{}\"]\n",
            list.join(", "),
            platform.public()
        ),
    )
    .unwrap();
    Registry::new(
        RegistryState::default(),
        policy,
        true,
        IdentityKey::generate(&mut OsRng),
    )
}

/// A registration as the node would make it for `nonce`.
fn registration(n: &Node, nonce: [u8; 32], trusted: &PlatformKey) -> Registration {
    let hpke = n.hpke.public();
    let data = registration_report_data(&nonce, &n.name, &n.identity.public(), &hpke);
    let evidence = n.enclave.evidence(&data).unwrap();
    Registration {
        name: n.name.clone(),
        identity: n.identity.public(),
        hpke,
        nonce,
        evidence: verify_evidence(&evidence, &[trusted.public()]).map_err(|e| e.to_string()),
    }
}

fn register(c: &mut Registry, n: &Node, trusted: &PlatformKey) -> Result<(), RegistryError> {
    let nonce = c.challenge(&n.identity.public(), 1000, &mut OsRng);
    c.register(registration(n, nonce, trusted), 1001, &mut OsRng)
        .map(|_| ())
}

fn open_key(c: &Registry, n: &Node) -> Result<(u64, Vec<u8>), RegistryError> {
    let sealed = c.group_key_for(&n.identity.public(), None, &mut OsRng)?;
    let key = n
        .hpke
        .open(
            GROUP_KEY_INFO,
            &group_key_aad(sealed.version, &n.name),
            &sealed.sealed,
        )
        .unwrap();
    Ok((sealed.version, key))
}

#[test]
fn identical_code_is_admitted_and_shares_one_group_key() {
    let platform = PlatformKey::generate(&mut OsRng);
    let mut c = center(&platform, &[1, 2]);
    let (a, b) = (node("a", 1, &platform), node("b", 1, &platform));
    register(&mut c, &a, &platform).unwrap();
    register(&mut c, &b, &platform).unwrap();
    let (va, ka) = open_key(&c, &a).unwrap();
    let (vb, kb) = open_key(&c, &b).unwrap();
    assert_eq!((va, &ka), (vb, &kb));
    assert_eq!(c.membership().members.len(), 2);
    // A node with other code (also on the allowlist) is refused, naming both.
    let other = node("c", 2, &platform);
    let err = register(&mut c, &other, &platform).unwrap_err();
    assert!(matches!(err, RegistryError::DifferentCode { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&hex::encode([1u8; 32])) && text.contains(&hex::encode([2u8; 32])),
        "{text}"
    );
}

#[test]
fn unknown_measurement_and_untrusted_platform_are_refused() {
    let platform = PlatformKey::generate(&mut OsRng);
    let mut c = center(&platform, &[1]);
    let err = register(&mut c, &node("x", 9, &platform), &platform).unwrap_err();
    assert!(
        matches!(&err, RegistryError::Policy { reasons, .. } if reasons[0].contains("allowlist")),
        "{err}"
    );
    // Evidence signed by a platform key the policy does not trust.
    let rogue = PlatformKey::generate(&mut OsRng);
    let n = node("y", 1, &rogue);
    let nonce = c.challenge(&n.identity.public(), 1000, &mut OsRng);
    let r = registration(&n, nonce, &platform);
    let err = c.register(r, 1001, &mut OsRng).unwrap_err();
    assert!(matches!(err, RegistryError::Evidence { .. }), "{err}");
}

#[test]
fn replayed_stale_and_unbound_registrations_are_refused() {
    let platform = PlatformKey::generate(&mut OsRng);
    let mut c = center(&platform, &[1]);
    let n = node("a", 1, &platform);
    // No challenge at all.
    let err = c
        .register(registration(&n, [5; 32], &platform), 1000, &mut OsRng)
        .unwrap_err();
    assert!(matches!(err, RegistryError::NoChallenge { .. }), "{err}");
    // Evidence for an old nonce (a replay) against a new challenge.
    let old = c.challenge(&n.identity.public(), 1000, &mut OsRng);
    let replay = registration(&n, old, &platform);
    let _fresh = c.challenge(&n.identity.public(), 1001, &mut OsRng);
    let err = c.register(replay, 1002, &mut OsRng).unwrap_err();
    assert!(matches!(err, RegistryError::StaleNonce { .. }), "{err}");
    // A nonce used after it expired.
    let nonce = c.challenge(&n.identity.public(), 1000, &mut OsRng);
    let err = c
        .register(registration(&n, nonce, &platform), 1000 + 121, &mut OsRng)
        .unwrap_err();
    assert!(matches!(err, RegistryError::StaleNonce { .. }), "{err}");
    // Evidence made for another node's keys, presented by this one.
    let victim = node("v", 1, &platform);
    let nonce = c.challenge(&n.identity.public(), 1000, &mut OsRng);
    let mut stolen = registration(&victim, nonce, &platform);
    stolen.name = n.name.clone();
    stolen.identity = n.identity.public();
    let err = c.register(stolen, 1001, &mut OsRng).unwrap_err();
    assert!(matches!(err, RegistryError::NotBound { .. }), "{err}");
    // The right HPKE key swapped for the attacker's: not bound either.
    let nonce = c.challenge(&n.identity.public(), 1000, &mut OsRng);
    let mut swapped = registration(&n, nonce, &platform);
    swapped.hpke = HpkeSecretKey::generate(&mut OsRng).1;
    let err = c.register(swapped, 1001, &mut OsRng).unwrap_err();
    assert!(matches!(err, RegistryError::NotBound { .. }), "{err}");
}

#[test]
fn impersonating_a_member_by_name_is_refused() {
    let platform = PlatformKey::generate(&mut OsRng);
    let mut c = center(&platform, &[1]);
    register(&mut c, &node("a", 1, &platform), &platform).unwrap();
    let err = register(&mut c, &node("a", 1, &platform), &platform).unwrap_err();
    assert!(matches!(err, RegistryError::NameTaken { .. }), "{err}");
}

#[test]
fn a_revoked_member_never_gets_a_newer_key_and_cannot_return() {
    let platform = PlatformKey::generate(&mut OsRng);
    let mut c = center(&platform, &[1]);
    let (a, b, d) = (
        node("a", 1, &platform),
        node("b", 1, &platform),
        node("d", 1, &platform),
    );
    for n in [&a, &b, &d] {
        register(&mut c, n, &platform).unwrap();
    }
    let (v1, k1) = open_key(&c, &b).unwrap();
    let before = c.membership().version;
    let after = c.revoke("b", 2000, &mut OsRng).unwrap();
    assert_eq!(
        after.version,
        before + 1,
        "a revocation is a new membership version"
    );
    let (v2, k2) = open_key(&c, &a).unwrap();
    assert!(v2 > v1);
    assert_ne!(k1, k2);
    assert!(matches!(
        open_key(&c, &b),
        Err(RegistryError::Revoked { .. })
    ));
    assert!(matches!(
        register(&mut c, &b, &platform),
        Err(RegistryError::Revoked { .. })
    ));
    assert!(!c.membership().members.iter().any(|m| m.0 == "b"));
    // Leaving rotates too.
    let left = c.leave(&d.identity.public(), 2001, &mut OsRng).unwrap();
    assert_eq!(left.version, after.version + 1);
    let (v3, _) = open_key(&c, &a).unwrap();
    assert!(v3 > v2);
    assert!(matches!(
        open_key(&c, &d),
        Err(RegistryError::NotMember { .. })
    ));
    // Rotation on schedule.
    let v4 = c.rotate(2002, &mut OsRng);
    assert_eq!(open_key(&c, &a).unwrap().0, v4);
    // An active member may have an older version (data sealed under it stays
    // readable to the group); a revoked one none; no version beyond the last.
    let old = c
        .group_key_for(&a.identity.public(), Some(v1), &mut OsRng)
        .unwrap();
    let opened = a
        .hpke
        .open(GROUP_KEY_INFO, &group_key_aad(v1, &a.name), &old.sealed)
        .unwrap();
    assert_eq!((old.version, opened), (v1, k1));
    assert!(matches!(
        c.group_key_for(&b.identity.public(), Some(v1), &mut OsRng),
        Err(RegistryError::Revoked { .. })
    ));
    assert!(matches!(
        c.group_key_for(&a.identity.public(), Some(v4 + 1), &mut OsRng),
        Err(RegistryError::Malformed { reason, .. }) if reason == format!("there is no group key version {}", v4 + 1)
    ));
}

#[test]
fn state_round_trips_with_group_keys_sealed_at_rest() {
    let platform = PlatformKey::generate(&mut OsRng);
    let mut c = center(&platform, &[1]);
    register(&mut c, &node("a", 1, &platform), &platform).unwrap();
    let key = IdentityKey::generate(&mut OsRng);
    let bytes = c.state().to_bytes(&key).unwrap();
    let group_key = c.state().group_keys[0].key.expose();
    assert_eq!(
        sotto_node::leaks::leaked_encoding(&bytes, group_key),
        None,
        "the group key at rest"
    );
    assert_eq!(&RegistryState::from_bytes(&bytes, &key).unwrap(), c.state());
    let other = IdentityKey::generate(&mut OsRng);
    assert!(RegistryState::from_bytes(&bytes, &other).is_err());
    let _ = HpkePublicKey::from_bytes(&[0; 31]).unwrap_err();
}

#[test]
fn a_nonce_is_good_up_to_its_last_second_and_a_member_may_register_again() {
    let platform = PlatformKey::generate(&mut OsRng);
    let mut c = center(&platform, &[1]);
    let n = node("a", 1, &platform);
    let nonce = c.challenge(&n.identity.public(), 1000, &mut OsRng);
    let first = c
        .register(registration(&n, nonce, &platform), 1000 + 120, &mut OsRng)
        .expect("at the last second of the nonce's lifetime");
    // The same node (same name and identity key) registering again, e.g.
    // after a restart, is admitted; the membership version moves on.
    let nonce = c.challenge(&n.identity.public(), 2000, &mut OsRng);
    let second = c
        .register(registration(&n, nonce, &platform), 2001, &mut OsRng)
        .expect("the same member again");
    assert_eq!(second.version, first.version + 1);
    let other = node("b", 1, &platform);
    register(&mut c, &other, &platform).unwrap();
    assert_eq!(c.membership().version, second.version + 1);
}

#[test]
fn group_key_associated_data_names_version_and_member() {
    let all = [
        group_key_aad(1, "a"),
        group_key_aad(2, "a"),
        group_key_aad(1, "b"),
        group_key_aad(1, "ab"),
    ];
    for (i, x) in all.iter().enumerate() {
        for y in &all[i + 1..] {
            assert_ne!(x, y);
        }
    }
}

#[test]
fn members_a_stricter_policy_no_longer_accepts_are_suspended_at_recheck() {
    let platform = PlatformKey::generate(&mut OsRng);
    let mut c = center(&platform, &[1]);
    let (a, b) = (node("a", 1, &platform), node("b", 1, &platform));
    register(&mut c, &a, &platform).unwrap();
    register(&mut c, &b, &platform).unwrap();
    let (key_version, _) = open_key(&c, &a).unwrap();
    let membership = c.membership().version;
    assert!(
        c.recheck_members(3000, &mut OsRng).is_empty(),
        "the same policy suspends nobody"
    );
    assert_eq!(
        c.membership().version,
        membership,
        "nothing changed, nothing rotated"
    );
    // The same state under a policy that lists another measurement only.
    let state = c.state().clone();
    let mut c = Registry::new(
        state,
        stricter_policy(&platform),
        true,
        IdentityKey::generate(&mut OsRng),
    );
    let suspended = c.recheck_members(3000, &mut OsRng);
    let names: Vec<&str> = suspended.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    for (_, reasons) in &suspended {
        assert!(
            reasons.iter().any(|r| r.contains(&hex::encode([1u8; 32]))),
            "the reasons name the refused measurement: {reasons:?}"
        );
    }
    assert_eq!(c.membership().version, membership + 1);
    assert!(c.membership().members.is_empty());
    assert_eq!(
        c.membership().measurement,
        None,
        "no active member: the next admitted sets it"
    );
    assert!(
        c.membership().group_key_version > key_version,
        "the key rotated"
    );
    assert!(matches!(
        open_key(&c, &a),
        Err(RegistryError::Suspended { .. })
    ));
    assert!(
        c.recheck_members(3001, &mut OsRng).is_empty(),
        "suspended members are not judged again"
    );
}

fn stricter_policy(platform: &PlatformKey) -> Policy {
    Policy::parse(
        std::path::Path::new("policy.toml"),
        &format!(
            "platforms = [\"sgx\"]\nmeasurements = [\"{}\"]\nallow_software = true\nsoftware_platform_keys = [\"{}\"]\n",
            hex::encode([2u8; 32]),
            platform.public()
        ),
    )
    .unwrap()
}
