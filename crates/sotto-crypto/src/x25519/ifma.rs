//! The eight-lane AVX-512 IFMA kernel: field arithmetic mod 2^255 - 19 in the
//! eight 64-bit lanes of a 512-bit register, the X25519 Montgomery ladder, the
//! Elligator 2 map of RFC 9380 and the few Edwards operations its random-oracle
//! suite needs, each run on eight independent elements at once.
//!
//! This is the only module of the project with `unsafe` code. Every function
//! that uses the instructions carries `#[target_feature(enable = "avx512f,
//! avx512ifma")]`; the public entry points check the CPU at run time with
//! `is_x86_feature_detected!` before entering one.
//!
//! Representation: a field element is five limbs in radix 2^51, limb `i` of
//! lane `l` in lane `l` of register `i`. The multiply instructions read only
//! the low 52 bits of their operands, so every value handed to a
//! multiplication must have limbs below 2^52. Every operation here returns
//! "carried" limbs: limbs 1-4 below 2^51 and limb 0 below 2^51 + 2^17 (one
//! carry pass from limb 0 up, the top carry wrapped into limb 0 times 19).
//! So twice a limb 1-4 is still a valid operand (squaring uses this), while
//! the sum of two carried values is carried again before it is multiplied.
//! Values are reduced to the canonical representative only to compare, to
//! read a sign and to encode.

use std::arch::x86_64::{
    __m512i, __mmask8, _mm512_add_epi64, _mm512_and_si512, _mm512_cmpeq_epi64_mask,
    _mm512_loadu_epi64, _mm512_madd52hi_epu64, _mm512_madd52lo_epu64, _mm512_mask_blend_epi64,
    _mm512_set1_epi64, _mm512_setzero_si512, _mm512_slli_epi64, _mm512_srli_epi64,
    _mm512_storeu_epi64, _mm512_sub_epi64,
};

use super::field::{self, Limbs};
use super::h2c::{wide_pieces, EXPANDED_LEN};

/// Lanes per register.
pub const LANES: usize = 8;

const MASK51: u64 = (1 << 51) - 1;

/// Whether this CPU runs the kernel.
pub fn available() -> bool {
    is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512ifma")
}

/// Eight field elements, one per lane.
#[derive(Clone, Copy)]
struct Fe8([__m512i; 5]);

/// Eight points of edwards25519 in extended coordinates (X:Y:Z:T).
#[derive(Clone, Copy)]
struct Edwards8 {
    x: Fe8,
    y: Fe8,
    z: Fe8,
    t: Fe8,
}

/// Field constants in lane form.
#[derive(Clone, Copy)]
struct Constants {
    sqrt_m1: Fe8,
    two_pow_c1: Fe8,
    sqrt_m486664: Fe8,
    edwards_2d: Fe8,
    montgomery_a: Fe8,
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn splat(v: u64) -> __m512i {
    _mm512_set1_epi64(v as i64)
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn fe_const(limbs: &Limbs) -> Fe8 {
    Fe8(limbs.map(|v| splat(v)))
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn fe_small(v: u64) -> Fe8 {
    let zero = _mm512_setzero_si512();
    Fe8([splat(v), zero, zero, zero, zero])
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn constants() -> Constants {
    let shared = field::constants();
    let lanes = |value: &field::Fp| fe_const(&field::limbs(value));
    Constants {
        sqrt_m1: lanes(&shared.sqrt_m1),
        two_pow_c1: lanes(&shared.two_pow_c1),
        sqrt_m486664: lanes(&shared.sqrt_m486664),
        edwards_2d: lanes(&shared.edwards_2d),
        montgomery_a: fe_small(486_662),
    }
}

/// Loads eight canonical little-endian encodings (bit 255 ignored).
#[target_feature(enable = "avx512f,avx512ifma")]
fn load(elements: &[[u8; 32]; LANES]) -> Fe8 {
    let mut limbs = [[0u64; LANES]; 5];
    for (lane, bytes) in elements.iter().enumerate() {
        let l = field::limbs_from_bytes(bytes);
        for (i, limb) in l.iter().enumerate() {
            limbs[i][lane] = *limb;
        }
    }
    Fe8(limbs.map(|lane_values| {
        // SAFETY: `lane_values` is eight initialised u64 values, exactly the 64
        // bytes the unaligned load reads.
        unsafe { _mm512_loadu_epi64(lane_values.as_ptr().cast()) }
    }))
}

/// Loads eight 48-byte big-endian integers reduced mod p, RFC 9380's
/// hash_to_field step: `hi · 2^256 + lo` with 2^256 = 38 and 2^255 = 19.
#[target_feature(enable = "avx512f,avx512ifma")]
fn load_wide(pieces: &[[u8; 48]; LANES]) -> Fe8 {
    let mut low = [[0u8; 32]; LANES];
    let mut high = [[0u8; 32]; LANES];
    for (lane, piece) in pieces.iter().enumerate() {
        for (i, byte) in piece[16..].iter().rev().enumerate() {
            low[lane][i] = *byte;
        }
        for (i, byte) in piece[..16].iter().rev().enumerate() {
            high[lane][i] = *byte;
        }
    }
    let top_bits: [u64; LANES] = std::array::from_fn(|lane| u64::from(low[lane][31] >> 7));
    let mut low = load(&low);
    // SAFETY: `top_bits` is eight initialised u64 values, the 64 bytes read.
    let top = unsafe { _mm512_loadu_epi64(top_bits.as_ptr().cast()) };
    low.0[0] = _mm512_madd52lo_epu64(low.0[0], top, splat(19));
    mul_small_add(&load(&high), 38, &low)
}

/// Stores eight canonical little-endian encodings.
#[target_feature(enable = "avx512f,avx512ifma")]
fn store(value: &Fe8) -> [[u8; 32]; LANES] {
    let frozen = freeze(value);
    let mut limbs = [[0u64; LANES]; 5];
    for (i, register) in frozen.0.iter().enumerate() {
        // SAFETY: `limbs[i]` is 64 writable bytes, exactly what the unaligned
        // store writes.
        unsafe { _mm512_storeu_epi64(limbs[i].as_mut_ptr().cast(), *register) };
    }
    let mut out = [[0u8; 32]; LANES];
    for (lane, bytes) in out.iter_mut().enumerate() {
        let l: Limbs = [
            limbs[0][lane],
            limbs[1][lane],
            limbs[2][lane],
            limbs[3][lane],
            limbs[4][lane],
        ];
        *bytes = field::bytes_from_limbs(&l);
    }
    out
}

/// One carry pass over five limbs below 2^62, from limb 0 up: every limb
/// keeps its low 51 bits and passes the rest to the next; the top carry
/// (below 2^12) wraps around times 19 into limb 0, multiplied in by the IFMA
/// unit. Limbs 1-4 end below 2^51, limb 0 below 2^51 + 2^17.
#[target_feature(enable = "avx512f,avx512ifma")]
fn carry(r: [__m512i; 5]) -> Fe8 {
    let mask = splat(MASK51);
    let mut l = r;
    for i in 0..4 {
        l[i + 1] = _mm512_add_epi64(l[i + 1], _mm512_srli_epi64::<51>(l[i]));
        l[i] = _mm512_and_si512(l[i], mask);
    }
    let top = _mm512_srli_epi64::<51>(l[4]);
    l[4] = _mm512_and_si512(l[4], mask);
    l[0] = _mm512_madd52lo_epu64(l[0], top, splat(19));
    Fe8(l)
}

/// Folds ten product columns into five and carries them. Column k has
/// weight 2^(51k) and is `lo[k] + 2·hi[k]`; columns 5..9 wrap around times
/// 19 (2^255 = 19 mod p), computed as `lo + t + 2·(hi + t) + 16·t` with `t`
/// the wrapped column.
#[target_feature(enable = "avx512f,avx512ifma")]
fn reduce_columns(lo: &[__m512i; 10], hi: &[__m512i; 10]) -> Fe8 {
    carry(std::array::from_fn(|k| {
        let t = _mm512_add_epi64(lo[k + 5], _mm512_slli_epi64::<1>(hi[k + 5]));
        let doubled = _mm512_slli_epi64::<1>(_mm512_add_epi64(hi[k], t));
        let low = _mm512_add_epi64(lo[k], t);
        _mm512_add_epi64(_mm512_add_epi64(low, doubled), _mm512_slli_epi64::<4>(t))
    }))
}

/// `a · b`. The high half of a 104-bit product has weight 2^52 = 2 · 2^51, so
/// high halves are summed apart and doubled.
#[target_feature(enable = "avx512f,avx512ifma")]
fn mul(a: &Fe8, b: &Fe8) -> Fe8 {
    let zero = _mm512_setzero_si512();
    let mut lo = [zero; 10];
    let mut hi = [zero; 10];
    for i in 0..5 {
        for j in 0..5 {
            lo[i + j] = _mm512_madd52lo_epu64(lo[i + j], a.0[i], b.0[j]);
            hi[i + j + 1] = _mm512_madd52hi_epu64(hi[i + j + 1], a.0[i], b.0[j]);
        }
    }
    reduce_columns(&lo, &hi)
}

/// `a^2`: each cross product once, with its higher-index limb doubled
/// (limbs 1-4 of a carried value are below 2^51, so twice one is a valid
/// operand).
#[target_feature(enable = "avx512f,avx512ifma")]
fn square(a: &Fe8) -> Fe8 {
    let zero = _mm512_setzero_si512();
    let twice: [__m512i; 5] = std::array::from_fn(|j| _mm512_slli_epi64::<1>(a.0[j]));
    let mut lo = [zero; 10];
    let mut hi = [zero; 10];
    for i in 0..5 {
        lo[2 * i] = _mm512_madd52lo_epu64(lo[2 * i], a.0[i], a.0[i]);
        hi[2 * i + 1] = _mm512_madd52hi_epu64(hi[2 * i + 1], a.0[i], a.0[i]);
        for j in (i + 1)..5 {
            lo[i + j] = _mm512_madd52lo_epu64(lo[i + j], a.0[i], twice[j]);
            hi[i + j + 1] = _mm512_madd52hi_epu64(hi[i + j + 1], a.0[i], twice[j]);
        }
    }
    reduce_columns(&lo, &hi)
}

/// `a^(2^n)`.
#[target_feature(enable = "avx512f,avx512ifma")]
fn square_times(a: &Fe8, n: u32) -> Fe8 {
    let mut r = *a;
    for _ in 0..n {
        r = square(&r);
    }
    r
}

/// `c + a · s` for a constant `s` below 2^20: the products' low halves are
/// accumulated onto `c`'s limbs and everything is carried once.
#[target_feature(enable = "avx512f,avx512ifma")]
fn mul_small_add(a: &Fe8, s: u64, c: &Fe8) -> Fe8 {
    let zero = _mm512_setzero_si512();
    let s = splat(s);
    let mut hi = [zero; 6];
    let mut lo = c.0;
    for i in 0..5 {
        lo[i] = _mm512_madd52lo_epu64(lo[i], a.0[i], s);
        hi[i + 1] = _mm512_madd52hi_epu64(zero, a.0[i], s);
    }
    // hi[5] < 2^17 has weight 2 · 2^255 = 38 (mod p).
    lo[0] = _mm512_madd52lo_epu64(lo[0], hi[5], splat(38));
    carry(std::array::from_fn(|k| {
        _mm512_add_epi64(lo[k], _mm512_slli_epi64::<1>(hi[k]))
    }))
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn add(a: &Fe8, b: &Fe8) -> Fe8 {
    carry(std::array::from_fn(|i| _mm512_add_epi64(a.0[i], b.0[i])))
}

/// `a - b`, computed as `a + 2p - b` so that no limb goes negative.
#[target_feature(enable = "avx512f,avx512ifma")]
fn sub(a: &Fe8, b: &Fe8) -> Fe8 {
    let two_p: [u64; 5] = [
        (1 << 52) - 38,
        (1 << 52) - 2,
        (1 << 52) - 2,
        (1 << 52) - 2,
        (1 << 52) - 2,
    ];
    carry(std::array::from_fn(|i| {
        _mm512_sub_epi64(_mm512_add_epi64(a.0[i], splat(two_p[i])), b.0[i])
    }))
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn neg(a: &Fe8) -> Fe8 {
    sub(&fe_small(0), a)
}

/// The canonical representative, limbs below 2^51.
#[target_feature(enable = "avx512f,avx512ifma")]
fn freeze(a: &Fe8) -> Fe8 {
    let mask = splat(MASK51);
    let mut l = a.0;
    // Sequential carry: limbs below 2^51, value below 2^255 + 2^20.
    for i in 0..4 {
        l[i + 1] = _mm512_add_epi64(l[i + 1], _mm512_srli_epi64::<51>(l[i]));
        l[i] = _mm512_and_si512(l[i], mask);
    }
    l[0] = _mm512_madd52lo_epu64(l[0], _mm512_srli_epi64::<51>(l[4]), splat(19));
    l[4] = _mm512_and_si512(l[4], mask);
    for i in 0..4 {
        l[i + 1] = _mm512_add_epi64(l[i + 1], _mm512_srli_epi64::<51>(l[i]));
        l[i] = _mm512_and_si512(l[i], mask);
    }
    // Now the value v is below 2^255 and limbs below 2^51 except that the top
    // limb may carry one bit; q = 1 exactly when v + 19 reaches 2^255.
    let mut q = _mm512_srli_epi64::<51>(_mm512_add_epi64(l[0], splat(19)));
    for limb in &l[1..] {
        q = _mm512_srli_epi64::<51>(_mm512_add_epi64(*limb, q));
    }
    l[0] = _mm512_madd52lo_epu64(l[0], q, splat(19));
    for i in 0..4 {
        l[i + 1] = _mm512_add_epi64(l[i + 1], _mm512_srli_epi64::<51>(l[i]));
        l[i] = _mm512_and_si512(l[i], mask);
    }
    l[4] = _mm512_and_si512(l[4], mask);
    Fe8(l)
}

/// Lanes where `a == b` as field elements.
#[target_feature(enable = "avx512f,avx512ifma")]
fn equal(a: &Fe8, b: &Fe8) -> __mmask8 {
    let (fa, fb) = (freeze(a), freeze(b));
    let mut m: __mmask8 = 0xff;
    for i in 0..5 {
        m &= _mm512_cmpeq_epi64_mask(fa.0[i], fb.0[i]);
    }
    m
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn is_zero(a: &Fe8) -> __mmask8 {
    equal(a, &fe_small(0))
}

/// Lanes whose canonical representative is odd (RFC 9380's sgn0).
#[target_feature(enable = "avx512f,avx512ifma")]
fn is_odd(a: &Fe8) -> __mmask8 {
    let low = _mm512_and_si512(freeze(a).0[0], splat(1));
    _mm512_cmpeq_epi64_mask(low, splat(1))
}

/// Per lane: `b` where the mask bit is set, else `a`. No branch on the mask.
#[target_feature(enable = "avx512f,avx512ifma")]
fn select(mask: __mmask8, a: &Fe8, b: &Fe8) -> Fe8 {
    Fe8(std::array::from_fn(|i| {
        _mm512_mask_blend_epi64(mask, a.0[i], b.0[i])
    }))
}

/// `(a^(2^250 - 1), a^11)`, the shared start of inversion and square roots.
#[target_feature(enable = "avx512f,avx512ifma")]
fn pow_2_250_minus_1(a: &Fe8) -> (Fe8, Fe8) {
    let a2 = square(a);
    let a9 = mul(&square_times(&a2, 2), a);
    let a11 = mul(&a9, &a2);
    let a_5_0 = mul(&square(&a11), &a9);
    let a_10_0 = mul(&square_times(&a_5_0, 5), &a_5_0);
    let a_20_0 = mul(&square_times(&a_10_0, 10), &a_10_0);
    let a_40_0 = mul(&square_times(&a_20_0, 20), &a_20_0);
    let a_50_0 = mul(&square_times(&a_40_0, 10), &a_10_0);
    let a_100_0 = mul(&square_times(&a_50_0, 50), &a_50_0);
    let a_200_0 = mul(&square_times(&a_100_0, 100), &a_100_0);
    let a_250_0 = mul(&square_times(&a_200_0, 50), &a_50_0);
    (a_250_0, a11)
}

/// `a^(p-2)`: the inverse, and 0 for 0.
#[target_feature(enable = "avx512f,avx512ifma")]
fn invert(a: &Fe8) -> Fe8 {
    let (a_250_0, a11) = pow_2_250_minus_1(a);
    mul(&square_times(&a_250_0, 5), &a11)
}

/// `a^((p-5)/8)`.
#[target_feature(enable = "avx512f,avx512ifma")]
fn pow_p58(a: &Fe8) -> Fe8 {
    let (a_250_0, _) = pow_2_250_minus_1(a);
    mul(&square_times(&a_250_0, 2), a)
}

/// Inverts every element of `values` with one field inversion per lane
/// (Montgomery's trick down the slice). Zero stays zero: a zero lane is
/// replaced by one for the shared product and its result cleared after.
#[target_feature(enable = "avx512f,avx512ifma")]
fn batch_invert(values: &mut [Fe8]) {
    let one = fe_small(1);
    let zero = fe_small(0);
    let zeros: Vec<__mmask8> = values.iter().map(|v| is_zero(v)).collect();
    let guarded: Vec<Fe8> = values
        .iter()
        .zip(&zeros)
        .map(|(v, z)| select(*z, v, &one))
        .collect();
    let mut prefix = Vec::with_capacity(guarded.len());
    let mut acc = one;
    for v in &guarded {
        prefix.push(acc);
        acc = mul(&acc, v);
    }
    let mut inv = invert(&acc);
    for i in (0..guarded.len()).rev() {
        let out = mul(&inv, &prefix[i]);
        inv = mul(&inv, &guarded[i]);
        values[i] = select(zeros[i], &out, &zero);
    }
}

/// Constant-time swap of `a` and `b` in every lane when `swap` is 1.
#[target_feature(enable = "avx512f,avx512ifma")]
fn cswap(swap: u8, a: &mut Fe8, b: &mut Fe8) {
    let mask: __mmask8 = 0u8.wrapping_sub(swap);
    let (na, nb) = (select(mask, a, b), select(mask, b, a));
    *a = na;
    *b = nb;
}

/// The Montgomery ladder of RFC 7748 on eight affine u-coordinates with one
/// scalar (already clamped), returning projective results `(X, Z)`.
#[target_feature(enable = "avx512f,avx512ifma")]
fn ladder(scalar: &[u8; 32], u: &Fe8) -> (Fe8, Fe8) {
    let mut x2 = fe_small(1);
    let mut z2 = fe_small(0);
    let mut x3 = *u;
    let mut z3 = fe_small(1);
    let mut swap = 0u8;
    for t in (0..255).rev() {
        let bit = (scalar[t / 8] >> (t % 8)) & 1;
        swap ^= bit;
        cswap(swap, &mut x2, &mut x3);
        cswap(swap, &mut z2, &mut z3);
        swap = bit;
        let a = add(&x2, &z2);
        let b = sub(&x2, &z2);
        let c = add(&x3, &z3);
        let d = sub(&x3, &z3);
        let da = mul(&d, &a);
        let cb = mul(&c, &b);
        let aa = square(&a);
        let bb = square(&b);
        x3 = square(&add(&da, &cb));
        z3 = mul(u, &square(&sub(&da, &cb)));
        x2 = mul(&aa, &bb);
        let e = sub(&aa, &bb);
        z2 = mul(&e, &mul_small_add(&e, 121_665, &aa));
    }
    cswap(swap, &mut x2, &mut x3);
    cswap(swap, &mut z2, &mut z3);
    (x2, z2)
}

/// RFC 9380's Elligator 2 for curve25519 (inversion-free form): returns the
/// Montgomery point as `(xn / xd, y)`.
#[target_feature(enable = "avx512f,avx512ifma")]
fn elligator2(u: &Fe8, k: &Constants) -> (Fe8, Fe8, Fe8) {
    let u2 = square(u);
    let tv1 = add(&u2, &u2);
    let xd = add(&tv1, &fe_small(1));
    let x1n = neg(&k.montgomery_a);
    let tv2 = square(&xd);
    let gxd = mul(&tv2, &xd);
    let mut gx1 = mul(&k.montgomery_a, &tv1);
    gx1 = mul(&gx1, &x1n);
    gx1 = add(&gx1, &tv2);
    gx1 = mul(&gx1, &x1n);
    let mut tv3 = square(&gxd);
    let tv2 = square(&tv3);
    tv3 = mul(&tv3, &gxd);
    tv3 = mul(&tv3, &gx1);
    let tv2 = mul(&tv2, &tv3);
    let y11 = mul(&pow_p58(&tv2), &tv3);
    let y12 = mul(&y11, &k.sqrt_m1);
    let e1 = equal(&mul(&square(&y11), &gxd), &gx1);
    let y1 = select(e1, &y12, &y11);
    let x2n = mul(&x1n, &tv1);
    let y21 = mul(&mul(&y11, u), &k.two_pow_c1);
    let y22 = mul(&y21, &k.sqrt_m1);
    let gx2 = mul(&gx1, &tv1);
    let e2 = equal(&mul(&square(&y21), &gxd), &gx2);
    let y2 = select(e2, &y22, &y21);
    let e3 = equal(&mul(&square(&y1), &gxd), &gx1);
    let xn = select(e3, &x2n, &x1n);
    let y = select(e3, &y2, &y1);
    let e4 = is_odd(&y);
    let y = select(e3 ^ e4, &y, &neg(&y));
    (xn, xd, y)
}

/// Maps Montgomery `(xn / xd, y)` to edwards25519 with RFC 9380's rational
/// map; its exceptional points (y = 0 or x = -1) map to the identity.
#[target_feature(enable = "avx512f,avx512ifma")]
fn to_edwards(xn: &Fe8, xd: &Fe8, y: &Fe8, k: &Constants) -> Edwards8 {
    let d1 = mul(xd, y);
    let d2 = add(xn, xd);
    let cxn = mul(&k.sqrt_m486664, xn);
    let diff = sub(xn, xd);
    let point = Edwards8 {
        x: mul(&cxn, &d2),
        y: mul(&diff, &d1),
        z: mul(&d1, &d2),
        t: mul(&cxn, &diff),
    };
    let exceptional = is_zero(&point.z);
    let identity = Edwards8 {
        x: fe_small(0),
        y: fe_small(1),
        z: fe_small(1),
        t: fe_small(0),
    };
    Edwards8 {
        x: select(exceptional, &point.x, &identity.x),
        y: select(exceptional, &point.y, &identity.y),
        z: select(exceptional, &point.z, &identity.z),
        t: select(exceptional, &point.t, &identity.t),
    }
}

/// Extended-coordinate addition on edwards25519 (a = -1).
#[target_feature(enable = "avx512f,avx512ifma")]
fn edwards_add(p: &Edwards8, q: &Edwards8, k: &Constants) -> Edwards8 {
    let a = mul(&sub(&p.y, &p.x), &sub(&q.y, &q.x));
    let b = mul(&add(&p.y, &p.x), &add(&q.y, &q.x));
    let c = mul(&mul(&p.t, &k.edwards_2d), &q.t);
    let d = mul(&add(&p.z, &p.z), &q.z);
    completed(&sub(&b, &a), &sub(&d, &c), &add(&d, &c), &add(&b, &a))
}

/// The extended point `(E·F : G·H : F·G : E·H)` both formulas end with.
#[target_feature(enable = "avx512f,avx512ifma")]
fn completed(e: &Fe8, f: &Fe8, g: &Fe8, h: &Fe8) -> Edwards8 {
    Edwards8 {
        x: mul(e, f),
        y: mul(g, h),
        t: mul(e, h),
        z: mul(f, g),
    }
}

/// Extended-coordinate doubling on edwards25519 (a = -1).
#[target_feature(enable = "avx512f,avx512ifma")]
fn edwards_double(p: &Edwards8) -> Edwards8 {
    let a = square(&p.x);
    let b = square(&p.y);
    let zz = square(&p.z);
    let c = add(&zz, &zz);
    let e = sub(&sub(&square(&add(&p.x, &p.y)), &a), &b);
    let g = sub(&b, &a);
    let f = sub(&g, &c);
    let h = neg(&add(&a, &b));
    completed(&e, &f, &g, &h)
}

/// Hashes eight pairs of field elements to `8 · (map(u0) + map(u1))` and
/// returns its Montgomery u as the fraction `(Z + Y) / (Z - Y)`.
#[target_feature(enable = "avx512f,avx512ifma")]
fn hash_pair(u0: &Fe8, u1: &Fe8, k: &Constants) -> (Fe8, Fe8) {
    let (xn0, xd0, y0) = elligator2(u0, k);
    let (xn1, xd1, y1) = elligator2(u1, k);
    let q0 = to_edwards(&xn0, &xd0, &y0, k);
    let q1 = to_edwards(&xn1, &xd1, &y1, k);
    let mut r = edwards_add(&q0, &q1, k);
    for _ in 0..3 {
        r = edwards_double(&r);
    }
    (add(&r.z, &r.y), sub(&r.z, &r.y))
}

/// Pads a slice of encodings into lane groups (the last one repeats a
/// harmless element).
fn lane_groups(elements: &[[u8; 32]]) -> Vec<[[u8; 32]; LANES]> {
    let mut base_point = [0u8; 32];
    base_point[0] = 9;
    elements
        .chunks(LANES)
        .map(|chunk| {
            let mut group = [base_point; LANES];
            group[..chunk.len()].copy_from_slice(chunk);
            group
        })
        .collect()
}

/// Divides numerators by denominators with one inversion for the slice (0
/// where a denominator is 0).
#[target_feature(enable = "avx512f,avx512ifma")]
fn divide(num: &[Fe8], mut den: Vec<Fe8>) -> Vec<Fe8> {
    batch_invert(&mut den);
    num.iter().zip(&den).map(|(n, d)| mul(n, d)).collect()
}

/// The canonical encodings of the first `len` lanes.
#[target_feature(enable = "avx512f,avx512ifma")]
fn store_all(values: &[Fe8], len: usize) -> Vec<[u8; 32]> {
    let mut out = Vec::with_capacity(values.len() * LANES);
    for value in values {
        out.extend_from_slice(&store(value));
    }
    out.truncate(len);
    out
}

/// X25519 of every lane group of affine u-coordinates, as affine u.
#[target_feature(enable = "avx512f,avx512ifma")]
fn multiply_lanes(scalar: &[u8; 32], us: &[Fe8]) -> Vec<Fe8> {
    let (xs, zs): (Vec<Fe8>, Vec<Fe8>) = us.iter().map(|u| ladder(scalar, u)).unzip();
    divide(&xs, zs)
}

#[target_feature(enable = "avx512f,avx512ifma")]
fn multiply_kernel(scalar: &[u8; 32], elements: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let us: Vec<Fe8> = lane_groups(elements).iter().map(|g| load(g)).collect();
    store_all(&multiply_lanes(scalar, &us), elements.len())
}

/// Splits expand_message_xmd outputs into lane groups of their two pieces
/// (the last group padded with zeros, results discarded).
fn wide_lane_groups(expanded: &[[u8; EXPANDED_LEN]]) -> Vec<[[[u8; 48]; LANES]; 2]> {
    expanded
        .chunks(LANES)
        .map(|chunk| {
            let mut group = [[[0u8; 48]; LANES]; 2];
            for (lane, e) in chunk.iter().enumerate() {
                let [first, second] = wide_pieces(e);
                group[0][lane] = first;
                group[1][lane] = second;
            }
            group
        })
        .collect()
}

/// The hashes stay in lane form between the hash and the ladder.
#[target_feature(enable = "avx512f,avx512ifma")]
fn hash_kernel(expanded: &[[u8; EXPANDED_LEN]], scalar: Option<&[u8; 32]>) -> Vec<[u8; 32]> {
    let k = constants();
    let (nums, dens): (Vec<Fe8>, Vec<Fe8>) = wide_lane_groups(expanded)
        .iter()
        .map(|[first, second]| hash_pair(&load_wide(first), &load_wide(second), &k))
        .unzip();
    let hashed = divide(&nums, dens);
    let out = match scalar {
        Some(scalar) => multiply_lanes(scalar, &hashed),
        None => hashed,
    };
    store_all(&out, expanded.len())
}

/// `X25519(scalar, u)` for every u (bit 255 ignored), or `None` when this
/// CPU lacks the instructions.
pub fn multiply(scalar: &[u8; 32], elements: &[[u8; 32]]) -> Option<Vec<[u8; 32]>> {
    if !available() {
        return None;
    }
    // SAFETY: the CPU supports AVX-512F and AVX-512 IFMA (checked above), the
    // only requirement of the target features this function enables.
    Some(unsafe { multiply_kernel(scalar, elements) })
}

/// The Montgomery u of the RFC 9380 random-oracle hash of every
/// expand_message_xmd output, multiplied by `scalar` when one is given; `None`
/// when this CPU lacks the instructions.
pub fn hash_to_curve(
    expanded: &[[u8; EXPANDED_LEN]],
    scalar: Option<&[u8; 32]>,
) -> Option<Vec<[u8; 32]>> {
    if !available() {
        return None;
    }
    // SAFETY: as in `multiply`, the CPU features were checked above.
    Some(unsafe { hash_kernel(expanded, scalar) })
}
