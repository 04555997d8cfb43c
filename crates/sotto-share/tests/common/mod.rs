//! Three providers with different columns about overlapping customers: the
//! declaration, their enclave keys, and publishing and fusing in process.

#![allow(dead_code, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::hpke::{HpkePublicKey, HpkeSecretKey};
use sotto_crypto::secret::SecretBytes;
use sotto_share::{
    open_chunk, seal_fragment, split, Declaration, FusedShare, Fuser, IdTagger, SealedChunk,
};

pub const DECLARATION: &str = r#"
format = 1
dataset = "credit-features"
version = 2

[[provider]]
name = "lender"
[[provider.column]]
name = "debt"
scale = 100
min = "-1000000"
max = "1000000"
[[provider.column]]
name = "loans"
scale = 1
min = "0"
max = "100"

[[provider]]
name = "telecom"
[[provider.column]]
name = "tenure_months"
scale = 1
min = "0"
max = "600"

[[provider]]
name = "insurer"
[[provider.column]]
name = "claims"
scale = 1
min = "0"
max = "50"
[[provider.column]]
name = "premium"
scale = 100
min = "0"
max = "100000"
"#;

pub fn declaration() -> Declaration {
    Declaration::parse(Path::new("dataset.toml"), DECLARATION).expect("valid declaration")
}

/// One provider's rows: id and values at the declared scales.
pub type Rows = Vec<(String, Vec<i64>)>;

/// The consortium's enclave keys and the shared tag key.
pub struct Providers {
    pub declaration: Declaration,
    pub keys: Vec<HpkeSecretKey>,
    pub tagger: IdTagger,
}

impl Providers {
    pub fn new(declaration: Declaration) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let keys = declaration
            .providers
            .iter()
            .map(|_| HpkeSecretKey::generate(&mut rng).0)
            .collect();
        Self {
            declaration,
            keys,
            tagger: IdTagger::new(SecretBytes::new([3; 32])),
        }
    }

    pub fn public(&self, i: usize) -> HpkePublicKey {
        self.keys[i].public()
    }

    /// Provider `sender`'s sealed chunks, one list per recipient.
    pub fn publish(&self, sender: usize, rows: &Rows, seed: u64) -> Vec<Vec<SealedChunk>> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let name = &self.declaration.providers[sender].name;
        let fragments = split(
            &self.declaration,
            name,
            rows.iter().map(|(id, v)| (id.as_str(), v.as_slice())),
            &self.tagger,
            &mut rng,
        )
        .expect("split");
        fragments
            .iter()
            .enumerate()
            .map(|(j, rows)| {
                seal_fragment(
                    &self.declaration,
                    name,
                    &self.declaration.providers[j].name,
                    &self.public(j),
                    rows,
                    2,
                    &mut rng,
                )
                .expect("seal")
            })
            .collect()
    }

    /// Provider `me` fuses the chunks addressed to it.
    pub fn fuse(&self, me: usize, chunks: &[&SealedChunk]) -> FusedShare {
        let name = &self.declaration.providers[me].name;
        let mut fuser = Fuser::new(&self.declaration);
        for chunk in chunks {
            let opened = open_chunk(&self.declaration, name, &self.keys[me], chunk).expect("opens");
            fuser.add(opened).expect("added");
        }
        fuser.finish().expect("complete")
    }

    /// Every provider publishes its rows; every provider fuses.
    pub fn share(&self, tables: &[Rows], seed: u64) -> Vec<FusedShare> {
        let published: Vec<Vec<Vec<SealedChunk>>> = tables
            .iter()
            .enumerate()
            .map(|(s, rows)| self.publish(s, rows, seed + s as u64))
            .collect();
        (0..tables.len())
            .map(|me| {
                let mine: Vec<&SealedChunk> = published.iter().flat_map(|p| &p[me]).collect();
                self.fuse(me, &mine)
            })
            .collect()
    }

    /// The joint table in clear, by tag: each provider's values (two's
    /// complement) and presence in its slot, zeros where it lacks the id.
    pub fn joint(&self, tables: &[Rows]) -> BTreeMap<[u8; 32], Vec<u64>> {
        let width = self.declaration.width();
        let mut joint: BTreeMap<[u8; 32], Vec<u64>> = BTreeMap::new();
        for (s, rows) in tables.iter().enumerate() {
            let (offset, slot) = self.declaration.slot(s).expect("slot");
            for (id, values) in rows {
                let tag = self.tagger.tag(&self.declaration.dataset, id);
                let row = joint.entry(tag).or_insert_with(|| vec![0; width]);
                for (k, v) in values.iter().enumerate() {
                    row[offset + k] = *v as u64;
                }
                row[offset + slot - 1] = 1;
            }
        }
        joint
    }
}

/// Adds the providers' shares row by row.
pub fn reconstruct(shares: &[FusedShare]) -> BTreeMap<[u8; 32], Vec<u64>> {
    let mut sum: BTreeMap<[u8; 32], Vec<u64>> = BTreeMap::new();
    for share in shares {
        for (tag, row) in share.rows() {
            let acc = sum.entry(*tag).or_insert_with(|| vec![0; row.len()]);
            for (a, v) in acc.iter_mut().zip(row) {
                *a = a.wrapping_add(*v);
            }
        }
    }
    sum
}

/// Three small tables about overlapping customers.
pub fn tables() -> Vec<Rows> {
    let row = |id: &str, v: &[i64]| (id.to_owned(), v.to_vec());
    vec![
        vec![
            row("c-1", &[-25_000, 2]),
            row("c-2", &[100_000, 1]),
            row("c-4", &[0, 0]),
        ],
        vec![row("c-1", &[36]), row("c-3", &[120])],
        vec![row("c-2", &[1, 54_000]), row("c-3", &[0, 9_999])],
    ]
}

/// A logistic model over every provider's columns.
pub const MODEL: &str = r#"{
  "format": 1,
  "name": "credit-score",
  "version": 3,
  "kind": "logistic",
  "dataset": "credit-features",
  "intercept": "-1.25",
  "features": [
    {"column": "lender.debt", "weight": "0.00002"},
    {"column": "lender.loans", "weight": "-0.3"},
    {"column": "telecom.tenure_months", "weight": "0.01"},
    {"column": "insurer.premium", "weight": "0.0004"},
    {"column": "insurer.present", "weight": "0.5"}
  ]
}"#;
