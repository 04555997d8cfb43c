//! For random sets, the protocol's intersection equals the plaintext
//! intersection in both groups, every signing mode and every reveal mode.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;

use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::group::GroupId;
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

struct Case {
    group: GroupId,
    mode: SigningMode,
    reveal: Reveal,
    seed: u64,
}

fn check(a: BTreeSet<u16>, b: BTreeSet<u16>, case: Case) -> Vec<u32> {
    let Case {
        group,
        mode,
        reveal,
        seed,
    } = case;
    let (pa, pb) = parties();
    let (ka, kb) = (keys(&a), keys(&b));
    let options = LocalOptions {
        group,
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
    out.requester_matched
}

fn group_strategy() -> impl Strategy<Value = GroupId> {
    prop_oneof![Just(GroupId::Ristretto255), Just(GroupId::X25519)]
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
        group in group_strategy(),
        mode in mode_strategy(),
        reveal in reveal_strategy(),
        seed in any::<u64>(),
    ) {
        check(a, b, Case { group, mode, reveal, seed });
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
        for group in GroupId::ALL {
            for &mode in SigningMode::ALL {
                for &reveal in Reveal::ALL {
                    let case = Case {
                        group,
                        mode,
                        reveal,
                        seed: 1,
                    };
                    check(a.clone(), b.clone(), case);
                }
            }
        }
    }
}

#[test]
fn a_whole_session_in_x25519_equals_one_in_ristretto255() {
    let a: BTreeSet<u16> = (0..300).collect();
    let b: BTreeSet<u16> = (150..700).step_by(3).collect();
    let matched: Vec<Vec<u32>> = GroupId::ALL
        .into_iter()
        .map(|group| {
            let case = Case {
                group,
                mode: SigningMode::Element,
                reveal: Reveal::Both,
                seed: 3,
            };
            check(a.clone(), b.clone(), case)
        })
        .collect();
    assert_eq!(matched[0], matched[1]);
    assert_eq!(matched[0].len(), 50);
}
