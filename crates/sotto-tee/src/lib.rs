//! Trusted execution for sotto (see `docs/tee.md`): the [`enclave::Enclave`]
//! abstraction and its [`software`] backend (not hardware-protected),
//! verification of real evidence — Intel SGX/TDX DCAP quotes ([`dcap`]) and
//! AMD SEV-SNP reports ([`snp`]) — into one [`evidence::Verified`] shape,
//! and the [`policy`] that decides on it.

pub mod dcap;
pub mod enclave;
pub mod error;
pub mod evidence;
pub mod online;
pub mod policy;
pub mod registry;
pub mod snp;
pub mod software;

pub use error::TeeError;
