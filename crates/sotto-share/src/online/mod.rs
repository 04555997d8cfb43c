//! The inference parties' drivers (docs/share.md): [`group`] follows the
//! enclave group (membership, group keys) from the registration center;
//! [`provider`] serves a provider's partial results over gRPC with mutual
//! TLS; [`gateway`] fans a scoring request out to every provider and
//! combines the answers; [`http`] is the gateway's HTTPS + JSON API for
//! outside users, admitted by [`users`]; [`wire`] converts the query to and
//! from its protobuf envelope. The protocol itself is sans-IO in
//! [`crate::inference`].

pub mod gateway;
pub mod group;
pub mod http;
pub mod provider;
pub mod users;
pub mod wire;
