//! Both roles in one process, over in-memory messages: the engine of the
//! benchmark command and of the property tests. It runs exactly the steps of
//! the offline driver, without files.

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::bls::BlsSecretKey;
use sotto_crypto::group::GroupId;
use sotto_crypto::identity::IdentityKey;
use sotto_node::{NodeName, Profile};

use crate::engine::{AcceptPolicy, PeerKeys, Session, SessionParams, SignatureCounts, Signer};
use crate::error::EngineError;
use crate::keystore::KeyStore;
use crate::report::{timed, PhaseTiming};
use crate::steps::{
    check_stream, provider_finish, reencrypt_stream, requester_finish, send_own, truncated_elements,
};
use crate::wire::{KeyParams, Reveal, SigningMode, StreamKind};

/// A party's keys held in memory.
pub struct LocalParty {
    identity: IdentityKey,
    bls: Vec<BlsSecretKey>,
    profile: Profile,
}

impl LocalParty {
    /// Generates a party with `bls_keys` BLS keys.
    pub fn generate<R: RngCore + CryptoRng>(name: &NodeName, bls_keys: usize, rng: &mut R) -> Self {
        let identity = IdentityKey::generate(rng);
        let bls: Vec<BlsSecretKey> = (0..bls_keys).map(|_| BlsSecretKey::generate(rng)).collect();
        let profile = Profile::create(name, &identity, &bls);
        Self {
            identity,
            bls,
            profile,
        }
    }

    /// The signer view.
    pub fn signer(&self) -> Signer<'_> {
        Signer {
            identity: &self.identity,
            bls: &self.bls,
            profile: self.profile.fingerprint(),
        }
    }

    /// The public keys as a peer sees them.
    pub fn peer_keys(&self) -> PeerKeys {
        PeerKeys::from(&self.profile)
    }
}

/// Options of an in-process run.
#[derive(Clone, Copy, Debug)]
pub struct LocalOptions {
    /// PSI group the requester proposes.
    pub group: GroupId,
    /// Signing mode.
    pub mode: SigningMode,
    /// Reveal mode.
    pub reveal: Reveal,
    /// Elements per batch.
    pub batch_size: u32,
}

/// The result of an in-process run.
pub struct LocalOutcome {
    /// Requester's distinct-key indices in the intersection (empty under reveal `size`).
    pub requester_matched: Vec<u32>,
    /// Provider's distinct-key indices (reveal `both` only).
    pub provider_matched: Option<Vec<u32>>,
    /// Intersection size as the requester computed it.
    pub size: u64,
    /// Per-phase timings.
    pub phases: Vec<PhaseTiming>,
    /// Signatures of the requester.
    pub requester_counts: SignatureCounts,
    /// Signatures of the provider.
    pub provider_counts: SignatureCounts,
}

/// Runs a whole session between `a` (requester, keys `a_keys`) and `b`
/// (provider, keys `b_keys`). Keys must already be distinct.
pub fn run_local<R: RngCore + CryptoRng>(
    a: &LocalParty,
    b: &LocalParty,
    a_keys: &KeyStore,
    b_keys: &KeyStore,
    options: LocalOptions,
    rng: &mut R,
) -> Result<LocalOutcome, EngineError> {
    let none = &|_| {};
    let (sa, sb) = (a.signer(), b.signer());
    let (pa, pb) = (a.peer_keys(), b.peer_keys());
    let now = sotto_node::clock::unix_now();
    let keys = KeyParams::default();
    let params = SessionParams::fresh(
        options.group,
        options.mode,
        options.reveal,
        options.batch_size,
        keys,
        now,
        rng,
    );
    let policy = AcceptPolicy {
        modes: SigningMode::ALL.to_vec(),
        keys,
        allow_align: true,
    };
    let mut phases = Vec::new();
    let (n, m) = (a_keys.len() as u64, b_keys.len() as u64);
    let (mut alice, hello) = Session::request(params, &sa, &pb, n, rng)?;
    let (mut bob, accept) = Session::accept(&hello, &sb, &pa, m, &policy, now, rng)?;
    alice.on_accept(&accept, &pb)?;
    let u = timed(&mut phases, "requester: encrypt and sign u", n, || {
        send_own(
            &mut alice,
            StreamKind::RequesterEncrypted,
            a_keys,
            &sa,
            none,
        )
    })?;
    timed(&mut phases, "provider: verify u", n, || {
        check_stream(&mut bob, StreamKind::RequesterEncrypted, n, &u, &pa, none)
    })?;
    let w = timed(&mut phases, "provider: re-encrypt and sign w", n, || {
        reencrypt_stream(&mut bob, StreamKind::Reencrypted, &u, &sb, none)
    })?;
    let v = timed(&mut phases, "provider: encrypt and sign v", m, || {
        send_own(&mut bob, StreamKind::ProviderEncrypted, b_keys, &sb, none)
    })?;
    timed(&mut phases, "requester: verify w and v", n + m, || {
        check_stream(&mut alice, StreamKind::Reencrypted, n, &w, &pb, none)?;
        check_stream(&mut alice, StreamKind::ProviderEncrypted, m, &v, &pb, none)
    })?;
    let result = timed(&mut phases, "requester: compute z and match", m, || {
        requester_finish(&mut alice, &w, &v, &sa, none)
    })?;
    let provider_receipt = bob.receipt(&sb, None)?;
    alice.check_receipt(&provider_receipt, &pb, Some(result.size))?;
    let requester_receipt = alice.receipt(&sa, Some(result.size))?;
    bob.check_receipt(&requester_receipt, &pa, None)?;
    let provider_matched = if options.reveal == Reveal::Both {
        let kept = truncated_elements(&w);
        Some(timed(
            &mut phases,
            "provider: verify z and match",
            m,
            || {
                check_stream(
                    &mut bob,
                    StreamKind::RevealBack,
                    m,
                    &result.reveal_back,
                    &pa,
                    none,
                )?;
                provider_finish(&bob, &kept, &result.reveal_back)
            },
        )?)
    } else {
        None
    };
    Ok(LocalOutcome {
        requester_matched: result.matched,
        provider_matched,
        size: result.size,
        phases,
        requester_counts: alice.counts(),
        provider_counts: bob.counts(),
    })
}
