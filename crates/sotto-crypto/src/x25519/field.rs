//! Portable arithmetic mod p = 2^255 - 19 for the parts of the X25519 group
//! that curve25519-dalek does not expose (hash to field, Elligator 2, the
//! rational map to edwards25519), on crypto-bigint's constant-time residues;
//! and the limb conversions shared with the vector kernel.

use std::sync::OnceLock;

use crypto_bigint::modular::constant_mod::{Residue, ResidueParams};
use crypto_bigint::{impl_modulus, Encoding, U256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

impl_modulus!(
    Modulus25519,
    U256,
    "7fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffed"
);

/// An element of the field, in Montgomery form inside crypto-bigint.
pub type Fp = Residue<Modulus25519, { U256::LIMBS }>;

/// Five limbs in radix 2^51, the kernel's representation.
pub type Limbs = [u64; 5];

/// The field's modulus, little-endian.
pub fn modulus_bytes() -> [u8; 32] {
    Modulus25519::MODULUS.to_le_bytes()
}

/// Whether a little-endian encoding is the canonical one of a field element
/// (below p, so bit 255 clear too).
pub fn is_canonical(bytes: &[u8; 32]) -> bool {
    U256::from_le_bytes(*bytes) < Modulus25519::MODULUS
}

/// The field element of any 32 little-endian bytes (the value mod p).
pub fn from_bytes(bytes: &[u8; 32]) -> Fp {
    Fp::new(&U256::from_le_bytes(*bytes))
}

/// The canonical little-endian encoding.
pub fn to_bytes(value: &Fp) -> [u8; 32] {
    value.retrieve().to_le_bytes()
}

/// A small constant.
pub fn small(v: u64) -> Fp {
    Fp::new(&U256::from_u64(v))
}

/// RFC 9380's sgn0: the parity of the canonical representative.
pub fn is_odd(value: &Fp) -> Choice {
    Choice::from(value.retrieve().to_le_bytes()[0] & 1)
}

/// Reduces a 48-byte big-endian integer mod p (RFC 9380's OS2IP then mod),
/// as `hi · 2^256 + lo` with 2^256 = 38 mod p.
pub fn from_wide_be(bytes: &[u8; 48]) -> Fp {
    let mut hi = [0u8; 32];
    hi[16..].copy_from_slice(&bytes[..16]);
    let mut lo = [0u8; 32];
    lo.copy_from_slice(&bytes[16..]);
    let hi = Fp::new(&U256::from_be_bytes(hi));
    let lo = Fp::new(&U256::from_be_bytes(lo));
    hi * small(38) + lo
}

/// A square root of `a` if it has one: `(true, r)` with `r^2 = a`.
pub fn sqrt(a: &Fp) -> (Choice, Fp) {
    sqrt_with(a, &constants().sqrt_m1)
}

/// For p = 5 mod 8 the candidate is `a^((p+3)/8)`; when its square is `-a`
/// it is fixed by `sqrt_m1`.
fn sqrt_with(a: &Fp, sqrt_m1: &Fp) -> (Choice, Fp) {
    let candidate = a.pow(&exponent_p_plus_3_over_8());
    let square = candidate.square();
    let direct = square.ct_eq(a);
    let twisted = square.ct_eq(&a.neg());
    let root = Fp::conditional_select(&candidate, &(candidate * *sqrt_m1), twisted);
    (direct | twisted, root)
}

fn exponent_p_plus_3_over_8() -> U256 {
    Modulus25519::MODULUS
        .wrapping_add(&U256::from_u64(3))
        .shr_vartime(3)
}

/// Constants of the map and the kernel.
pub struct Constants {
    /// sqrt(-1) = 2^((p-1)/4).
    pub sqrt_m1: Fp,
    /// 2^((p+3)/8), the factor between square-root candidates of g(x1) and
    /// g(x2) in the inversion-free Elligator 2.
    pub two_pow_c1: Fp,
    /// sqrt(-486664) with sgn0 = 0, the rational map's constant.
    pub sqrt_m486664: Fp,
    /// 2d of edwards25519, d = -121665/121666.
    pub edwards_2d: Fp,
}

/// The constants, computed once.
pub fn constants() -> &'static Constants {
    static CONSTANTS: OnceLock<Constants> = OnceLock::new();
    CONSTANTS.get_or_init(compute_constants)
}

fn compute_constants() -> Constants {
    let quarter = Modulus25519::MODULUS
        .wrapping_sub(&U256::ONE)
        .shr_vartime(2);
    let sqrt_m1 = small(2).pow(&quarter);
    let (_, root) = sqrt_with(&small(486_664).neg(), &sqrt_m1);
    let (inverse_121666, _) = small(121_666).invert();
    let d = small(121_665).neg() * inverse_121666;
    Constants {
        sqrt_m1,
        two_pow_c1: small(2).pow(&exponent_p_plus_3_over_8()),
        sqrt_m486664: Fp::conditional_select(&root, &root.neg(), is_odd(&root)),
        edwards_2d: d + d,
    }
}

/// The kernel's limbs of a field element.
pub fn limbs(value: &Fp) -> Limbs {
    limbs_from_bytes(&to_bytes(value))
}

/// Splits 255 bits of a little-endian encoding into radix-2^51 limbs.
pub fn limbs_from_bytes(bytes: &[u8; 32]) -> Limbs {
    let word = |i: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[8 * i..8 * i + 8]);
        u64::from_le_bytes(w)
    };
    let (w0, w1, w2, w3) = (word(0), word(1), word(2), word(3));
    let mask = (1u64 << 51) - 1;
    [
        w0 & mask,
        ((w0 >> 51) | (w1 << 13)) & mask,
        ((w1 >> 38) | (w2 << 26)) & mask,
        ((w2 >> 25) | (w3 << 39)) & mask,
        (w3 >> 12) & mask,
    ]
}

/// Joins limbs below 2^51 into a little-endian encoding.
pub fn bytes_from_limbs(l: &Limbs) -> [u8; 32] {
    let words = [
        l[0] | (l[1] << 51),
        (l[1] >> 13) | (l[2] << 38),
        (l[2] >> 26) | (l[3] << 25),
        (l[3] >> 39) | (l[4] << 12),
    ];
    let mut out = [0u8; 32];
    for (i, w) in words.iter().enumerate() {
        out[8 * i..8 * i + 8].copy_from_slice(&w.to_le_bytes());
    }
    out
}
