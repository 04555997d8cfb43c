//! The center's server: every call is admitted by mutual TLS; the engine
//! runs under a lock; every change is written to redb in one transaction
//! before it is answered and broadcast to watchers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::OsRng;
use redb::{Database, TableDefinition};
use sotto_crypto::hpke::HpkePublicKey;
use sotto_crypto::identity::IdentityKey;
use sotto_net::tls::{peer_certificate, TlsMaterial};
use sotto_node::NodeHome;
use sotto_wire::tee::registry_server::{Registry as RegistryService, RegistryServer};
use sotto_wire::tee::{
    ChallengeRequest, ChallengeResponse, GroupKeyRequest, GroupKeyResponse, LeaveRequest,
    MembersRequest, MembershipUpdate, RegisterRequest, RevokeRequest,
};
use tokio::net::TcpListener;
use tokio::sync::{watch, Mutex};
use tokio_stream::wrappers::{TcpListenerStream, WatchStream};
use tonic::{Request, Response, Status};

use super::OnlineError;
use crate::dcap::{parse_collateral, verify_quote};
use crate::evidence::Verified;
use crate::policy::Policy;
use crate::registry::{Membership, Registration, Registry, RegistryError, RegistryState};
use crate::snp::{parse_ca_chain, verify_report};
use crate::software::verify_evidence;
use sotto_node::clock::unix_now;

const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("registry");
/// The center's database file in its home.
pub const DB_FILE: &str = "tee-registry.redb";

/// What the center serves.
pub struct CenterConfig {
    /// The center's node home.
    pub home: NodeHome,
    /// The admission policy.
    pub policy: Policy,
    /// Development mode (the policy may then accept software evidence).
    pub dev: bool,
    /// Rotate the group key this often, if set.
    pub rotate_every: Option<Duration>,
}

struct Inner {
    registry: Registry,
    db: Database,
    db_path: PathBuf,
    key: IdentityKey,
}

struct Center {
    inner: Arc<Mutex<Inner>>,
    updates: watch::Sender<MembershipUpdate>,
    own_identity: sotto_crypto::identity::IdentityPublic,
    policy: Policy,
}

impl Inner {
    fn persist(&self) -> Result<(), Status> {
        let fail = |e: String| Status::internal(format!("{}: {e}", self.db_path.display()));
        let bytes = self.registry.state().to_bytes(&self.key).map_err(&fail)?;
        let txn = self.db.begin_write().map_err(|e| fail(e.to_string()))?;
        {
            let mut table = txn.open_table(STATE).map_err(|e| fail(e.to_string()))?;
            table
                .insert("state", bytes.as_slice())
                .map_err(|e| fail(e.to_string()))?;
        }
        txn.commit().map_err(|e| fail(e.to_string()))
    }

    fn update(&self) -> MembershipUpdate {
        let (membership, signature) = self.registry.signed_membership();
        MembershipUpdate {
            membership_json: membership.signed_bytes(),
            signature: signature.to_vec(),
        }
    }
}

fn load_state(
    db: &Database,
    key: &IdentityKey,
    path: &std::path::Path,
) -> Result<RegistryState, OnlineError> {
    let fail = |reason: String| OnlineError::Database {
        path: path.to_owned(),
        reason,
    };
    let txn = db.begin_read().map_err(|e| fail(e.to_string()))?;
    let table = match txn.open_table(STATE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(RegistryState::default()),
        Err(e) => return Err(fail(e.to_string())),
    };
    match table.get("state").map_err(|e| fail(e.to_string()))? {
        Some(bytes) => RegistryState::from_bytes(bytes.value(), key).map_err(fail),
        None => Ok(RegistryState::default()),
    }
}

fn refused(e: &RegistryError) -> Status {
    match e {
        RegistryError::Revoked { .. }
        | RegistryError::NotMember { .. }
        | RegistryError::Suspended { .. } => Status::permission_denied(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

impl Center {
    fn caller<T>(
        &self,
        request: &Request<T>,
    ) -> Result<(sotto_crypto::identity::IdentityPublic, String), Status> {
        peer_certificate(request).map_err(|e| Status::unauthenticated(e.to_string()))
    }

    fn verify(&self, r: &RegisterRequest) -> Result<Verified, String> {
        match r.kind.as_str() {
            "software" => verify_evidence(&r.evidence, &self.policy.software_platform_keys),
            "dcap" => parse_collateral(&r.collateral)
                .and_then(|c| verify_quote(&r.evidence, &c, unix_now())),
            "sev-snp" => parse_ca_chain(&r.ark_ask)
                .and_then(|chain| verify_report(&r.evidence, &r.vcek, chain)),
            other => return Err(format!("unknown evidence kind {other:?}")),
        }
        .map_err(|e| e.to_string())
    }

    async fn changed(&self, inner: &Inner) -> Result<MembershipUpdate, Status> {
        inner.persist()?;
        let update = inner.update();
        self.updates.send_replace(update.clone());
        Ok(update)
    }
}

#[tonic::async_trait]
impl RegistryService for Center {
    type WatchStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<MembershipUpdate, Status>> + Send>,
    >;

    async fn challenge(
        &self,
        request: Request<ChallengeRequest>,
    ) -> Result<Response<ChallengeResponse>, Status> {
        let (identity, _) = self.caller(&request)?;
        let now = unix_now();
        let nonce = self
            .inner
            .lock()
            .await
            .registry
            .challenge(&identity, now, &mut OsRng);
        Ok(Response::new(ChallengeResponse {
            nonce: nonce.to_vec(),
            expires_unix: now + crate::registry::NONCE_LIFETIME,
        }))
    }

    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<MembershipUpdate>, Status> {
        let (identity, name) = self.caller(&request)?;
        let r = request.into_inner();
        let hpke = HpkePublicKey::from_bytes(&r.hpke_public)
            .map_err(|e| Status::invalid_argument(format!("hpke_public: {e}")))?;
        let nonce: [u8; 32] = r
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument("nonce: expected 32 bytes"))?;
        let evidence = self.verify(&r);
        let registration = Registration {
            name: name.clone(),
            identity,
            hpke,
            nonce,
            evidence,
        };
        let mut inner = self.inner.lock().await;
        match inner
            .registry
            .register(registration, unix_now(), &mut OsRng)
        {
            Ok(_) => {
                tracing::info!(node = %name, "admitted");
                let update = self.changed(&inner).await?;
                Ok(Response::new(update))
            }
            Err(e) => {
                tracing::warn!(node = %name, "registration refused: {e}");
                Err(refused(&e))
            }
        }
    }

    async fn members(
        &self,
        request: Request<MembersRequest>,
    ) -> Result<Response<MembershipUpdate>, Status> {
        self.caller(&request)?;
        Ok(Response::new(self.inner.lock().await.update()))
    }

    async fn watch(
        &self,
        request: Request<MembersRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.caller(&request)?;
        let updates = WatchStream::new(self.updates.subscribe());
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            updates, Ok,
        ))))
    }

    async fn group_key(
        &self,
        request: Request<GroupKeyRequest>,
    ) -> Result<Response<GroupKeyResponse>, Status> {
        let (identity, name) = self.caller(&request)?;
        let version = Some(request.get_ref().version).filter(|v| *v != 0);
        let inner = self.inner.lock().await;
        let sealed = inner
            .registry
            .group_key_for(&identity, version, &mut OsRng)
            .map_err(|e| {
                tracing::warn!(node = %name, "group key refused: {e}");
                refused(&e)
            })?;
        Ok(Response::new(GroupKeyResponse {
            version: sealed.version,
            sealed: sealed.sealed,
        }))
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<MembershipUpdate>, Status> {
        let (identity, name) = self.caller(&request)?;
        let mut inner = self.inner.lock().await;
        inner
            .registry
            .leave(&identity, unix_now(), &mut OsRng)
            .map_err(|e| refused(&e))?;
        tracing::info!(node = %name, "left; group key rotated");
        Ok(Response::new(self.changed(&inner).await?))
    }

    async fn revoke(
        &self,
        request: Request<RevokeRequest>,
    ) -> Result<Response<MembershipUpdate>, Status> {
        let (identity, _) = self.caller(&request)?;
        if identity != self.own_identity {
            return Err(Status::permission_denied(
                "only the center's operator (its own identity) may revoke members",
            ));
        }
        let node = request.into_inner().node;
        let mut inner = self.inner.lock().await;
        inner
            .registry
            .revoke(&node, unix_now(), &mut OsRng)
            .map_err(|e| refused(&e))?;
        tracing::info!(node = %node, "revoked; group key rotated");
        Ok(Response::new(self.changed(&inner).await?))
    }
}

/// Serves the center on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: CenterConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), OnlineError> {
    prepare(config)?.serve(listener, shutdown).await
}

/// A center whose start-up checks have passed: TLS material valid, its
/// database opened (and so locked) and loaded, every member re-checked
/// against the policy. The binary prints `listening on` only after
/// [`prepare`] returns.
pub struct PreparedCenter {
    tls: TlsMaterial,
    inner: Inner,
    config: CenterConfig,
}

/// Runs every start-up check of the center.
pub fn prepare(config: CenterConfig) -> Result<PreparedCenter, OnlineError> {
    let tls = TlsMaterial::load(&config.home)?;
    tls.check_validity(time::OffsetDateTime::now_utc())?;
    let db_path = config.home.dir().join(DB_FILE);
    sotto_node::files::warn_if_exposed(&db_path);
    let db = Database::create(&db_path).map_err(|e| OnlineError::Database {
        path: db_path.clone(),
        reason: e.to_string(),
    })?;
    sotto_node::files::restrict_file(&db_path)?;
    let key = config.home.identity().duplicate();
    let state = load_state(&db, &key, &db_path)?;
    let mut registry = Registry::new(
        state,
        config.policy.clone(),
        config.dev,
        config.home.identity().duplicate(),
    );
    let suspended = registry.recheck_members(unix_now(), &mut OsRng);
    let inner = Inner {
        registry,
        db,
        db_path,
        key,
    };
    if !suspended.is_empty() {
        inner.persist().map_err(|status| OnlineError::Database {
            path: inner.db_path.clone(),
            reason: status.message().to_owned(),
        })?;
        for (node, reasons) in &suspended {
            tracing::warn!(
                node = %node,
                "suspended: the policy no longer accepts its evidence: {}",
                reasons.join("; ")
            );
        }
        tracing::warn!(
            "{} member(s) suspended at start-up; group key rotated to v{}",
            suspended.len(),
            inner.registry.membership().group_key_version
        );
    }
    Ok(PreparedCenter { tls, inner, config })
}

impl PreparedCenter {
    /// Serves the center on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), OnlineError> {
        let PreparedCenter { tls, inner, config } = self;
        serve_prepared(tls, inner, config, listener, shutdown).await
    }
}

async fn serve_prepared(
    tls: TlsMaterial,
    inner: Inner,
    config: CenterConfig,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), OnlineError> {
    let (updates, _) = watch::channel(inner.update());
    let inner = Arc::new(Mutex::new(inner));
    if let Some(period) = config.rotate_every {
        let (inner, updates) = (Arc::clone(&inner), updates.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                let mut guard = inner.lock().await;
                let version = guard.registry.rotate(unix_now(), &mut OsRng);
                if guard.persist().is_ok() {
                    tracing::info!(version, "group key rotated on schedule");
                    updates.send_replace(guard.update());
                }
            }
        });
    }
    let center = Center {
        inner,
        updates,
        own_identity: config.home.identity().public(),
        policy: config.policy,
    };
    tonic::transport::Server::builder()
        .tls_config(tls.server_config())
        .map_err(|e| OnlineError::Transport {
            peer: "listener".into(),
            reason: e.to_string(),
        })?
        .add_service(RegistryServer::new(center))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(|e| OnlineError::Transport {
            peer: "listener".into(),
            reason: e.to_string(),
        })
}

/// Parses and checks a membership update signed by the center.
pub fn open_update(
    update: &MembershipUpdate,
    center: &sotto_crypto::identity::IdentityPublic,
) -> Result<Membership, String> {
    center
        .verify(
            crate::registry::MEMBERSHIP_DOMAIN,
            &update.membership_json,
            &update.signature,
            "membership",
        )
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&update.membership_json).map_err(|e| e.to_string())
}
