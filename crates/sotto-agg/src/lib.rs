//! Secure aggregation across n institutions by zero-sum masking (see
//! `docs/agg.md`): a coordinator learns per-customer totals and the number of
//! institutions per customer, and no party sees another's values.
//!
//! Layout: [`job`] (the agreed job file), [`fixed`] (decimal to fixed-point),
//! [`table`] (client tables, query, result file), [`message`] (signed
//! statements), [`engine`] (sans-IO coordinator and client).

pub mod engine;
pub mod error;
pub mod fixed;
pub mod job;
pub mod joblog;
pub mod message;
pub mod online;
pub mod table;
