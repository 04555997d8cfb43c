//! The PSI group, ristretto255, behind a batch-oriented interface: hash a batch
//! of identifiers to points and multiply them by one secret scalar, or
//! multiply a batch of encoded points by one secret scalar. Work is spread
//! over all cores with rayon. A vectorized backend can replace these functions
//! without touching the protocol engine.

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::secret::SecretBytes;
use crate::CryptoError;

/// Length of an encoded group element.
pub const ELEMENT_LEN: usize = 32;

/// An encoded group element as it travels on the wire.
pub type Element = [u8; ELEMENT_LEN];

/// Number of elements one rayon task handles.
const CHUNK: usize = 256;

/// Domain tag of the hash from identifiers to the group.
const HASH_TO_GROUP_DOMAIN: &[u8] = b"sotto/psi/hash-to-group/v1";

/// The groups a session can negotiate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupId {
    /// ristretto255 over curve25519.
    Ristretto255,
}

impl GroupId {
    /// The wire code of the group.
    pub fn code(self) -> u8 {
        match self {
            GroupId::Ristretto255 => 1,
        }
    }

    /// Parses a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(GroupId::Ristretto255),
            _ => None,
        }
    }

    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            GroupId::Ristretto255 => "ristretto255",
        }
    }
}

/// An element at `index` in a batch did not decode to a group element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("element {index} of the batch is not a valid ristretto255 encoding")]
pub struct InvalidElement {
    /// Position of the element within the batch.
    pub index: usize,
}

/// A secret exponent for one PSI session. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct EcdhScalar {
    scalar: Scalar,
    /// `scalar / 2`: multiplying by it and then doubling lets a whole batch be
    /// compressed with one field inversion.
    half: Scalar,
}

impl EcdhScalar {
    /// Draws a fresh non-zero scalar.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        loop {
            let scalar = Scalar::random(rng);
            if scalar != Scalar::ZERO {
                return Self::from_scalar(scalar);
            }
        }
    }

    /// Restores a scalar saved with [`EcdhScalar::to_bytes`].
    pub fn from_bytes(bytes: &SecretBytes<32>) -> Result<Self, CryptoError> {
        let scalar = Option::<Scalar>::from(Scalar::from_canonical_bytes(*bytes.expose()))
            .filter(|s| *s != Scalar::ZERO)
            .ok_or(CryptoError::BadEncoding {
                what: "PSI session scalar",
            })?;
        Ok(Self::from_scalar(scalar))
    }

    /// The canonical encoding, for a private session state file.
    pub fn to_bytes(&self) -> SecretBytes<32> {
        SecretBytes::new(self.scalar.to_bytes())
    }

    fn from_scalar(scalar: Scalar) -> Self {
        let half = scalar * Scalar::from(2u8).invert();
        Self { scalar, half }
    }

    /// Computes `k · H(salt, id)` for every identifier and encodes the results.
    pub fn hash_and_multiply<I: AsRef<[u8]> + Sync>(
        &self,
        salt: &SecretBytes<32>,
        ids: &[I],
    ) -> Vec<Element> {
        ids.par_chunks(CHUNK)
            .flat_map_iter(|chunk| {
                let halves: Vec<RistrettoPoint> = chunk
                    .iter()
                    .map(|id| hash_to_group(salt, id.as_ref()) * self.half)
                    .collect();
                encode_doubled(&halves)
            })
            .collect()
    }

    /// Computes `k · P` for every encoded point `P`, failing on the first
    /// encoding that is not a group element.
    pub fn multiply_encoded(&self, elements: &[Element]) -> Result<Vec<Element>, InvalidElement> {
        let chunks: Vec<Result<Vec<Element>, InvalidElement>> = elements
            .par_chunks(CHUNK)
            .enumerate()
            .map(|(chunk_index, chunk)| {
                let mut halves = Vec::with_capacity(chunk.len());
                for (offset, bytes) in chunk.iter().enumerate() {
                    let point = CompressedRistretto(*bytes)
                        .decompress()
                        .ok_or(InvalidElement {
                            index: chunk_index * CHUNK + offset,
                        })?;
                    halves.push(point * self.half);
                }
                Ok(encode_doubled(&halves))
            })
            .collect();
        let mut out = Vec::with_capacity(elements.len());
        for chunk in chunks {
            out.extend(chunk?);
        }
        Ok(out)
    }
}

impl std::fmt::Debug for EcdhScalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EcdhScalar(redacted)")
    }
}

fn hash_to_group(salt: &SecretBytes<32>, id: &[u8]) -> RistrettoPoint {
    let mut hasher = Sha512::new();
    hasher.update((HASH_TO_GROUP_DOMAIN.len() as u64).to_be_bytes());
    hasher.update(HASH_TO_GROUP_DOMAIN);
    hasher.update(salt.expose());
    hasher.update(id);
    let wide: [u8; 64] = hasher.finalize().into();
    RistrettoPoint::from_uniform_bytes(&wide)
}

/// Encodes `2 · P` for every `P`, sharing one inversion across the batch.
fn encode_doubled(halves: &[RistrettoPoint]) -> Vec<Element> {
    RistrettoPoint::double_and_compress_batch(halves)
        .into_iter()
        .map(|c| c.to_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn batch_results_match_one_point_at_a_time() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let k = EcdhScalar::random(&mut rng);
        let salt = SecretBytes::new([5; 32]);
        let ids: Vec<Vec<u8>> = (0..600u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let batch = k.hash_and_multiply(&salt, &ids);
        for (id, got) in ids.iter().zip(&batch) {
            let expected = (hash_to_group(&salt, id) * k.scalar).compress().to_bytes();
            assert_eq!(&expected, got);
        }
    }

    #[test]
    fn exponents_commute() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let (a, b) = (EcdhScalar::random(&mut rng), EcdhScalar::random(&mut rng));
        let salt = SecretBytes::new([6; 32]);
        let ids = [b"alice".to_vec(), b"bob".to_vec()];
        let ab = b
            .multiply_encoded(&a.hash_and_multiply(&salt, &ids))
            .expect("valid");
        let ba = a
            .multiply_encoded(&b.hash_and_multiply(&salt, &ids))
            .expect("valid");
        assert_eq!(ab, ba);
        let other_salt = a.hash_and_multiply(&SecretBytes::new([7; 32]), &ids);
        assert_ne!(a.hash_and_multiply(&salt, &ids), other_salt);
    }

    #[test]
    fn invalid_encoding_is_located() {
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let k = EcdhScalar::random(&mut rng);
        let ids: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut elements = k.hash_and_multiply(&SecretBytes::new([1; 32]), &ids);
        elements[290] = [0xff; 32];
        assert_eq!(
            k.multiply_encoded(&elements),
            Err(InvalidElement { index: 290 })
        );
    }

    #[test]
    fn scalar_round_trips_and_rejects_zero() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let k = EcdhScalar::random(&mut rng);
        let again = EcdhScalar::from_bytes(&k.to_bytes()).expect("canonical");
        assert_eq!(again.scalar, k.scalar);
        assert!(EcdhScalar::from_bytes(&SecretBytes::new([0; 32])).is_err());
    }
}
