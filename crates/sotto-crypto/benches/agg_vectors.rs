//! Per-vector costs of secure aggregation at 10^6 ids x 3 columns (two
//! summed columns and presence): mask expansion, ring addition, the seal of
//! a share and the payload digest.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::secret::SecretBytes;
use sotto_crypto::{aead, hash, ring};

const LEN: usize = 3_000_000;

fn vectors(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let seed = SecretBytes::new([7; 32]);
    let a = ring::random_vector(&mut rng, LEN);
    let b = ring::random_vector(&mut rng, LEN);
    let bytes = ring::to_le_bytes(&a);
    let key = SecretBytes::new([3; 32]);
    let mut g = c.benchmark_group("aggregation vector (3e6 ring elements, 24 MB)");
    g.throughput(Throughput::Bytes((LEN * 8) as u64));
    g.sample_size(10);
    g.bench_function("expand a dealt seed (HKDF + ChaCha20)", |bench| {
        bench.iter(|| ring::expand_seed(&seed, b"bench", LEN))
    });
    g.bench_function("draw a random vector (ChaCha20 generator)", |bench| {
        bench.iter(|| ring::random_vector(&mut rng, LEN))
    });
    g.bench_function("add two vectors (wrapping)", |bench| {
        let mut acc = a.clone();
        bench.iter(|| ring::add_assign(&mut acc, &b))
    });
    g.bench_function("encode to little-endian bytes", |bench| {
        bench.iter(|| ring::to_le_bytes(&a))
    });
    g.bench_function("seal a share (AES-256-GCM)", |bench| {
        bench.iter(|| aead::seal(&key, b"ctx", &bytes, &mut rng))
    });
    g.bench_function("payload digest (SHA-256)", |bench| {
        bench.iter(|| hash::sha256(&bytes))
    });
    g.finish();
}

criterion_group!(benches, vectors);
criterion_main!(benches);
