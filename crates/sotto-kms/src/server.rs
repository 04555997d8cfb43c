//! The root KMS over gRPC with mutual TLS: every call is admitted by the
//! consortium CA and identified by the client certificate's node name; the
//! [`KmsEngine`] answers; the [`AuditWriter`] commits the audit event before
//! the answer leaves. Key changes are sealed to the third environment, then
//! committed, then applied, one at a time.

use std::sync::Arc;
use std::time::Instant;

use rand::rngs::OsRng;
use sotto_crypto::identity::{IdentityKey, IdentityPublic};
use sotto_net::tls::{peer_certificate, TlsMaterial};
use sotto_node::NodeHome;
use sotto_wire::kms::kms_server::{Kms as KmsService, KmsServer};
use sotto_wire::kms::{
    AuditRequest, AuditResponse, KeyInfo as WireKeyInfo, KeygenRequest, ListKeysRequest,
    ListKeysResponse, OpenChannelRequest, OpenChannelResponse, PublicKeyRequest, PublicKeyResponse,
    RecoverRequest, RecoverResponse, RetireRequest, RewrapRequest, RewrapResponse, RotateRequest,
    SigningKeyRequest, SigningKeyResponse,
};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use crate::audit_writer::AuditWriter;
use crate::bundle::{check_replaceable, Bundle, BUNDLE_OBJECT};
use crate::db::KmsDb;
use crate::engine::{KeyChange, KmsEngine, PublicKeyAnswer};
use crate::keys::{KeyId, KeyRing};
use crate::lifecycle::check_password;
use crate::objects::ObjectLocation;
use crate::password::OperatorPassword;
use crate::KmsError;
use sotto_node::clock::unix_now;

/// What the KMS serves.
pub struct ServeConfig {
    /// The KMS's node home (TLS identity; the database lives in it).
    pub home: NodeHome,
    /// The operator password, to seal the bundle after every change.
    pub password: OperatorPassword,
    /// Recoveries per second per participant.
    pub recover_rate: u32,
    /// Recovery burst per participant.
    pub recover_burst: u32,
    /// How long a reply channel lives.
    pub reply_channel_ttl: std::time::Duration,
}

struct Admin {
    generation: u64,
}

struct Kms {
    engine: Arc<KmsEngine>,
    writer: AuditWriter,
    db: Arc<KmsDb>,
    operator: IdentityPublic,
    password: Arc<OperatorPassword>,
    backup: ObjectLocation,
    admin: Mutex<Admin>,
}

/// The gRPC status for an engine or storage error.
fn status(e: &KmsError) -> Status {
    let text = e.to_string();
    match e {
        KmsError::NotOwner { .. } | KmsError::NotOperator { .. } => Status::permission_denied(text),
        KmsError::RateLimited { .. } => Status::resource_exhausted(text),
        KmsError::UnknownChannel { .. } => Status::aborted(text),
        KmsError::UnknownKey { .. } => Status::not_found(text),
        KmsError::RetiredKey { .. }
        | KmsError::KeyExists { .. }
        | KmsError::BackupInUse { .. }
        | KmsError::BundleAhead { .. } => Status::failed_precondition(text),
        KmsError::Malformed { .. } | KmsError::Escrow(_) | KmsError::BadKeyId { .. } => {
            Status::invalid_argument(text)
        }
        _ => Status::internal(text),
    }
}

impl Kms {
    fn caller<T>(&self, request: &Request<T>) -> Result<(IdentityPublic, String), Status> {
        peer_certificate(request).map_err(|e| Status::unauthenticated(e.to_string()))
    }

    fn operator<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let (identity, name) = self.caller(request)?;
        if identity != self.operator {
            return Err(status(&KmsError::NotOperator { caller: name }));
        }
        Ok(())
    }

    async fn audited<T>(&self, answer: crate::engine::Answer<T>) -> Result<T, Status> {
        if let Some(event) = answer.audit {
            self.writer.audit(event).await.map_err(|e| status(&e))?;
        }
        answer.result.map_err(|e| status(&e))
    }

    /// Seals the state with `change` applied to the third environment,
    /// commits it, then applies it.
    async fn change(&self, change: KeyChange) -> Result<Response<WireKeyInfo>, Status> {
        let mut admin = self.admin.lock().await;
        let generation = admin.generation + 1;
        let (seed, mut records) = self.engine.snapshot().map_err(|e| status(&e))?;
        records.retain(|r| {
            (r.info.key_id.as_str(), r.info.version)
                != (
                    change.record.info.key_id.as_str(),
                    change.record.info.version,
                )
        });
        records.push(change.record.clone());
        let bundle = Bundle::new(generation, unix_now(), &seed, records);
        let existing = self
            .backup
            .get(BUNDLE_OBJECT)
            .await
            .map_err(|e| status(&e))?;
        let password = Arc::clone(&self.password);
        let (signer, current, location) = (
            self.engine.signing_public(),
            admin.generation,
            self.backup.to_string(),
        );
        let sealed = tokio::task::spawn_blocking(move || {
            if let Some(existing) = existing {
                check_replaceable(&existing, &signer, current, &password, &location)?;
            }
            bundle.seal(&password, &mut OsRng)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| {
            tracing::error!("key change refused: {e}");
            status(&e)
        })?;
        self.backup
            .put(BUNDLE_OBJECT, sealed)
            .await
            .map_err(|e| status(&e))?;
        let sealed_event = crate::audit::AuditEvent::Sealed {
            location: self.backup.to_string(),
            generation,
        };
        self.writer
            .write(
                vec![change.record.clone()],
                Some(generation),
                vec![change.audit, sealed_event],
            )
            .await
            .map_err(|e| status(&e))?;
        admin.generation = generation;
        let json = serde_json::to_vec(&change.record.info).unwrap_or_default();
        self.engine.apply(change.record).map_err(|e| status(&e))?;
        Ok(Response::new(WireKeyInfo { json }))
    }
}

fn key_id(text: &str) -> Result<KeyId, Status> {
    text.parse().map_err(|e: KmsError| status(&e))
}

#[tonic::async_trait]
impl KmsService for Kms {
    async fn signing_key(
        &self,
        request: Request<SigningKeyRequest>,
    ) -> Result<Response<SigningKeyResponse>, Status> {
        self.caller(&request)?;
        Ok(Response::new(SigningKeyResponse {
            public_key: self.engine.signing_public().to_bytes().to_vec(),
        }))
    }

    async fn public_key(
        &self,
        request: Request<PublicKeyRequest>,
    ) -> Result<Response<PublicKeyResponse>, Status> {
        let (_, name) = self.caller(&request)?;
        let r = request.into_inner();
        let version = (r.version != 0).then_some(r.version);
        let channel = (!r.channel_key.is_empty()).then_some(r.channel_key.as_slice());
        let answer = self
            .engine
            .public_key(&name, &r.key_id, version, channel, &mut OsRng);
        Ok(Response::new(match self.audited(answer).await? {
            PublicKeyAnswer::Plain(signed) => PublicKeyResponse {
                statement: signed.json,
                signature: signed.signature.to_vec(),
                sealed: Vec::new(),
            },
            PublicKeyAnswer::Sealed(sealed) => PublicKeyResponse {
                statement: Vec::new(),
                signature: Vec::new(),
                sealed,
            },
        }))
    }

    async fn open_channel(
        &self,
        request: Request<OpenChannelRequest>,
    ) -> Result<Response<OpenChannelResponse>, Status> {
        let (_, name) = self.caller(&request)?;
        let r = request.into_inner();
        let answer = self
            .engine
            .open_channel(&name, &r.agent_key, Instant::now(), &mut OsRng);
        let grant = self.audited(answer).await?;
        Ok(Response::new(OpenChannelResponse {
            channel: grant.channel.as_bytes().to_vec(),
            kms_key: grant.kms_key.to_vec(),
            ttl_secs: grant.ttl_secs,
            signature: grant.signature.to_vec(),
        }))
    }

    async fn recover(
        &self,
        request: Request<RecoverRequest>,
    ) -> Result<Response<RecoverResponse>, Status> {
        let (_, name) = self.caller(&request)?;
        let r = request.into_inner();
        let answer =
            self.engine
                .recover(&name, &r.envelope, &r.channel, Instant::now(), &mut OsRng);
        if let Err(e) = &answer.result {
            tracing::warn!(participant = %name, "recovery refused: {e}");
        }
        let answer = self.audited(answer).await?;
        Ok(Response::new(RecoverResponse {
            salt: answer.salt.to_vec(),
            sealed: answer.sealed,
        }))
    }

    async fn rewrap(
        &self,
        request: Request<RewrapRequest>,
    ) -> Result<Response<RewrapResponse>, Status> {
        let (identity, name) = self.caller(&request)?;
        let is_operator = identity == self.operator;
        let r = request.into_inner();
        let answer = self
            .engine
            .rewrap(&name, is_operator, &r.envelope, &mut OsRng);
        let envelope = self.audited(answer).await?;
        Ok(Response::new(RewrapResponse {
            envelope: serde_json::to_vec(&envelope).unwrap_or_default(),
        }))
    }

    async fn keygen(
        &self,
        request: Request<KeygenRequest>,
    ) -> Result<Response<WireKeyInfo>, Status> {
        self.operator(&request)?;
        let r = request.into_inner();
        let owner = r
            .owner
            .parse()
            .map_err(|e: sotto_node::NodeError| Status::invalid_argument(e.to_string()))?;
        let id = KeyId::new(owner, &r.purpose).map_err(|e| status(&e))?;
        let change = self
            .engine
            .prepare_key(&id, false, unix_now(), &mut OsRng)
            .map_err(|e| status(&e))?;
        self.change(change).await
    }

    async fn rotate(
        &self,
        request: Request<RotateRequest>,
    ) -> Result<Response<WireKeyInfo>, Status> {
        self.operator(&request)?;
        let id = key_id(&request.into_inner().key_id)?;
        let change = self
            .engine
            .prepare_key(&id, true, unix_now(), &mut OsRng)
            .map_err(|e| status(&e))?;
        self.change(change).await
    }

    async fn retire(
        &self,
        request: Request<RetireRequest>,
    ) -> Result<Response<WireKeyInfo>, Status> {
        self.operator(&request)?;
        let r = request.into_inner();
        let change = self
            .engine
            .prepare_retire(&key_id(&r.key_id)?, r.version)
            .map_err(|e| status(&e))?;
        self.change(change).await
    }

    async fn list_keys(
        &self,
        request: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        self.operator(&request)?;
        let keys = self
            .engine
            .key_infos()
            .map_err(|e| status(&e))?
            .iter()
            .map(|info| WireKeyInfo {
                json: serde_json::to_vec(info).unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(ListKeysResponse { keys }))
    }

    async fn audit(
        &self,
        request: Request<AuditRequest>,
    ) -> Result<Response<AuditResponse>, Status> {
        self.operator(&request)?;
        let db = Arc::clone(&self.db);
        let entries = tokio::task::spawn_blocking(move || db.audit_entries())
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| status(&e))?;
        Ok(Response::new(AuditResponse {
            entries: entries
                .iter()
                .map(|e| serde_json::to_vec(e).unwrap_or_default())
                .collect(),
        }))
    }
}

/// A KMS whose start-up checks have passed: TLS material valid, database
/// opened (and so locked), operator password right, the bundle in the
/// third environment this KMS's own and not newer than its state. The
/// binary prints `listening on` only after [`prepare`] returns.
pub struct PreparedKms {
    tls: TlsMaterial,
    db: KmsDb,
    ring: KeyRing,
    signing: IdentityKey,
    backup: ObjectLocation,
    generation: u64,
    config: ServeConfig,
}

/// Runs every start-up check of the KMS.
pub async fn prepare(config: ServeConfig) -> Result<PreparedKms, KmsError> {
    let tls = TlsMaterial::load(&config.home)?;
    tls.check_validity(time::OffsetDateTime::now_utc())?;
    let db = KmsDb::open(config.home.dir())?;
    let meta = db.meta()?;
    check_password(&meta, &config.password)?;
    let ring = KeyRing::from_records(db.records()?)?;
    let signing = IdentityKey::from_seed(meta.signing_seed.as_slice())
        .map_err(|e| KmsError::Corrupt(format!("signing key: {e}")))?;
    let backup = ObjectLocation::parse(&meta.backup)?;
    match backup.get(BUNDLE_OBJECT).await? {
        Some(existing) => check_replaceable(
            &existing,
            &signing.public(),
            meta.generation,
            &config.password,
            &backup.to_string(),
        )?,
        None => tracing::warn!(
            "{backup} holds no sealed bundle: this KMS cannot be restored until the next key change writes one"
        ),
    }
    Ok(PreparedKms {
        tls,
        db,
        ring,
        signing,
        backup,
        generation: meta.generation,
        config,
    })
}

/// Checks `config` ([`prepare`]) and serves the root KMS on `listener` until
/// `shutdown` completes; when it returns, the database is closed.
pub async fn serve(
    listener: TcpListener,
    config: ServeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), KmsError> {
    prepare(config).await?.serve(listener, shutdown).await
}

impl PreparedKms {
    /// Serves the root KMS on `listener` until `shutdown` completes; when it
    /// returns, the database is closed.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), KmsError> {
        let PreparedKms {
            tls,
            db,
            ring,
            signing,
            backup,
            generation,
            config,
        } = self;
        let chain = db.audit_chain()?;
        let db = Arc::new(db);
        let (writer, writer_thread) = AuditWriter::start(Arc::clone(&db), chain);
        let kms = Kms {
            engine: Arc::new(
                KmsEngine::new(ring, signing, config.recover_rate, config.recover_burst)
                    .with_channel_ttl(config.reply_channel_ttl),
            ),
            writer,
            db,
            operator: config.home.identity().public(),
            password: Arc::new(config.password),
            backup,
            admin: Mutex::new(Admin { generation }),
        };
        let transport = |e: tonic::transport::Error| KmsError::Transport {
            peer: "listener".into(),
            reason: e.to_string(),
        };
        let served = tonic::transport::Server::builder()
            .tls_config(tls.server_config())
            .map_err(transport)?
            .add_service(KmsServer::new(kms))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await
            .map_err(transport);
        // The service (and every writer handle) is gone with the server; wait
        // for the writer to finish its last commit and release the database.
        let _ = tokio::task::spawn_blocking(move || writer_thread.join()).await;
        served
    }
}
