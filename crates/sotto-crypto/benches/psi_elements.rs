//! Per-element costs of PSI: hash to the group, exponentiate (ristretto255,
//! and x25519 on each backend this CPU runs, one core), BLS sign, and BLS
//! verification by per-key aggregation.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::bls::{find_invalid, hash_message, BlsSecretKey, SignedItem};
use sotto_crypto::group::{EcdhScalar, GroupId};
use sotto_crypto::secret::SecretBytes;
use sotto_crypto::x25519::{expand_ids, hash_expanded_with, multiply_with, Backend, X25519Scalar};

const BATCH: usize = 4096;

fn ids() -> Vec<Vec<u8>> {
    (0..BATCH)
        .map(|i| format!("customer{i:08}@example.org").into_bytes())
        .collect()
}

fn group(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let k = EcdhScalar::random(GroupId::Ristretto255, &mut rng);
    let salt = SecretBytes::new([9; 32]);
    let ids = ids();
    let encrypted = k.hash_and_multiply(&salt, &ids);
    let mut g = c.benchmark_group("ristretto255 (batch of 4096)");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    g.bench_function("hash and multiply (u = a*H(salt||x))", |b| {
        b.iter(|| k.hash_and_multiply(&salt, &ids))
    });
    g.bench_function("decode, multiply, encode (w = b*u)", |b| {
        b.iter(|| k.multiply_encoded(&encrypted))
    });
    g.finish();
}

fn bls(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let keys: Vec<BlsSecretKey> = (0..2).map(|_| BlsSecretKey::generate(&mut rng)).collect();
    let publics: Vec<_> = keys.iter().map(BlsSecretKey::public).collect();
    let messages: Vec<Vec<u8>> = (0..256)
        .map(|i| format!("sotto/psi/elem/v1 message {i:0>80}").into_bytes())
        .collect();
    let signatures: Vec<[u8; 48]> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| keys[i % 2].sign(m))
        .collect();
    let mut g = c.benchmark_group("BLS12-381 min_sig (per element, one core)");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hash to G1", |b| b.iter(|| hash_message(&messages[0])));
    g.bench_function("sign", |b| b.iter(|| keys[0].sign(&messages[0])));
    g.finish();
    let mut g = c.benchmark_group("BLS12-381 aggregate verification (batch of 256, 2 keys)");
    g.throughput(Throughput::Elements(messages.len() as u64));
    g.sample_size(10);
    let hashed = || -> Vec<SignedItem<'_>> {
        messages
            .iter()
            .zip(&signatures)
            .enumerate()
            .map(|(i, (m, s))| SignedItem {
                key: i % 2,
                hash: hash_message(m),
                signature: s,
            })
            .collect()
    };
    g.bench_function("hash all and verify per key", |b| {
        b.iter(|| assert!(find_invalid(&publics, &hashed()).is_empty()))
    });
    g.bench_function("verify per key, hashes precomputed", |b| {
        b.iter_batched(
            hashed,
            |items| assert!(find_invalid(&publics, &items).is_empty()),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn x25519(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let k = X25519Scalar::random(&mut rng);
    let scalar = *k.to_bytes().expose();
    let salt = SecretBytes::new([9; 32]);
    let ids = ids();
    let encrypted = k.hash_and_multiply(&salt, &ids);
    for backend in Backend::available() {
        let mut g = c.benchmark_group(format!(
            "x25519 {} (batch of 4096, one core)",
            backend.name()
        ));
        g.throughput(Throughput::Elements(BATCH as u64));
        g.sample_size(10);
        g.bench_function("expand_message_xmd (SHA-512)", |b| {
            b.iter(|| expand_ids(&salt, &ids))
        });
        g.bench_function("hash to curve (RFC 9380 RO)", |b| {
            b.iter(|| hash_expanded_with(backend, &expand_ids(&salt, &ids), None))
        });
        g.bench_function("hash and multiply", |b| {
            b.iter(|| hash_expanded_with(backend, &expand_ids(&salt, &ids), Some(&scalar)))
        });
        g.bench_function("multiply (X25519 ladder)", |b| {
            b.iter(|| multiply_with(backend, &scalar, &encrypted))
        });
        g.finish();
    }
}

criterion_group!(benches, group, x25519, bls);
criterion_main!(benches);
