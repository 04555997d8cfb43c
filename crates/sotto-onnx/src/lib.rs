//! General models for privacy inference (docs/share.md): an ONNX model run
//! with tract on rows reconstructed inside the inference enclave
//! ([`runtime`]), and the small gradient-boosted-tree classifier the
//! repository generates itself for tests and the demo ([`tree`]), with its
//! plain evaluation to check tract's answers against.

pub mod runtime;
pub mod tree;

pub use runtime::{OnnxError, OnnxModel};
pub use tree::{Node, TreeEnsemble};
