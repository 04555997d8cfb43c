//! Secret-shared data sharing between providers (see `docs/share.md`), the
//! sans-IO core: providers agree on a dataset [`dataset::Declaration`];
//! each provider's enclave splits its rows into additive shares in Z_2^64
//! ([`split`]), seals share j to provider j in chunks ([`fragment`]), and
//! every provider fuses the chunks addressed to it into its share of the
//! joint table ([`fuse`]). The shares of all providers add up to the joint
//! table; any one of them is uniformly random. A fused share is kept
//! sealed by the provider's enclave ([`at_rest`]). A linear [`model`]
//! is evaluated on the shares: each provider's partial result `w · s_j`,
//! added up, is the score's linear part.

pub mod at_rest;
pub mod dataset;
mod fixed_width;
pub mod fragment;
pub mod fuse;
pub mod inference;
pub mod model;
pub mod online;
pub mod onnx_model;
pub mod split;

pub use dataset::{DatasetId, Declaration};
pub use fragment::{open_chunk, seal_fragment, ChunkHeader, FragmentError, SealedChunk};
pub use fuse::{FuseError, FusedShare, Fuser};
pub use split::{split, FragmentRows, IdTagger, SplitError};
