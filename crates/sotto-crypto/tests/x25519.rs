//! The X25519 group: standard vectors (RFC 7748, RFC 9380 J.4.1) against both
//! backends, and the IFMA kernel against the portable backend on random and
//! edge inputs at every lane position and batch length. On a CPU without
//! AVX-512 IFMA the kernel cases are skipped by `Backend::available()` and the
//! portable backend is still held to the vectors.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sotto_crypto::group::{ElementFault, InvalidElement};
use sotto_crypto::secret::SecretBytes;
use sotto_crypto::x25519::{
    expand_message_xmd, field, fields_of_expanded, hash_expanded_with, hash_to_field,
    multiply_with, portable, Backend, X25519Scalar, EXPANDED_LEN,
};

const RFC9380_DST: &[u8] = b"QUUX-V01-CS02-with-curve25519_XMD:SHA-512_ELL2_RO_";

fn le(hex_le: &str) -> [u8; 32] {
    hex::decode(hex_le).unwrap().try_into().unwrap()
}

/// RFC 9380 prints field elements big-endian.
fn be(hex_be: &str) -> [u8; 32] {
    let mut b = le(hex_be);
    b.reverse();
    b
}

fn clamp(mut k: [u8; 32]) -> [u8; 32] {
    k[0] &= 0xf8;
    k[31] &= 0x7f;
    k[31] |= 0x40;
    k
}

fn kernel_backends() -> Vec<Backend> {
    Backend::available()
        .into_iter()
        .filter(|b| *b != Backend::Portable)
        .collect()
}

#[test]
fn rfc7748_vectors_on_every_backend() {
    let cases = [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
        (
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
            "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
        ),
        (
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a",
            "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742",
        ),
    ];
    for backend in Backend::available() {
        for (scalar, u, expected) in cases {
            let got = multiply_with(backend, &clamp(le(scalar)), &[le(u)]);
            assert_eq!(hex::encode(got[0]), expected, "{backend:?}");
        }
    }
}

#[test]
fn rfc7748_iterated_vector_on_every_backend() {
    for backend in Backend::available() {
        let mut k = le("0900000000000000000000000000000000000000000000000000000000000000");
        let mut u = k;
        for _ in 0..1000 {
            let next = multiply_with(backend, &clamp(k), &[u])[0];
            u = k;
            k = next;
        }
        assert_eq!(
            hex::encode(k),
            "684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51",
            "{backend:?}"
        );
    }
}

fn rfc9380_messages() -> Vec<Vec<u8>> {
    vec![
        b"".to_vec(),
        b"abc".to_vec(),
        b"abcdef0123456789".to_vec(),
        [b"q128_".as_slice(), &[b'q'; 128]].concat(),
        [b"a512_".as_slice(), &[b'a'; 512]].concat(),
    ]
}

/// (P.x, u0, u1, Q0.x, Q0.y) of RFC 9380 J.4.1, in message order.
const J41: [[&str; 5]; 5] = [
    [
        "2de3780abb67e861289f5749d16d3e217ffa722192d16bbd9d1bfb9d112b98c0",
        "005fe8a7b8fef0a16c105e6cadf5a6740b3365e18692a9c05bfbb4d97f645a6a",
        "1347edbec6a2b5d8c02e058819819bee177077c9d10a4ce165aab0fd0252261a",
        "36b4df0c864c64707cbf6cf36e9ee2c09a6cb93b28313c169be29561bb904f98",
        "6cd59d664fb58c66c892883cd0eb792e52055284dac3907dd756b45d15c3983d",
    ],
    [
        "2b4419f1f2d48f5872de692b0aca72cc7b0a60915dd70bde432e826b6abc526d",
        "49bed021c7a3748f09fa8cdfcac044089f7829d3531066ac9e74e0994e05bc7d",
        "5c36525b663e63389d886105cee7ed712325d5a97e60e140aba7e2ce5ae851b6",
        "16b3d86e056b7970fa00165f6f48d90b619ad618791661b7b5e1ec78be10eac1",
        "4ab256422d84c5120b278cbdfc4e1facc5baadffeccecf8ee9bf3946106d50ca",
    ],
    [
        "68ca1ea5a6acf4e9956daa101709b1eee6c1bb0df1de3b90d4602382a104c036",
        "6412b7485ba26d3d1b6c290a8e1435b2959f03721874939b21782df17323d160",
        "24c7b46c1c6d9a21d32f5707be1380ab82db1054fde82865d5c9e3d968f287b2",
        "71de3dadfe268872326c35ac512164850860567aea0e7325e6b91a98f86533ad",
        "26a08b6e9a18084c56f2147bf515414b9b63f1522e1b6c5649f7d4b0324296ec",
    ],
    [
        "096e9c8bae6c06b554c1ee69383bb0e82267e064236b3a30608d4ed20b73ac5a",
        "5e123990f11bbb5586613ffabdb58d47f64bb5f2fa115f8ea8df0188e0c9e1b5",
        "5e8553eb00438a0bb1e7faa59dec6d8087f9c8011e5fb8ed9df31cb6c0d4ac19",
        "7a94d45a198fb5daa381f45f2619ab279744efdd8bd8ed587fc5b65d6cea1df0",
        "67d44f85d376e64bb7d713585230cdbfafc8e2676f7568e0b6ee59361116a6e1",
    ],
    [
        "1bc61845a138e912f047b5e70ba9606ba2a447a4dade024c8ef3dd42b7bbc5fe",
        "20f481e85da7a3bf60ac0fb11ed1d0558fc6f941b3ac5469aa8b56ec883d6d7d",
        "017d57fd257e9a78913999a23b52ca988157a81b09c5442501d07fed20869465",
        "02d606e2699b918ee36f2818f2bc5013e437e673c9f9b9cdc15fd0c5ee913970",
        "29e9dc92297231ef211245db9e31767996c5625dfbf92e1c8107ef887365de1e",
    ],
];

#[test]
fn rfc9380_hash_to_field_and_map_vectors() {
    for (msg, [_, u0, u1, q0x, q0y]) in rfc9380_messages().iter().zip(J41) {
        let fields = hash_to_field(&[msg], RFC9380_DST);
        assert_eq!(fields, [be(u0), be(u1)], "hash_to_field of {msg:?}");
        let (x, y) = portable::map_to_curve(&field::from_bytes(&fields[0]));
        assert_eq!(field::to_bytes(&x), be(q0x), "Q0.x of {msg:?}");
        assert_eq!(field::to_bytes(&y), be(q0y), "Q0.y of {msg:?}");
    }
}

#[test]
fn rfc9380_hash_to_curve_vectors_on_every_backend() {
    let expanded: Vec<[u8; EXPANDED_LEN]> = rfc9380_messages()
        .iter()
        .map(|m| expand_message_xmd(&[m], RFC9380_DST))
        .collect();
    for backend in Backend::available() {
        let got = hash_expanded_with(backend, &expanded, None);
        for (p, [px, ..]) in got.iter().zip(J41) {
            assert_eq!(*p, be(px), "{backend:?}");
        }
    }
}

fn from_decimal(text: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for digit in text.bytes() {
        let mut carry = u32::from(digit - b'0');
        for byte in out.iter_mut() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
    }
    out
}

/// 0, 1, p - 1, the points of order 8, p, p + 1 and 2^255 - 1 (the last three
/// not canonical: the arithmetic must still agree mod p), and a twist point.
fn edge_elements() -> Vec<[u8; 32]> {
    let p = field::modulus_bytes();
    let mut p_minus_1 = p;
    p_minus_1[0] -= 1;
    let mut p_plus_1 = p;
    p_plus_1[0] += 1;
    let mut all_ones = [0xffu8; 32];
    all_ones[31] = 0x7f;
    let mut one = [0u8; 32];
    one[0] = 1;
    let mut twist = [0u8; 32];
    twist[0] = 2;
    vec![
        [0u8; 32],
        one,
        p_minus_1,
        from_decimal("325606250916557431795983626356110631294008115727848805560023387167927233504"),
        from_decimal(
            "39382357235489614581723060781553021112529911719440698176882885853963445705823",
        ),
        p,
        p_plus_1,
        all_ones,
        twist,
    ]
}

fn edge_scalars(rng: &mut ChaCha20Rng) -> Vec<[u8; 32]> {
    let mut lowest = [0u8; 32];
    lowest[31] = 0x40;
    let random = X25519Scalar::random(rng).to_bytes();
    vec![clamp([0xff; 32]), lowest, *random.expose()]
}

fn random_elements(rng: &mut ChaCha20Rng, n: usize) -> Vec<[u8; 32]> {
    (0..n)
        .map(|_| {
            let mut u = [0u8; 32];
            rng.fill_bytes(&mut u);
            u[31] &= 0x7f;
            u
        })
        .collect()
}

fn assert_multiply_agrees(scalar: &[u8; 32], elements: &[[u8; 32]]) {
    let expected = multiply_with(Backend::Portable, scalar, elements);
    for backend in kernel_backends() {
        assert_eq!(
            multiply_with(backend, scalar, elements),
            expected,
            "{backend:?}, scalar {}",
            hex::encode(scalar)
        );
    }
}

#[test]
fn kernel_multiply_matches_portable_on_edges_at_every_lane_and_length() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let edges = edge_elements();
    for scalar in edge_scalars(&mut rng) {
        for len in 1..=17 {
            for position in 0..len {
                for edge in &edges {
                    let mut batch = random_elements(&mut rng, len);
                    batch[position] = *edge;
                    assert_multiply_agrees(&scalar, &batch);
                }
            }
        }
    }
}

#[test]
fn kernel_multiply_matches_portable_on_a_large_random_batch() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let scalar = *X25519Scalar::random(&mut rng).to_bytes().expose();
    assert_multiply_agrees(&scalar, &random_elements(&mut rng, 1003));
}

fn assert_hash_agrees(expanded: &[[u8; EXPANDED_LEN]], scalar: Option<&[u8; 32]>) {
    let expected = hash_expanded_with(Backend::Portable, expanded, scalar);
    for backend in kernel_backends() {
        assert_eq!(
            hash_expanded_with(backend, expanded, scalar),
            expected,
            "{backend:?}"
        );
    }
}

/// 48-byte big-endian pieces of expand_message_xmd's output that reduce to
/// the edge elements (0, 1, p - 1, small order, ...), plus the largest piece
/// and 2^256 (the reduction's high half).
fn edge_pieces() -> Vec<[u8; 48]> {
    let mut pieces: Vec<[u8; 48]> = edge_elements()
        .iter()
        .map(|le| {
            let mut piece = [0u8; 48];
            for (i, byte) in le.iter().enumerate() {
                piece[47 - i] = *byte;
            }
            piece
        })
        .collect();
    pieces.push([0xff; 48]);
    let mut two_256 = [0u8; 48];
    two_256[15] = 1;
    pieces.push(two_256);
    pieces
}

fn random_expanded(rng: &mut ChaCha20Rng, n: usize) -> Vec<[u8; EXPANDED_LEN]> {
    (0..n)
        .map(|_| {
            let mut e = [0u8; EXPANDED_LEN];
            rng.fill_bytes(&mut e);
            e
        })
        .collect()
}

#[test]
fn kernel_hash_matches_portable_on_edges_at_every_lane_and_length() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let pieces = edge_pieces();
    for len in 1..=17 {
        for position in 0..len {
            for piece in &pieces {
                let mut expanded = random_expanded(&mut rng, len);
                let half = 48 * (position % 2);
                expanded[position][half..half + 48].copy_from_slice(piece);
                assert_hash_agrees(&expanded, None);
            }
        }
    }
}

#[test]
fn wide_pieces_reduce_to_canonical_field_elements_on_both_backends() {
    let pieces = edge_pieces();
    for (i, first) in pieces.iter().enumerate() {
        let mut e = [0u8; EXPANDED_LEN];
        e[..48].copy_from_slice(first);
        e[48..].copy_from_slice(&pieces[(i + 3) % pieces.len()]);
        let [u0, u1] = fields_of_expanded(&e);
        assert!(field::is_canonical(&u0) && field::is_canonical(&u1));
        assert_hash_agrees(&[e], None);
    }
    // 2^256 = 38 (mod p).
    let mut e = [0u8; EXPANDED_LEN];
    e[15] = 1;
    let mut thirty_eight = [0u8; 32];
    thirty_eight[0] = 38;
    assert_eq!(fields_of_expanded(&e)[0], thirty_eight);
}

#[test]
fn kernel_hash_and_multiply_matches_portable_on_a_large_batch() {
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let scalar = *X25519Scalar::random(&mut rng).to_bytes().expose();
    let ids: Vec<Vec<u8>> = (0..777u32).map(|i| i.to_le_bytes().to_vec()).collect();
    let expanded: Vec<[u8; EXPANDED_LEN]> = ids
        .iter()
        .map(|id| expand_message_xmd(&[id], b"t"))
        .collect();
    assert_hash_agrees(&expanded, Some(&scalar));
    assert_hash_agrees(&expanded, None);
    assert_hash_agrees(&random_expanded(&mut rng, 333), Some(&scalar));
}

#[test]
fn a_one_bit_change_changes_the_result() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let scalar = *X25519Scalar::random(&mut rng).to_bytes().expose();
    let elements = random_elements(&mut rng, 9);
    for backend in Backend::available() {
        let base = multiply_with(backend, &scalar, &elements);
        let mut flipped = elements.clone();
        flipped[4][13] ^= 0x10;
        let changed = multiply_with(backend, &scalar, &flipped);
        assert_ne!(base[4], changed[4], "{backend:?}");
        assert_eq!(base[3], changed[3], "{backend:?}");
    }
}

#[test]
fn exponents_commute_and_salts_separate() {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let (a, b) = (
        X25519Scalar::random(&mut rng),
        X25519Scalar::random(&mut rng),
    );
    let salt = SecretBytes::new([6; 32]);
    let ids: Vec<Vec<u8>> = (0..40u32).map(|i| format!("id{i}").into_bytes()).collect();
    let ab = b
        .multiply_encoded(&a.hash_and_multiply(&salt, &ids))
        .unwrap();
    let ba = a
        .multiply_encoded(&b.hash_and_multiply(&salt, &ids))
        .unwrap();
    assert_eq!(ab, ba);
    let other = a.hash_and_multiply(&SecretBytes::new([7; 32]), &ids);
    assert_ne!(a.hash_and_multiply(&salt, &ids), other);
}

fn refused(index: usize, fault: ElementFault) -> InvalidElement {
    InvalidElement { index, fault }
}

#[test]
fn peer_elements_that_are_not_canonical_or_of_small_order_are_located() {
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let k = X25519Scalar::random(&mut rng);
    let mut elements = random_elements(&mut rng, 20);
    let edges = edge_elements();
    elements[17] = edges[5];
    assert_eq!(
        k.multiply_encoded(&elements),
        Err(refused(17, ElementFault::NonCanonicalU))
    );
    elements[17][31] |= 0x80;
    assert_eq!(
        k.multiply_encoded(&elements),
        Err(refused(17, ElementFault::NonCanonicalU))
    );
    for small_order in &edges[..5] {
        elements[17] = *small_order;
        assert_eq!(
            k.multiply_encoded(&elements),
            Err(refused(17, ElementFault::SmallOrder)),
            "{}",
            hex::encode(small_order)
        );
    }
}

#[test]
fn scalars_round_trip_and_unclamped_ones_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    let k = X25519Scalar::random(&mut rng);
    let again = X25519Scalar::from_bytes(&k.to_bytes()).unwrap();
    assert_eq!(again.to_bytes().expose(), k.to_bytes().expose());
    for bad in [[0u8; 32], [0xff; 32], {
        let mut b = *k.to_bytes().expose();
        b[0] |= 1;
        b
    }] {
        assert!(X25519Scalar::from_bytes(&SecretBytes::new(bad)).is_err());
    }
}
