//! One module per command group.

pub mod agg;
pub mod agg_drill;
pub mod bench;
pub mod bench_kms;
pub mod bench_ledger;
pub mod bench_share;
pub mod ca;
pub mod demo;
pub mod demo_kms;
pub mod demo_ledger;
pub mod demo_share;
pub mod demo_tee;
pub mod kms;
pub mod ledger;
pub mod ledger_drills;
pub mod model;
pub mod node;
pub mod psi;
pub mod registry;
pub mod relay;
pub mod secrets;
pub mod setup;
pub mod share;
pub mod tee;
