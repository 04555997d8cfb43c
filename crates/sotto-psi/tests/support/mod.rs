//! A whole PSI session between two in-memory parties, stopped after round 2
//! (or run to its end), for the engine tests of receipts and streams.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::group::GroupId;
use sotto_psi::engine::{AcceptPolicy, Session, SessionParams};
use sotto_psi::keystore::KeyStore;
use sotto_psi::local::LocalParty;
use sotto_psi::steps::{check_stream, reencrypt_stream, send_own};
use sotto_psi::wire::{Batch, KeyParams, Reveal, SigningMode, StreamKind};

/// The clock of every party in these tests, Unix seconds.
pub const NOW: u64 = 1_800_000_000;

/// Requester a and provider b.
pub struct Parties {
    pub a: LocalParty,
    pub b: LocalParty,
    pub rng: ChaCha20Rng,
}

/// The same two parties for every session (fixed keys), with a session
/// randomness of `seed`.
pub fn parties(seed: u64) -> Parties {
    let mut keys = ChaCha20Rng::seed_from_u64(7);
    Parties {
        a: LocalParty::generate(&"a".parse().unwrap(), 2, &mut keys),
        b: LocalParty::generate(&"b".parse().unwrap(), 2, &mut keys),
        rng: ChaCha20Rng::seed_from_u64(seed),
    }
}

/// The variable that picks the PSI group the engine tests run in.
pub const GROUP_VARIABLE: &str = "SOTTO_TEST_PSI_GROUP";

/// The group of this test run: `SOTTO_TEST_PSI_GROUP` (ristretto255 or
/// x25519), ristretto255 when unset.
pub fn group() -> GroupId {
    match std::env::var(GROUP_VARIABLE) {
        Ok(name) => name.parse().unwrap(),
        Err(_) => GroupId::Ristretto255,
    }
}

/// Runs every other test of this test binary again in the x25519 group,
/// once on this CPU's x25519 backend and once on the portable one
/// (`SOTTO_X25519_BACKEND=portable`), as child processes; fails with the
/// child's output if any test fails there. `this_test` is skipped in the
/// children. Under `SOTTO_TEST_PSI_GROUP` (a child, or a run pinned by
/// hand) it does nothing.
pub fn rerun_in_x25519(this_test: &str) {
    if std::env::var(GROUP_VARIABLE).is_ok() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    for backend in [None, Some("portable")] {
        let mut child = std::process::Command::new(&exe);
        child
            .args(["--skip", this_test, "--test-threads", "2"])
            .env(GROUP_VARIABLE, "x25519");
        if let Some(backend) = backend {
            child.env(sotto_crypto::x25519::BACKEND_VARIABLE, backend);
        }
        let out = child.output().unwrap();
        assert!(
            out.status.success(),
            "in x25519 (backend {}):\n{}\n{}",
            backend.unwrap_or("default"),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("test result: ok"));
    }
}

/// A session after rounds 1 and 2: both sessions and every stream.
pub struct Rounds {
    pub alice: Session,
    pub bob: Session,
    pub parties: Parties,
    pub u: Vec<Batch>,
    pub w: Vec<Batch>,
    pub v: Vec<Batch>,
}

/// Runs the handshake and rounds 1 and 2 (a has k0..k5, b has k3..k8;
/// batches of 4), every stream checked by its receiver.
pub fn rounds(seed: u64, reveal: Reveal, align: bool) -> Rounds {
    rounds_in(group(), seed, reveal, align)
}

/// [`rounds`] in a given group.
pub fn rounds_in(group: GroupId, seed: u64, reveal: Reveal, align: bool) -> Rounds {
    let mut p = parties(seed);
    let params = SessionParams {
        align,
        ..SessionParams::fresh(
            group,
            SigningMode::Element,
            reveal,
            4,
            KeyParams::default(),
            NOW,
            &mut p.rng,
        )
    };
    let (a_keys, b_keys) = (
        KeyStore::from_keys((0..6).map(|i| format!("k{i}"))),
        KeyStore::from_keys((3..9).map(|i| format!("k{i}"))),
    );
    let (sa, sb, pa, pb) = (p.a.signer(), p.b.signer(), p.a.peer_keys(), p.b.peer_keys());
    let (mut alice, hello) = Session::request(params, &sa, &pb, 6, &mut p.rng).unwrap();
    let policy = AcceptPolicy {
        allow_align: true,
        ..AcceptPolicy::default()
    };
    let (mut bob, accept) = Session::accept(&hello, &sb, &pa, 6, &policy, NOW, &mut p.rng).unwrap();
    alice.on_accept(&accept, &pb).unwrap();
    let none = &|_| {};
    let u = send_own(
        &mut alice,
        StreamKind::RequesterEncrypted,
        &a_keys,
        &sa,
        none,
    )
    .unwrap();
    check_stream(&mut bob, StreamKind::RequesterEncrypted, 6, &u, &pa, none).unwrap();
    let w = reencrypt_stream(&mut bob, StreamKind::Reencrypted, &u, &sb, none).unwrap();
    let v = send_own(&mut bob, StreamKind::ProviderEncrypted, &b_keys, &sb, none).unwrap();
    check_stream(&mut alice, StreamKind::Reencrypted, 6, &w, &pb, none).unwrap();
    check_stream(&mut alice, StreamKind::ProviderEncrypted, 6, &v, &pb, none).unwrap();
    Rounds {
        alice,
        bob,
        parties: p,
        u,
        w,
        v,
    }
}
