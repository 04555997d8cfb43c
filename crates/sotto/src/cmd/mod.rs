//! One module per command group.

pub mod bench;
pub mod ca;
pub mod demo;
pub mod node;
pub mod psi;
pub mod relay;
pub mod setup;
