//! Arithmetic in the ring Z_2^64 (wrapping `u64`) over whole vectors, and the
//! pseudo-random vectors that masks and shares are drawn from.
//!
//! A mask vector is either drawn from a random generator or expanded from a
//! 32-byte seed: `ChaCha20(HKDF-SHA256(ikm = seed, info))`, with `info`
//! naming the domain and everything the mask is bound to, so that one seed
//! never yields the same stream for two purposes.

use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use zeroize::Zeroize;

use crate::secret::SecretBytes;

/// `acc[i] += add[i]` (wrapping). Panics never: extra elements of the longer
/// slice are left alone; callers check shapes first.
pub fn add_assign(acc: &mut [u64], add: &[u64]) {
    for (a, b) in acc.iter_mut().zip(add) {
        *a = a.wrapping_add(*b);
    }
}

/// `acc[i] -= sub[i]` (wrapping).
pub fn sub_assign(acc: &mut [u64], sub: &[u64]) {
    for (a, b) in acc.iter_mut().zip(sub) {
        *a = a.wrapping_sub(*b);
    }
}

/// A vector of `len` uniformly random ring elements from `rng`.
pub fn random_vector<R: RngCore + CryptoRng>(rng: &mut R, len: usize) -> Vec<u64> {
    let mut out = vec![0u64; len];
    fill_from(rng, &mut out);
    out
}

fn fill_from<R: RngCore + ?Sized>(rng: &mut R, out: &mut [u64]) {
    for chunk in out.chunks_mut(1024) {
        let mut bytes = [0u8; 8 * 1024];
        let bytes = &mut bytes[..chunk.len() * 8];
        rng.fill_bytes(bytes);
        for (value, le) in chunk.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(le);
            *value = u64::from_le_bytes(word);
        }
        bytes.zeroize();
    }
}

/// Expands `seed` into `len` ring elements:
/// `ChaCha20(key = HKDF-SHA256(ikm = seed, info))`.
pub fn expand_seed(seed: &SecretBytes<32>, info: &[u8], len: usize) -> Vec<u64> {
    let key = crate::kdf::hkdf_key(None, seed.expose(), info);
    let mut rng = ChaCha20Rng::from_seed(*key.expose());
    let mut out = vec![0u64; len];
    fill_from(&mut rng, &mut out);
    out
}

/// Little-endian bytes of a vector (the wire form).
pub fn to_le_bytes(values: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 8);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Parses little-endian bytes back into a vector; `None` when the length is
/// not a multiple of 8.
pub fn from_le_bytes(bytes: &[u8]) -> Option<Vec<u64>> {
    if !bytes.len().is_multiple_of(8) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| {
                let mut word = [0u8; 8];
                word.copy_from_slice(c);
                u64::from_le_bytes(word)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn seed_expansion_is_deterministic_and_bound_to_info() {
        let seed = SecretBytes::new([5; 32]);
        let expand = expand_seed;
        let a = expand(&seed, b"job-1/client-a", 3000);
        assert_eq!(a, expand(&seed, b"job-1/client-a", 3000));
        assert_ne!(a, expand(&seed, b"job-1/client-b", 3000));
        assert_ne!(
            a,
            expand(&SecretBytes::new([6; 32]), b"job-1/client-a", 3000)
        );
        assert_eq!(a[..10], expand(&seed, b"job-1/client-a", 10)[..]);
    }

    #[test]
    fn add_then_subtract_is_identity() {
        let base = random_vector(&mut OsRng, 100);
        let mask = random_vector(&mut OsRng, 100);
        let mut v = base.clone();
        add_assign(&mut v, &mask);
        assert_ne!(v, base);
        sub_assign(&mut v, &mask);
        assert_eq!(v, base);
    }

    #[test]
    fn bytes_round_trip_and_bad_length() {
        let v = vec![1, u64::MAX, 42];
        assert_eq!(from_le_bytes(&to_le_bytes(&v)), Some(v));
        assert_eq!(from_le_bytes(&[1, 2, 3]), None);
    }
}
