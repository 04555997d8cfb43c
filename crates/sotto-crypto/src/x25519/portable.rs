//! The portable backend, for CPUs without AVX-512 IFMA and as the reference
//! the kernel is tested against: RFC 9380's Elligator 2 written directly from
//! its definition on crypto-bigint residues, point addition and cofactor
//! clearing on curve25519-dalek's edwards25519, and the X25519 ladder of
//! curve25519-dalek.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::traits::Identity;
use subtle::{ConditionallySelectable, ConstantTimeEq};

use super::field::{self, Fp};

/// The Montgomery coefficient A of curve25519.
const MONTGOMERY_A: u64 = 486_662;

/// g(x) = x^3 + A x^2 + x.
fn curve_rhs(x: &Fp) -> Fp {
    let a = field::small(MONTGOMERY_A);
    *x * (*x * (*x + a) + Fp::ONE)
}

/// RFC 9380 section 6.7.1, Z = 2: the Montgomery point `(x, y)` of `u`.
pub fn map_to_curve(u: &Fp) -> (Fp, Fp) {
    let a = field::small(MONTGOMERY_A);
    let u2 = u.square();
    let (inverse, _) = (Fp::ONE + u2 + u2).invert();
    let x1 = (a * inverse).neg();
    let x2 = x1.neg() - a;
    let (x1_square, y1) = field::sqrt(&curve_rhs(&x1));
    let (_, y2) = field::sqrt(&curve_rhs(&x2));
    let x = Fp::conditional_select(&x2, &x1, x1_square);
    let mut y = Fp::conditional_select(&y2, &y1, x1_square);
    // sgn0(y) must be 1 for x1 and 0 for x2.
    let flip = field::is_odd(&y) ^ x1_square;
    y = Fp::conditional_select(&y, &y.neg(), flip);
    (x, y)
}

/// RFC 9380's rational map from curve25519 to edwards25519; y = 0 or x = -1
/// go to the identity.
pub fn to_edwards(x: &Fp, y: &Fp) -> EdwardsPoint {
    let exceptional = y.ct_eq(&Fp::ZERO) | x.ct_eq(&Fp::ONE.neg());
    let (y_inverse, _) = y.invert();
    let (x_plus_one_inverse, _) = (*x + Fp::ONE).invert();
    let edwards_x = field::constants().sqrt_m486664 * *x * y_inverse;
    let edwards_y = (*x - Fp::ONE) * x_plus_one_inverse;
    let mut compressed = field::to_bytes(&edwards_y);
    compressed[31] |= field::is_odd(&edwards_x).unwrap_u8() << 7;
    let point = CompressedEdwardsY(compressed)
        .decompress()
        .unwrap_or_else(EdwardsPoint::identity);
    EdwardsPoint::conditional_select(&point, &EdwardsPoint::identity(), exceptional)
}

/// The Montgomery u of `8 · (map(u0) + map(u1))`.
pub fn hash_fields(fields: &[[u8; 32]; 2]) -> [u8; 32] {
    let [q0, q1] = fields.map(|u| {
        let (x, y) = map_to_curve(&field::from_bytes(&u));
        to_edwards(&x, &y)
    });
    (q0 + q1).mul_by_cofactor().to_montgomery().to_bytes()
}

/// X25519 of a clamped scalar and a canonical u-coordinate.
pub fn multiply(scalar: &[u8; 32], u: &[u8; 32]) -> [u8; 32] {
    MontgomeryPoint(*u).mul_clamped(*scalar).to_bytes()
}
