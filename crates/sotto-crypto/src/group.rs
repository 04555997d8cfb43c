//! The PSI groups behind one batch-oriented interface: hash a batch of
//! identifiers to points and multiply them by one secret scalar, or multiply
//! a batch of encoded points by one secret scalar. Work is spread over all
//! cores with rayon. Two groups: ristretto255 (curve25519-dalek) and x25519
//! (see [`crate::x25519`], with its AVX-512 IFMA kernel).

use curve25519_dalek::ristretto::{CompressedRistretto, RistrettoPoint};
use curve25519_dalek::scalar::Scalar;
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use sha2::{Digest, Sha512};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::secret::SecretBytes;
use crate::x25519::X25519Scalar;
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
    /// Montgomery u-coordinates of curve25519 with RFC 9380 hashing and
    /// clamped (cofactor-clearing) scalars.
    X25519,
}

impl GroupId {
    /// Every group, in wire-code order.
    pub const ALL: [GroupId; 2] = [GroupId::Ristretto255, GroupId::X25519];

    /// The wire code of the group.
    pub fn code(self) -> u8 {
        match self {
            GroupId::Ristretto255 => 1,
            GroupId::X25519 => 2,
        }
    }

    /// Parses a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.code() == code)
    }

    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            GroupId::Ristretto255 => "ristretto255",
            GroupId::X25519 => "x25519",
        }
    }

    /// The faster group on this CPU: x25519 where the AVX-512 IFMA kernel
    /// runs, ristretto255 elsewhere (the portable x25519 is slower than it).
    pub fn fastest_here() -> Self {
        match crate::x25519::backend() {
            crate::x25519::Backend::Ifma => GroupId::X25519,
            crate::x25519::Backend::Portable => GroupId::Ristretto255,
        }
    }
}

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for GroupId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|g| g.name() == s)
            .ok_or_else(|| format!("unknown PSI group {s:?}; use ristretto255 or x25519"))
    }
}

/// What is wrong with a peer's element.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ElementFault {
    /// Not the canonical encoding of a ristretto255 point.
    #[error("not a valid ristretto255 encoding")]
    NotRistretto255,
    /// An x25519 u-coordinate that is not below 2^255 - 19.
    #[error("not a canonical x25519 u-coordinate (u must be below 2^255 - 19)")]
    NonCanonicalU,
    /// An x25519 element of small order (the product is u = 0).
    #[error("an x25519 point of small order (the product is u = 0)")]
    SmallOrder,
}

/// An element at `index` in a batch is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("element {index} of the batch is refused: {fault}")]
pub struct InvalidElement {
    /// Position of the element within the batch.
    pub index: usize,
    /// What is wrong with it.
    pub fault: ElementFault,
}

/// A secret exponent for one PSI session, in the session's group. Zeroized
/// on drop.
pub struct EcdhScalar {
    kind: ScalarKind,
}

enum ScalarKind {
    Ristretto(RistrettoScalar),
    X25519(X25519Scalar),
}

impl EcdhScalar {
    /// Draws a fresh secret for `group`.
    pub fn random<R: RngCore + CryptoRng>(group: GroupId, rng: &mut R) -> Self {
        let kind = match group {
            GroupId::Ristretto255 => ScalarKind::Ristretto(RistrettoScalar::random(rng)),
            GroupId::X25519 => ScalarKind::X25519(X25519Scalar::random(rng)),
        };
        Self { kind }
    }

    /// Restores a secret of `group` saved with [`EcdhScalar::to_bytes`].
    pub fn from_bytes(group: GroupId, bytes: &SecretBytes<32>) -> Result<Self, CryptoError> {
        let kind = match group {
            GroupId::Ristretto255 => ScalarKind::Ristretto(RistrettoScalar::from_bytes(bytes)?),
            GroupId::X25519 => ScalarKind::X25519(X25519Scalar::from_bytes(bytes)?),
        };
        Ok(Self { kind })
    }

    /// The encoding, for a private session state file.
    pub fn to_bytes(&self) -> SecretBytes<32> {
        match &self.kind {
            ScalarKind::Ristretto(s) => SecretBytes::new(s.scalar.to_bytes()),
            ScalarKind::X25519(s) => s.to_bytes(),
        }
    }

    /// The group of this secret.
    pub fn group(&self) -> GroupId {
        match &self.kind {
            ScalarKind::Ristretto(_) => GroupId::Ristretto255,
            ScalarKind::X25519(_) => GroupId::X25519,
        }
    }

    /// Computes `k · H(salt, id)` for every identifier and encodes the results.
    pub fn hash_and_multiply<I: AsRef<[u8]> + Sync>(
        &self,
        salt: &SecretBytes<32>,
        ids: &[I],
    ) -> Vec<Element> {
        match &self.kind {
            ScalarKind::Ristretto(s) => s.hash_and_multiply(salt, ids),
            ScalarKind::X25519(s) => s.hash_and_multiply(salt, ids),
        }
    }

    /// Computes `k · P` for every encoded point `P`, failing on the first
    /// element that is refused.
    pub fn multiply_encoded(&self, elements: &[Element]) -> Result<Vec<Element>, InvalidElement> {
        match &self.kind {
            ScalarKind::Ristretto(s) => s.multiply_encoded(elements),
            ScalarKind::X25519(s) => s.multiply_encoded(elements),
        }
    }
}

impl std::fmt::Debug for EcdhScalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EcdhScalar({}, redacted)", self.group())
    }
}

/// A ristretto255 exponent. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
struct RistrettoScalar {
    scalar: Scalar,
    /// `scalar / 2`: multiplying by it and then doubling lets a whole batch be
    /// compressed with one field inversion.
    half: Scalar,
}

impl RistrettoScalar {
    fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        loop {
            let scalar = Scalar::random(rng);
            if scalar != Scalar::ZERO {
                return Self::from_scalar(scalar);
            }
        }
    }

    fn from_bytes(bytes: &SecretBytes<32>) -> Result<Self, CryptoError> {
        let scalar = Option::<Scalar>::from(Scalar::from_canonical_bytes(*bytes.expose()))
            .filter(|s| *s != Scalar::ZERO)
            .ok_or(CryptoError::BadEncoding {
                what: "PSI session scalar",
            })?;
        Ok(Self::from_scalar(scalar))
    }

    fn from_scalar(scalar: Scalar) -> Self {
        let half = scalar * Scalar::from(2u8).invert();
        Self { scalar, half }
    }

    fn hash_and_multiply<I: AsRef<[u8]> + Sync>(
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

    fn multiply_encoded(&self, elements: &[Element]) -> Result<Vec<Element>, InvalidElement> {
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
                            fault: ElementFault::NotRistretto255,
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
        let k = RistrettoScalar::random(&mut rng);
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
        let (a, b) = (
            RistrettoScalar::random(&mut rng),
            RistrettoScalar::random(&mut rng),
        );
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
        let k = RistrettoScalar::random(&mut rng);
        let ids: Vec<Vec<u8>> = (0..300u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let mut elements = k.hash_and_multiply(&SecretBytes::new([1; 32]), &ids);
        elements[290] = [0xff; 32];
        assert_eq!(
            k.multiply_encoded(&elements),
            Err(InvalidElement {
                index: 290,
                fault: ElementFault::NotRistretto255
            })
        );
    }

    #[test]
    fn scalar_round_trips_and_rejects_zero() {
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let k = RistrettoScalar::random(&mut rng);
        let again =
            RistrettoScalar::from_bytes(&SecretBytes::new(k.scalar.to_bytes())).expect("canonical");
        assert_eq!(again.scalar, k.scalar);
        assert!(RistrettoScalar::from_bytes(&SecretBytes::new([0; 32])).is_err());
    }

    #[test]
    fn every_group_round_trips_its_code_name_and_scalar() {
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        for group in GroupId::ALL {
            assert_eq!(GroupId::from_code(group.code()), Some(group));
            assert_eq!(group.name().parse::<GroupId>(), Ok(group));
            let k = EcdhScalar::random(group, &mut rng);
            let again = EcdhScalar::from_bytes(group, &k.to_bytes()).expect("valid");
            assert_eq!(again.to_bytes().expose(), k.to_bytes().expose());
            assert_eq!(again.group(), group);
        }
        assert_eq!(GroupId::from_code(3), None);
        assert!("p256".parse::<GroupId>().is_err());
    }
}
