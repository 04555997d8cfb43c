//! Consortium PKI and transport shared by every online capability.
//!
//! - [`ca`]: a consortium certificate authority that certifies each node's
//!   name and Ed25519 identity key (the node's TLS key *is* its identity key,
//!   so a TLS peer and a protocol signer cannot differ).
//! - [`tls`]: the node's TLS material from its home, the server and client
//!   configurations for mutual TLS, and the authenticated peer identity.
//! - [`https`]: rustls configurations for HTTPS services outside users
//!   reach (client certificate optional on the server).

pub mod ca;
pub mod error;
pub mod https;
pub mod tls;

pub use error::NetError;
