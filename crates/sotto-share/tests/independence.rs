//! One provider's fused share says nothing about the data: for two data
//! sets of the same customers — every value zero, and values spread over
//! the declared ranges — the values of one provider's share fall into
//! 16 buckets (top four bits, and low four bits) as a uniform variable
//! would, and the two data sets' bucket counts do not differ beyond chance
//! (chi-square, 15 degrees of freedom, critical value 37.7 at p = 0.001).
//! Fixed seeds keep the test deterministic; shares that leaked the data
//! (zeros staying zero, small values staying small) fail it by orders of
//! magnitude.

#![allow(clippy::expect_used)]

mod common;

use common::{declaration, Providers, Rows};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

const CRITICAL: f64 = 37.7;
const CUSTOMERS: usize = 1500;

fn tables(zero: bool) -> Vec<Rows> {
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let mut value = |max: i64| {
        if zero {
            0
        } else {
            i64::try_from(rng.next_u64() % (max as u64 + 1)).expect("small")
        }
    };
    let widths_and_max: [(usize, i64); 3] = [(2, 100), (1, 600), (2, 50)];
    widths_and_max
        .iter()
        .map(|&(width, max)| {
            (0..CUSTOMERS)
                .map(|i| (format!("c-{i}"), (0..width).map(|_| value(max)).collect()))
                .collect()
        })
        .collect()
}

fn buckets(values: impl Iterator<Item = u64>, bucket: fn(u64) -> usize) -> [f64; 16] {
    let mut counts = [0f64; 16];
    for v in values {
        counts[bucket(v)] += 1.0;
    }
    counts
}

fn uniformity(counts: &[f64; 16]) -> f64 {
    let expected = counts.iter().sum::<f64>() / 16.0;
    counts
        .iter()
        .map(|c| (c - expected).powi(2) / expected)
        .sum()
}

fn two_sample(a: &[f64; 16], b: &[f64; 16]) -> f64 {
    a.iter()
        .zip(b)
        .filter(|(x, y)| *x + *y > 0.0)
        .map(|(x, y)| (x - y).powi(2) / (x + y))
        .sum()
}

#[test]
fn one_providers_share_is_distributed_alike_for_any_data() {
    let providers = Providers::new(declaration());
    let zero = providers.share(&tables(true), 5);
    let spread = providers.share(&tables(false), 6);
    let top: fn(u64) -> usize = |v| (v >> 60) as usize;
    let low: fn(u64) -> usize = |v| (v & 15) as usize;
    for (name, bucket) in [("top four bits", top), ("low four bits", low)] {
        for me in 0..3 {
            let values = |shares: &[sotto_share::FusedShare]| {
                buckets(
                    shares[me]
                        .rows()
                        .flat_map(|(_, row)| row.to_vec())
                        .collect::<Vec<_>>()
                        .into_iter(),
                    bucket,
                )
            };
            let (a, b) = (values(&zero), values(&spread));
            assert!(
                uniformity(&a) < CRITICAL,
                "provider {me}, all-zero data, {name}: {a:?}"
            );
            assert!(
                uniformity(&b) < CRITICAL,
                "provider {me}, spread data, {name}: {b:?}"
            );
            assert!(
                two_sample(&a, &b) < CRITICAL,
                "provider {me}, {name}: the share's distribution depends on the data"
            );
        }
    }
    let joint = providers.joint(&tables(true));
    let leaked = buckets(joint.values().flatten().copied(), top);
    assert!(
        uniformity(&leaked) > 1000.0 * CRITICAL,
        "the test tells data from shares: the clear table is far from uniform"
    );
}
