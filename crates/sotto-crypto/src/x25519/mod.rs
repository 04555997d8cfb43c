//! The X25519 PSI group. Identifiers are hashed with RFC 9380's
//! curve25519_XMD:SHA-512_ELL2_RO_ (message = session salt ‖ identifier,
//! under sotto's domain tag); elements are canonical Montgomery
//! u-coordinates; secret scalars are clamped X25519 scalars, so multiples of
//! the cofactor 8.
//!
//! Two backends compute the same function: the eight-lane AVX-512 IFMA kernel
//! ([`ifma`], the only unsafe code of the project), chosen at run time when
//! the CPU has the instructions, and the portable one (curve25519-dalek and
//! crypto-bigint). Setting `SOTTO_X25519_BACKEND=portable` forces the
//! portable backend, for tests and benchmarks.

pub mod field;
mod h2c;
#[cfg(target_arch = "x86_64")]
mod ifma;
pub mod portable;

use std::sync::OnceLock;

use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::group::{ElementFault, InvalidElement};
use crate::secret::SecretBytes;
use crate::CryptoError;

pub use h2c::{expand_message_xmd, fields_of_expanded, hash_to_field, EXPANDED_LEN};

/// The environment variable that forces a backend (`portable`).
pub const BACKEND_VARIABLE: &str = "SOTTO_X25519_BACKEND";

/// The domain separation tag of sotto's hash from identifiers to the group:
/// application, version and suite, short enough (44 bytes) that each of
/// expand_message_xmd's SHA-512 calls after the first fits one block.
pub const HASH_DST: &[u8] = b"sotto-psi-v1-curve25519_XMD:SHA-512_ELL2_RO_";

/// Elements one rayon task handles (one batched inversion each).
const CHUNK: usize = 256;

/// Which implementation computes the group operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Eight ladders at once in the lanes of AVX-512 IFMA.
    Ifma,
    /// curve25519-dalek and crypto-bigint, one element at a time.
    Portable,
}

impl Backend {
    /// The name shown in reports and benchmarks.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Ifma => "avx512-ifma",
            Backend::Portable => "portable",
        }
    }

    /// The backends this CPU can run.
    pub fn available() -> Vec<Backend> {
        if ifma_available() {
            vec![Backend::Ifma, Backend::Portable]
        } else {
            vec![Backend::Portable]
        }
    }
}

fn ifma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        ifma::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The backend in use: IFMA where the CPU has it, unless
/// `SOTTO_X25519_BACKEND=portable`. Read once per process.
pub fn backend() -> Backend {
    static BACKEND: OnceLock<Backend> = OnceLock::new();
    *BACKEND.get_or_init(|| {
        let forced_portable = std::env::var(BACKEND_VARIABLE).is_ok_and(|v| v == "portable");
        if !forced_portable && ifma_available() {
            Backend::Ifma
        } else {
            Backend::Portable
        }
    })
}

/// The Montgomery u of `8 · (map(u0) + map(u1))` for every
/// expand_message_xmd output (whose two halves reduce to u0 and u1), times
/// `scalar` when one is given.
pub fn hash_expanded_with(
    backend: Backend,
    expanded: &[[u8; EXPANDED_LEN]],
    scalar: Option<&[u8; 32]>,
) -> Vec<[u8; 32]> {
    #[cfg(target_arch = "x86_64")]
    if backend == Backend::Ifma {
        if let Some(out) = ifma::hash_to_curve(expanded, scalar) {
            return out;
        }
    }
    expanded
        .iter()
        .map(|e| {
            let hashed = portable::hash_fields(&fields_of_expanded(e));
            match scalar {
                Some(s) => portable::multiply(s, &hashed),
                None => hashed,
            }
        })
        .collect()
}

/// X25519(scalar, u) for every u, encodings taken as they are (bit 255
/// ignored); callers check canonical form first.
pub fn multiply_with(backend: Backend, scalar: &[u8; 32], elements: &[[u8; 32]]) -> Vec<[u8; 32]> {
    #[cfg(target_arch = "x86_64")]
    if backend == Backend::Ifma {
        if let Some(out) = ifma::multiply(scalar, elements) {
            return out;
        }
    }
    elements
        .iter()
        .map(|u| portable::multiply(scalar, u))
        .collect()
}

/// expand_message_xmd of every identifier under a session salt (message =
/// salt ‖ identifier), the input of [`hash_expanded_with`].
pub fn expand_ids(salt: &SecretBytes<32>, ids: &[impl AsRef<[u8]>]) -> Vec<[u8; EXPANDED_LEN]> {
    ids.iter()
        .map(|id| expand_message_xmd(&[salt.expose(), id.as_ref()], HASH_DST))
        .collect()
}

/// A clamped X25519 scalar for one PSI session. Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct X25519Scalar([u8; 32]);

impl X25519Scalar {
    /// Draws a fresh scalar: 32 random bytes, clamped as in RFC 7748.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        bytes[0] &= 0xf8;
        bytes[31] &= 0x7f;
        bytes[31] |= 0x40;
        Self(bytes)
    }

    /// Restores a scalar saved with [`X25519Scalar::to_bytes`]; anything not
    /// in clamped form is refused.
    pub fn from_bytes(bytes: &SecretBytes<32>) -> Result<Self, CryptoError> {
        let b = bytes.expose();
        if b[0] & 0x07 != 0 || b[31] & 0x80 != 0 || b[31] & 0x40 == 0 {
            return Err(CryptoError::BadEncoding {
                what: "PSI session scalar (x25519, not clamped)",
            });
        }
        Ok(Self(*b))
    }

    /// The encoding, for a private session state file.
    pub fn to_bytes(&self) -> SecretBytes<32> {
        SecretBytes::new(self.0)
    }

    /// Computes `k · H(salt, id)` for every identifier.
    pub fn hash_and_multiply<I: AsRef<[u8]> + Sync>(
        &self,
        salt: &SecretBytes<32>,
        ids: &[I],
    ) -> Vec<[u8; 32]> {
        let backend = backend();
        ids.par_chunks(CHUNK)
            .flat_map_iter(|chunk| {
                hash_expanded_with(backend, &expand_ids(salt, chunk), Some(&self.0))
            })
            .collect()
    }

    /// Computes `k · P` for every encoded u, failing on the first element
    /// (in batch order) that is not canonical or gives u = 0.
    pub fn multiply_encoded(&self, elements: &[[u8; 32]]) -> Result<Vec<[u8; 32]>, InvalidElement> {
        let refused = |index, fault| InvalidElement { index, fault };
        if let Some(index) = elements.iter().position(|u| !field::is_canonical(u)) {
            return Err(refused(index, ElementFault::NonCanonicalU));
        }
        let backend = backend();
        let out: Vec<[u8; 32]> = elements
            .par_chunks(CHUNK)
            .flat_map_iter(|chunk| multiply_with(backend, &self.0, chunk))
            .collect();
        if let Some(index) = out.iter().position(|u| u == &[0u8; 32]) {
            return Err(refused(index, ElementFault::SmallOrder));
        }
        Ok(out)
    }
}

impl std::fmt::Debug for X25519Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("X25519Scalar(redacted)")
    }
}
