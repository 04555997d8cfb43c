//! Validation is a pure function of the block sequence: two business nodes
//! given the same random blocks (valid transactions mixed with every kind
//! of fault, duplicates and conflicts) agree on every code and on the
//! commit hash, a third node replaying the blocks gets the same result, and
//! a node keeps a value exactly when a valid transaction names it.

#![allow(clippy::expect_used)]

mod common;

use common::{key, TxSpec, World, MEASUREMENT};
use std::collections::BTreeMap;

use proptest::prelude::*;
use sotto_ledger::packet::Version;
use sotto_ledger::ValidationCode;

#[derive(Clone, Debug)]
enum Choice {
    Invoke {
        id: u8,
        key: u8,
        /// None: a blind write; Some(None): read as absent.
        read: Option<Option<(u64, u32)>>,
        targets: u8,
        endorsers: u8,
        signing_client: usize,
        member: usize,
        forged: bool,
        expired: bool,
    },
    Group {
        version: u64,
        members: u8,
    },
    Garbage(Vec<u8>),
}

fn choice() -> impl Strategy<Value = Choice> {
    prop_oneof![
        8 => (
            0u8..12,
            0u8..4,
            proptest::option::weighted(0.4, proptest::option::of((1u64..6, 0u32..3))),
            1u8..4,
            proptest::sample::select(vec![0b011, 0b101, 0b110, 0b111, 0b001, 0b100]),
            proptest::sample::select(vec![0, 0, 0, 1]),
            proptest::sample::select(vec![0, 0, 1, 1, 2]),
            proptest::bool::weighted(0.1),
            proptest::bool::weighted(0.1),
        )
            .prop_map(|(id, key, read, targets, endorsers, signing_client, member, forged, expired)| Choice::Invoke {
                id, key, read, targets, endorsers, signing_client, member, forged, expired,
            }),
        1 => (1u64..5, 0u8..4).prop_map(|(version, members)| Choice::Group { version, members }),
        1 => proptest::collection::vec(any::<u8>(), 0..40).prop_map(Choice::Garbage),
    ]
}

/// A transaction's bytes, its targets, and the key and value it writes.
type Encoded = (Vec<u8>, Vec<String>, Option<([u8; 32], Vec<u8>)>);

fn encode(world: &World, choice: &Choice) -> Encoded {
    match choice {
        Choice::Invoke {
            id,
            key: k,
            read,
            targets,
            endorsers,
            signing_client,
            member,
            forged,
            expired,
        } => {
            let reads = read
                .map(|version| (key(*k), version.map(|(block, tx)| Version { block, tx })))
                .into_iter()
                .collect();
            let mut spec = TxSpec::credit(*id, reads, vec![(key(*k), vec![*id])]);
            spec.targets = ["b1", "b2"]
                .iter()
                .enumerate()
                .filter(|(i, _)| targets & (1 << i) != 0)
                .map(|(_, t)| (*t).to_owned())
                .collect();
            spec.endorsers = (0..3).filter(|i| endorsers & (1 << i) != 0).collect();
            spec.signing_client = *signing_client;
            spec.member = format!("c{}", member + 1);
            spec.tee_signer = (member + usize::from(*forged)) % 2;
            if *expired {
                spec.expires_ms = 0;
            }
            (
                world.invoke(&spec),
                spec.targets,
                Some((key(*k), vec![*id])),
            )
        }
        Choice::Group { version, members } => {
            let members: Vec<usize> = (0..2).filter(|i| members & (1 << i) != 0).collect();
            (
                world.membership(*version, &members, &MEASUREMENT),
                Vec::new(),
                None,
            )
        }
        Choice::Garbage(bytes) => (bytes.clone(), Vec::new(), None),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn every_node_gives_the_same_codes_and_commit_hash(blocks in proptest::collection::vec(proptest::collection::vec(choice(), 1..8), 1..6)) {
        let mut world = World::new();
        let mut b1 = world.node("b1");
        let mut b2 = world.node("b2");
        let mut replay = world.node("b1");
        let first = world.cut(vec![world.membership(1, &[0, 1], &MEASUREMENT)]);
        let mut cut = vec![first];
        let mut written = vec![vec![(Vec::new(), None)]];
        for choices in &blocks {
            let encoded: Vec<Encoded> = choices.iter().map(|c| encode(&world, c)).collect();
            cut.push(world.cut(encoded.iter().map(|e| e.0.clone()).collect()));
            written.push(encoded.into_iter().map(|(_, targets, write)| (targets, write)).collect());
        }
        // The value each key should have, and the nodes that should keep it.
        let mut model: BTreeMap<[u8; 32], (Vec<u8>, Vec<String>)> = BTreeMap::new();
        for (block, written) in cut.iter().zip(&written) {
            let at_b1 = b1.append(block).expect("b1").to_vec();
            let at_b2 = b2.append(block).expect("b2").to_vec();
            prop_assert_eq!(replay.append(block).expect("replay"), at_b1.as_slice());
            prop_assert_eq!(b1.commit_hash(), b2.commit_hash());
            prop_assert_eq!(b1.versions(), b2.versions());
            for ((c1, c2), (targets, write)) in at_b1.iter().zip(&at_b2).zip(written) {
                prop_assert_eq!(c1.consensus(), c2.consensus());
                if let (true, Some((k, value))) = (c1.is_valid(), write) {
                    let named = |node: &str| targets.iter().any(|t| t == node);
                    prop_assert_eq!(*c1 == ValidationCode::Valid, named("b1"));
                    prop_assert_eq!(*c2 == ValidationCode::Valid, named("b2"));
                    model.insert(*k, (value.clone(), targets.clone()));
                }
            }
        }
        prop_assert_eq!(replay.commit_hash(), b1.commit_hash());
        prop_assert_eq!(b1.versions().keys().collect::<Vec<_>>(), model.keys().collect::<Vec<_>>());
        for (k, (value, targets)) in &model {
            for (node, ledger) in [("b1", &b1), ("b2", &b2)] {
                let kept = targets.iter().any(|t| t == node).then_some(value.as_slice());
                prop_assert_eq!(ledger.value(k), kept, "{} keeps the value only if the last write named it", node);
            }
        }
    }
}
