//! For random sets, the protocol's intersection equals the plaintext
//! intersection in every signing mode and every reveal mode.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_psi::local::{run_local, LocalOptions, LocalParty};
use sotto_psi::wire::{Reveal, SigningMode};

fn parties() -> (LocalParty, LocalParty) {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    (
        LocalParty::generate(&"a".parse().expect("name"), 2, &mut rng),
        LocalParty::generate(&"b".parse().expect("name"), 3, &mut rng),
    )
}

fn keys(set: &BTreeSet<u16>) -> sotto_psi::keystore::KeyStore {
    sotto_psi::keystore::KeyStore::from_keys(set.iter().map(|v| format!("id-{v}")))
}

fn check(a: BTreeSet<u16>, b: BTreeSet<u16>, mode: SigningMode, reveal: Reveal, seed: u64) {
    let (pa, pb) = parties();
    let (ka, kb) = (keys(&a), keys(&b));
    let options = LocalOptions {
        mode,
        reveal,
        batch_size: 5,
    };
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let out = run_local(&pa, &pb, &ka, &kb, options, &mut rng).expect("honest run succeeds");
    let truth: BTreeSet<u16> = a.intersection(&b).copied().collect();
    assert_eq!(out.size, truth.len() as u64);
    let to_values = |set: &BTreeSet<u16>, idx: &[u32]| -> BTreeSet<u16> {
        let all: Vec<u16> = set.iter().copied().collect();
        idx.iter().map(|&i| all[i as usize]).collect()
    };
    match reveal {
        Reveal::Size => assert!(out.requester_matched.is_empty()),
        _ => assert_eq!(to_values(&a, &out.requester_matched), truth),
    }
    match (reveal, out.provider_matched) {
        (Reveal::Both, Some(matched)) => assert_eq!(to_values(&b, &matched), truth),
        (Reveal::Both, None) => panic!("provider must learn the intersection under reveal both"),
        (_, other) => assert!(other.is_none()),
    }
    if mode == SigningMode::Element {
        assert!(out.provider_counts.verified >= a.len() as u64);
        assert!(out.requester_counts.verified >= (a.len() + b.len()) as u64);
    }
}

fn mode_strategy() -> impl Strategy<Value = SigningMode> {
    prop_oneof![
        Just(SigningMode::Element),
        Just(SigningMode::Digest),
        Just(SigningMode::None)
    ]
}

fn reveal_strategy() -> impl Strategy<Value = Reveal> {
    prop_oneof![
        Just(Reveal::Requester),
        Just(Reveal::Both),
        Just(Reveal::Size)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn intersection_matches_plaintext(
        a in proptest::collection::btree_set(0u16..60, 0..30),
        b in proptest::collection::btree_set(0u16..60, 0..30),
        mode in mode_strategy(),
        reveal in reveal_strategy(),
        seed in any::<u64>(),
    ) {
        check(a, b, mode, reveal, seed);
    }
}

#[test]
fn edge_cases_in_every_mode() {
    let set = |r: std::ops::Range<u16>| r.collect::<BTreeSet<u16>>();
    let cases = [
        (set(0..0), set(0..0)),
        (set(0..10), set(0..0)),
        (set(0..0), set(0..10)),
        (set(0..10), set(10..20)),
        (set(0..17), set(0..17)),
    ];
    for (a, b) in cases {
        for &mode in SigningMode::ALL {
            for &reveal in Reveal::ALL {
                check(a.clone(), b.clone(), mode, reveal, 1);
            }
        }
    }
}
