//! The ledger's roles as gRPC services over mutual TLS, around the sans-IO
//! engines: the ordering service ([`orderer`]), business nodes
//! ([`business`]), endorsers ([`endorser`]), compute enclaves
//! ([`compute`]), and the client library ([`client`]). Every node checks
//! that its TLS CA is the one block 0 names, and that a caller's
//! certificate carries the identity key block 0 (or the compute group)
//! gives that name.

pub mod business;
pub mod client;
pub mod compute;
pub mod endorser;
pub mod orderer;
pub mod raft;

use std::time::Duration;

use sotto_crypto::identity::IdentityPublic;
use sotto_net::tls::{peer_certificate, TlsMaterial};
use sotto_node::NodeHome;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::block::Block;
use crate::config::LedgerConfig;
use crate::store::StoreError;

/// The longest a single call waits before it is reported as timed out.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// An error of a ledger node or client.
#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    /// TLS material or a certificate is unusable.
    #[error(transparent)]
    Net(#[from] sotto_net::NetError),
    /// The node home failed.
    #[error(transparent)]
    Node(#[from] sotto_node::NodeError),
    /// The registration center failed or refused.
    #[error(transparent)]
    Center(#[from] sotto_tee::online::OnlineError),
    /// The ledger store failed or was tampered with.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Block 0 was refused.
    #[error("block 0: {0}")]
    Genesis(String),
    /// This node is not what block 0 says it is.
    #[error("{0}")]
    Misconfigured(String),
    /// A database failed.
    #[error("{path}: {reason}")]
    Database {
        /// The file.
        path: std::path::PathBuf,
        /// What failed.
        reason: String,
    },
    /// A connection or call failed.
    #[error("{peer}: {reason}")]
    Transport {
        /// Who.
        peer: String,
        /// What failed.
        reason: String,
    },
    /// A peer refused a request, or answered something invalid.
    #[error("{peer} refused: {reason}")]
    Refused {
        /// Who.
        peer: String,
        /// Why.
        reason: String,
    },
}

/// Reads block 0 from a file and opens its configuration.
pub fn read_genesis(
    path: &std::path::Path,
) -> Result<(Block, LedgerConfig, [u8; 32]), OnlineError> {
    use prost::Message;
    let bytes = std::fs::read(path)
        .map_err(|e| OnlineError::Genesis(format!("{}: {e}", path.display())))?;
    let block = Block::decode(bytes.as_slice())
        .map_err(|e| OnlineError::Genesis(format!("{}: not a block: {e}", path.display())))?;
    let (config, tip) = block
        .open_genesis(&path.display().to_string())
        .map_err(|e| OnlineError::Genesis(e.to_string()))?;
    Ok((block, config, tip.ledger))
}

/// Loads this node's TLS material and checks it against block 0: valid now,
/// issued by the CA block 0 names.
pub fn tls_for(home: &NodeHome, config: &LedgerConfig) -> Result<TlsMaterial, OnlineError> {
    let tls = TlsMaterial::load(home)?;
    tls.check_validity(time::OffsetDateTime::now_utc())?;
    if tls.ca_sha256()? != config.ca_sha256 {
        return Err(OnlineError::Misconfigured(format!(
            "{}'s CA is not the consortium CA block 0 names (ca_sha256); this home belongs to another consortium",
            home.name()
        )));
    }
    Ok(tls)
}

/// Checks that this home is the node block 0 names `role` with this name
/// and identity key.
pub fn check_role(
    home: &NodeHome,
    role: &str,
    identity: Option<&IdentityPublic>,
) -> Result<(), OnlineError> {
    match identity {
        Some(key) if *key == home.identity().public() => Ok(()),
        Some(_) => Err(OnlineError::Misconfigured(format!(
            "{} is a {role} in block 0 with another identity key; this home is not that node",
            home.name()
        ))),
        None => Err(OnlineError::Misconfigured(format!(
            "{} is not a {role} in block 0",
            home.name()
        ))),
    }
}

/// Opens a mutual-TLS channel to `name` at `address` (lazily connected).
pub fn channel(tls: &TlsMaterial, name: &str, address: &str) -> Result<Channel, OnlineError> {
    Endpoint::from_shared(format!("https://{address}"))
        .and_then(|e| e.tls_config(tls.client_config(name)))
        .map(|e| {
            e.timeout(CALL_TIMEOUT)
                .connect_timeout(Duration::from_secs(3))
                .connect_lazy()
        })
        .map_err(|e| OnlineError::Transport {
            peer: format!("{name} (at {address})"),
            reason: e.to_string(),
        })
}

/// Mutual-TLS channels to peers, one per peer name, reused by every call
/// (a TLS handshake per call would cost more than the call).
pub struct Channels {
    tls: TlsMaterial,
    open: std::sync::Mutex<std::collections::HashMap<String, Channel>>,
}

impl Channels {
    /// Channels made with this node's TLS material.
    pub fn new(tls: TlsMaterial) -> Self {
        Self {
            tls,
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// This node's TLS material.
    pub fn tls(&self) -> &TlsMaterial {
        &self.tls
    }

    /// The channel to `name` at `address`, opened on first use.
    pub fn get(&self, name: &str, address: &str) -> Result<Channel, OnlineError> {
        let mut open = self
            .open
            .lock()
            .map_err(|_| OnlineError::Misconfigured("channel cache poisoned".into()))?;
        if let Some(c) = open.get(name) {
            return Ok(c.clone());
        }
        let c = channel(&self.tls, name, address)?;
        open.insert(name.to_owned(), c.clone());
        Ok(c)
    }
}

/// A gRPC server presenting this node's certificate and requiring the
/// consortium's client certificates.
pub fn server(tls: &TlsMaterial) -> Result<tonic::transport::Server, OnlineError> {
    tonic::transport::Server::builder()
        .tls_config(tls.server_config())
        .map_err(listener_failed)
}

/// A failure of this node's listener, in the node's own error.
pub fn listener_failed(e: impl std::fmt::Display) -> OnlineError {
    OnlineError::Transport {
        peer: "listener".into(),
        reason: e.to_string(),
    }
}

/// The caller's name if its certificate carries the identity key `expected`
/// gives that name.
pub fn caller<T>(
    request: &Request<T>,
    expected: impl Fn(&str) -> Option<IdentityPublic>,
) -> Result<String, Status> {
    let (identity, name) =
        peer_certificate(request).map_err(|e| Status::unauthenticated(e.to_string()))?;
    match expected(&name) {
        Some(key) if key == identity => Ok(name),
        _ => Err(Status::permission_denied(format!(
            "{name} is not a node this ledger lets make this call"
        ))),
    }
}

/// A transport failure of a call to `peer`, in words.
pub fn call_failed(peer: &str, status: &Status) -> OnlineError {
    OnlineError::Refused {
        peer: peer.to_owned(),
        reason: sotto_net::tls::describe_refused_call(status),
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
