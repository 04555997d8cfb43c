//! Differential fuzzing of the X25519 group: any peer element and any
//! expand_message_xmd output give the same answer (or the same refusal) on
//! the AVX-512 IFMA kernel as on the portable backend. On a CPU without IFMA
//! only the portable backend runs and the target checks that it never
//! panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sotto_crypto::x25519::{hash_expanded_with, multiply_with, Backend, EXPANDED_LEN};

fuzz_target!(|data: &[u8]| {
    if data.len() < 32 {
        return;
    }
    let mut scalar = [0u8; 32];
    scalar.copy_from_slice(&data[..32]);
    scalar[0] &= 0xf8;
    scalar[31] = (scalar[31] & 0x7f) | 0x40;
    let rest = &data[32..];
    let elements: Vec<[u8; 32]> = rest
        .chunks_exact(32)
        .map(|c| {
            let mut u = [0u8; 32];
            u.copy_from_slice(c);
            u
        })
        .collect();
    let expanded: Vec<[u8; EXPANDED_LEN]> = rest
        .chunks_exact(EXPANDED_LEN)
        .map(|c| {
            let mut e = [0u8; EXPANDED_LEN];
            e.copy_from_slice(c);
            e
        })
        .collect();
    let portable = multiply_with(Backend::Portable, &scalar, &elements);
    let hashed = hash_expanded_with(Backend::Portable, &expanded, Some(&scalar));
    for backend in Backend::available() {
        assert_eq!(multiply_with(backend, &scalar, &elements), portable);
        assert_eq!(
            hash_expanded_with(backend, &expanded, Some(&scalar)),
            hashed
        );
    }
});
