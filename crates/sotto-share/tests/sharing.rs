//! Sharing and fusion in process: the providers' fused shares add up to the
//! joint table (a property over random tables), and each fault a recipient
//! must refuse is refused with its own error, naming the sender.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{declaration, reconstruct, tables, Providers, Rows, DECLARATION};
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_share::fragment::OpenedChunk;
use sotto_share::{open_chunk, FragmentError, FuseError, Fuser, SealedChunk, SplitError};

#[test]
fn fused_shares_add_up_to_the_joint_table() {
    let providers = Providers::new(declaration());
    let tables = tables();
    let shares = providers.share(&tables, 10);
    assert_eq!(reconstruct(&shares), providers.joint(&tables));
    assert!(shares.iter().all(|s| s.len() == 4), "c-1 to c-4 everywhere");
    let c3 = providers.tagger.tag(&providers.declaration.dataset, "c-3");
    let sum: Vec<u64> = reconstruct(&shares)[&c3].clone();
    assert_eq!(
        sum,
        [0, 0, 0, 120, 1, 0, 9999, 1],
        "the lender lacks c-3: zeros and presence 0"
    );
    assert_ne!(shares[0].row(&c3), Some(&sum[..]), "no share is the data");
}

#[test]
fn a_linear_model_adds_up_over_the_providers_partial_results() {
    let providers = Providers::new(declaration());
    let tables = tables();
    let shares = providers.share(&tables, 20);
    let weights: Vec<u64> = [3i64, -7, 0, 2, 0, 5, 1, 0]
        .iter()
        .map(|w| *w as u64)
        .collect();
    let c2 = providers.tagger.tag(&providers.declaration.dataset, "c-2");
    let total = shares
        .iter()
        .map(|s| s.dot(&c2, &weights).expect("known"))
        .fold(0u64, u64::wrapping_add);
    assert_eq!(total as i64, 3 * 100_000 - 7 + 5 + 54_000);
    let nobody = providers.tagger.tag(&providers.declaration.dataset, "c-9");
    assert_eq!(shares[0].dot(&nobody, &weights), None, "an unknown id");
    assert_eq!(shares[0].dot(&c2, &weights[..3]), None, "wrong width");
}

fn table_strategy(width: usize) -> impl Strategy<Value = Rows> {
    proptest::collection::btree_map(
        0u8..40,
        proptest::collection::vec(-1000i64..1000, width),
        0..12,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .map(|(id, values)| (format!("c-{id}"), values))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn any_tables_fuse_into_shares_of_the_joint_table(
        a in table_strategy(2),
        b in table_strategy(1),
        c in table_strategy(2),
        seed in any::<u64>(),
    ) {
        let providers = Providers::new(declaration());
        let tables = vec![a, b, c];
        let shares = providers.share(&tables, seed);
        prop_assert_eq!(reconstruct(&shares), providers.joint(&tables));
    }
}

/// Everything the three providers publish, by sender then recipient.
fn published(providers: &Providers) -> Vec<Vec<Vec<SealedChunk>>> {
    tables()
        .iter()
        .enumerate()
        .map(|(s, rows)| providers.publish(s, rows, 30 + s as u64))
        .collect()
}

/// Provider `me` opens `chunk`; returns the refusal.
fn refused(providers: &Providers, me: usize, chunk: &SealedChunk) -> FragmentError {
    let name = &providers.declaration.providers[me].name;
    open_chunk(&providers.declaration, name, &providers.keys[me], chunk).expect_err("refused")
}

#[test]
fn a_chunk_for_another_provider_is_refused_naming_both() {
    let providers = Providers::new(declaration());
    let all = published(&providers);
    let for_telecom = &all[0][1][0];
    assert_eq!(
        refused(&providers, 2, for_telecom),
        FragmentError::NotForMe {
            sender: "lender".into(),
            recipient: "telecom".into()
        }
    );
    let mut readdressed = for_telecom.clone();
    readdressed.header.as_mut().unwrap().recipient = "insurer".into();
    assert_eq!(
        refused(&providers, 2, &readdressed),
        FragmentError::Tampered {
            sender: "lender".into(),
            index: 0
        },
        "a header changed to name me does not open"
    );
}

#[test]
fn a_chunk_of_another_version_is_refused_as_replayed() {
    let old = Providers::new(declaration());
    let stale = &published(&old)[0][2][0];
    let next = Providers::new(
        sotto_share::Declaration::parse(
            std::path::Path::new("d.toml"),
            &DECLARATION.replace("version = 2", "version = 3"),
        )
        .unwrap(),
    );
    assert_eq!(
        refused(&next, 2, stale),
        FragmentError::OtherVersion {
            sender: "lender".into(),
            got: 2,
            expected: 3
        }
    );
    let mut relabelled = stale.clone();
    relabelled.header.as_mut().unwrap().version = 3;
    assert_eq!(
        refused(&next, 2, &relabelled),
        FragmentError::OtherDeclaration {
            sender: "lender".into()
        },
        "the declaration digest binds the version too"
    );
    let other_columns = Providers::new(
        sotto_share::Declaration::parse(
            std::path::Path::new("d.toml"),
            &DECLARATION.replace("max = \"600\"", "max = \"700\""),
        )
        .unwrap(),
    );
    assert_eq!(
        refused(&other_columns, 2, stale),
        FragmentError::OtherDeclaration {
            sender: "lender".into()
        }
    );
}

#[test]
fn a_tampered_or_moved_chunk_does_not_open() {
    let providers = Providers::new(declaration());
    let all = published(&providers);
    let chunk = &all[1][2][0];
    let mut flipped = chunk.clone();
    flipped.sealed[40] ^= 1;
    assert_eq!(
        refused(&providers, 2, &flipped),
        FragmentError::Tampered {
            sender: "telecom".into(),
            index: 0
        }
    );
    let mut moved = all[0][2][1].clone();
    moved.header.as_mut().unwrap().index = 0;
    assert_eq!(
        refused(&providers, 2, &moved),
        FragmentError::Tampered {
            sender: "lender".into(),
            index: 0
        },
        "a chunk moved to another position"
    );
    let mut beyond = chunk.clone();
    beyond.header.as_mut().unwrap().index = 5;
    assert_eq!(
        refused(&providers, 2, &beyond),
        FragmentError::BadIndex {
            sender: "telecom".into(),
            index: 5,
            count: 1
        }
    );
    let mut stranger = chunk.clone();
    stranger.header.as_mut().unwrap().sender = "bank".into();
    assert_eq!(
        refused(&providers, 2, &stranger),
        FragmentError::UnknownSender("bank".into())
    );
    let mut other_dataset = chunk.clone();
    other_dataset.header.as_mut().unwrap().dataset = "other".into();
    assert!(matches!(
        refused(&providers, 2, &other_dataset),
        FragmentError::OtherDataset { .. }
    ));
    let mut format = chunk.clone();
    format.header.as_mut().unwrap().format = 9;
    assert!(matches!(
        refused(&providers, 2, &format),
        FragmentError::Format { format: 9, .. }
    ));
    let headless = SealedChunk {
        header: None,
        sealed: chunk.sealed.clone(),
    };
    assert_eq!(refused(&providers, 2, &headless), FragmentError::NoHeader);
}

fn opened(providers: &Providers, me: usize, chunk: &SealedChunk) -> OpenedChunk {
    let name = &providers.declaration.providers[me].name;
    open_chunk(&providers.declaration, name, &providers.keys[me], chunk).expect("opens")
}

#[test]
fn fusion_waits_for_every_provider_and_names_the_missing_ones() {
    let providers = Providers::new(declaration());
    let all = published(&providers);
    let mut fuser = Fuser::new(&providers.declaration);
    for chunk in &all[0][2] {
        fuser.add(opened(&providers, 2, chunk)).unwrap();
    }
    fuser.add(opened(&providers, 2, &all[2][2][0])).unwrap();
    assert_eq!(fuser.missing(), ["telecom (nothing received)"]);
    assert_eq!(
        fuser.add(opened(&providers, 2, &all[0][2][0])),
        Err(FuseError::Duplicate {
            sender: "lender".into(),
            index: 0
        })
    );
    assert_eq!(
        fuser.finish().map(|s| s.len()),
        Err(FuseError::Missing(
            vec!["telecom (nothing received)".into()]
        ))
    );
    let mut partial = Fuser::new(&providers.declaration);
    partial.add(opened(&providers, 2, &all[0][2][0])).unwrap();
    assert!(partial
        .missing()
        .contains(&"lender (1 of 2 chunks)".to_owned()));
}

#[test]
fn splitting_refuses_rows_that_do_not_fit_the_declaration() {
    let providers = Providers::new(declaration());
    let mut rng = ChaCha20Rng::seed_from_u64(0);
    let split = |sender: &str, rows: &[(&str, &[i64])], rng: &mut ChaCha20Rng| {
        sotto_share::split(
            &providers.declaration,
            sender,
            rows.iter().copied(),
            &providers.tagger,
            rng,
        )
        .map(|f| f.len())
    };
    assert_eq!(
        split("bank", &[], &mut rng),
        Err(SplitError::NotAProvider("bank".into()))
    );
    assert_eq!(
        split("telecom", &[("c-1", &[1, 2])], &mut rng),
        Err(SplitError::Width {
            id: "c-1".into(),
            provider: "telecom".into(),
            expected: 1,
            got: 2
        })
    );
    assert_eq!(
        split("telecom", &[("c-1", &[1]), ("c-1", &[2])], &mut rng),
        Err(SplitError::DuplicateId("c-1".into()))
    );
    assert_eq!(
        split("telecom", &[], &mut rng),
        Ok(3),
        "an empty table still publishes"
    );
}

#[test]
fn a_fused_share_at_rest_opens_only_in_its_enclave_for_its_declaration() {
    use sotto_share::at_rest::{seal, unseal, AtRestError};
    use sotto_tee::software::{PlatformKey, SoftwareEnclave};
    let providers = Providers::new(declaration());
    let shares = providers.share(&tables(), 40);
    let platform = || PlatformKey::generate(&mut ChaCha20Rng::seed_from_u64(8));
    let enclave = SoftwareEnclave::with_measurement([1; 32], platform());
    let sealed = seal(&enclave, &providers.declaration, &shares[1]).expect("sealed");
    assert_eq!(
        unseal(&enclave, &providers.declaration, &sealed).expect("opens"),
        shares[1]
    );
    let other_code = SoftwareEnclave::with_measurement([2; 32], platform());
    assert_eq!(
        unseal(&other_code, &providers.declaration, &sealed),
        Err(AtRestError::Unseal),
        "another measurement"
    );
    let next = sotto_share::Declaration::parse(
        std::path::Path::new("d.toml"),
        &DECLARATION.replace("version = 2", "version = 3"),
    )
    .unwrap();
    assert_eq!(
        unseal(&enclave, &next, &sealed),
        Err(AtRestError::Unseal),
        "another version"
    );
    let mut altered = sealed.clone();
    altered[20] ^= 1;
    assert_eq!(
        unseal(&enclave, &providers.declaration, &altered),
        Err(AtRestError::Unseal)
    );
}

#[test]
fn a_fragment_whose_rows_are_out_of_order_or_repeated_is_not_fused() {
    let providers = Providers::new(declaration());
    let all = published(&providers);
    let fuse_with = |alter: &dyn Fn(&mut OpenedChunk)| {
        let mut fuser = Fuser::new(&providers.declaration);
        for (sender, chunks) in all.iter().enumerate() {
            for chunk in &chunks[2] {
                let mut opened = opened(&providers, 2, chunk);
                if sender == 1 {
                    alter(&mut opened);
                }
                fuser.add(opened).unwrap();
            }
        }
        fuser.finish().map(|s| s.len())
    };
    assert_eq!(fuse_with(&|_| {}), Ok(4));
    assert_eq!(
        fuse_with(&|c| c.rows.tags.swap(0, 1)),
        Err(FuseError::RepeatedRow("telecom".into())),
        "out of order"
    );
    assert_eq!(
        fuse_with(&|c| c.rows.tags[1] = c.rows.tags[0]),
        Err(FuseError::RepeatedRow("telecom".into())),
        "repeated"
    );
}
