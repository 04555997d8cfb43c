//! RFC 9380 hash to field for curve25519_XMD:SHA-512_ELL2_RO_: the
//! expand_message_xmd construction over SHA-512 and the reduction of each
//! 48-byte piece mod p. Both backends start from these field elements.

use std::sync::OnceLock;

use sha2::{Digest, Sha512};

use super::field;

/// Bytes expand_message_xmd produces for two field elements (2 · L, L = 48).
pub const EXPANDED_LEN: usize = 96;

/// SHA-512's input block size: the length of expand_message_xmd's zero pad.
const BLOCK_LEN: usize = 128;

/// SHA-512 after absorbing the zero block every b_0 starts with.
fn after_zero_pad() -> Sha512 {
    static STATE: OnceLock<Sha512> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let mut h = Sha512::new();
            h.update([0u8; BLOCK_LEN]);
            h
        })
        .clone()
}

/// expand_message_xmd(msg, dst, 96) with SHA-512, `msg` given in parts that
/// are concatenated. `dst` must be at most 255 bytes.
pub fn expand_message_xmd(msg: &[&[u8]], dst: &[u8]) -> [u8; EXPANDED_LEN] {
    let dst_len = [dst.len() as u8];
    let mut h0 = after_zero_pad();
    for part in msg {
        h0.update(part);
    }
    h0.update((EXPANDED_LEN as u16).to_be_bytes());
    h0.update([0u8]);
    h0.update(dst);
    h0.update(dst_len);
    let b0: [u8; 64] = h0.finalize().into();
    let b1 = next_block(&b0, 1, dst);
    let mut mixed = [0u8; 64];
    for (m, (x, y)) in mixed.iter_mut().zip(b0.iter().zip(b1.iter())) {
        *m = x ^ y;
    }
    let b2 = next_block(&mixed, 2, dst);
    let mut out = [0u8; EXPANDED_LEN];
    out[..64].copy_from_slice(&b1);
    out[64..].copy_from_slice(&b2[..32]);
    out
}

/// b_i = H(chained ‖ I2OSP(i, 1) ‖ DST_prime) of expand_message_xmd.
fn next_block(chained: &[u8; 64], index: u8, dst: &[u8]) -> [u8; 64] {
    let mut h = Sha512::new();
    h.update(chained);
    h.update([index]);
    h.update(dst);
    h.update([dst.len() as u8]);
    h.finalize().into()
}

/// hash_to_field(msg, 2): two field elements as canonical little-endian
/// encodings.
pub fn hash_to_field(msg: &[&[u8]], dst: &[u8]) -> [[u8; 32]; 2] {
    fields_of_expanded(&expand_message_xmd(msg, dst))
}

/// The two field elements of expand_message_xmd's output: each 48-byte
/// big-endian piece reduced mod p.
pub fn fields_of_expanded(expanded: &[u8; EXPANDED_LEN]) -> [[u8; 32]; 2] {
    let [first, second] = wide_pieces(expanded);
    [first, second].map(|piece| field::to_bytes(&field::from_wide_be(&piece)))
}

/// The two 48-byte pieces of expand_message_xmd's output.
pub fn wide_pieces(expanded: &[u8; EXPANDED_LEN]) -> [[u8; 48]; 2] {
    let mut pieces = [[0u8; 48]; 2];
    pieces[0].copy_from_slice(&expanded[..48]);
    pieces[1].copy_from_slice(&expanded[48..]);
    pieces
}
