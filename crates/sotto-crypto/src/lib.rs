//! Cryptographic building blocks of sotto, composed from audited crates.
//!
//! This crate owns every piece of curve arithmetic and every secret type in the
//! project; it performs no I/O. Protocol engines call it through batch-oriented
//! interfaces (see [`group`] and [`bls`]) so that faster backends can be put
//! behind the same functions later.

pub mod aead;
pub mod bls;
pub mod error;
pub mod group;
pub mod hash;
pub mod hpke;
pub mod identity;
pub mod ids;
pub mod kdf;
pub mod ring;
pub mod secret;
pub mod x25519;

pub use error::CryptoError;
