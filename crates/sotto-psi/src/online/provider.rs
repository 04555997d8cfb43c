//! The provider's server: `serve` takes a bound listener and a shutdown
//! future; every accepted stream is one isolated session, checked against the
//! client's mutual-TLS identity, the pinned peers and an allow list.

use std::path::PathBuf;
use std::sync::Arc;

use rand::rngs::OsRng;
use sotto_net::tls::{peer_certificate, TlsMaterial};
use sotto_node::clock::unix_now;
use sotto_node::files::commit_all;
use sotto_node::{NodeHome, NodeName, OutputRules, Profile};
use sotto_wire::psi::frame::Body;
use sotto_wire::psi::psi_server::{Psi, PsiServer};
use sotto_wire::psi::{Frame, StreamEnd};
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::link::Link;
use super::streams::{
    is_late_copy, offer_bytes, receive_stream, Inbound, Outbound, SESSION_COMPLETE,
};
use super::{Limits, OnlineError, StepError};
use crate::accepted::{AcceptedSessions, RecordError};
use crate::aligned::{check_duplicates, stage_rows, Duplicates, FinishRows};
use crate::codec::Writer;
use crate::engine::{AcceptPolicy, Matcher, PeerKeys, Session, Signer};
use crate::error::EngineError;
use crate::report::{Report, ReportContext};
use crate::steps;
use crate::table::{KeySpec, KeyTable, OutputKind};
use crate::wire::{Batch, Hello, Receipt, Reveal, StreamKind};

/// What a provider serves.
pub struct ProviderConfig {
    /// The node home (keys, pinned peers).
    pub home: NodeHome,
    /// The provider's keys, read once at start.
    pub table: KeyTable,
    /// How they were read.
    pub spec: KeySpec,
    /// Signing modes accepted.
    pub policy: AcceptPolicy,
    /// Pinned peers allowed to start sessions (`None`: every pinned peer).
    pub allow: Option<Vec<NodeName>>,
    /// Relays (by certified node name) whose connections are admitted; the
    /// requester behind a relay is identified by its signed hello.
    pub relays: Vec<NodeName>,
    /// Where to write per-session results under reveal `both`.
    pub output_dir: Option<PathBuf>,
    /// Under alignment, what to do with keys on several rows.
    pub duplicates: Duplicates,
    /// Under alignment, replace the key columns of the output by this column
    /// of per-session pseudonyms.
    pub id_column: Option<String>,
    /// Timeouts and retries.
    pub limits: Limits,
}

struct PsiService {
    config: Arc<ProviderConfig>,
    accepted: Arc<AcceptedSessions>,
}

/// A provider whose start-up checks have passed: TLS material loaded and
/// valid, every `--allow` name pinned, the output directory present. The
/// binary prints `listening on` only after [`prepare`] returns.
pub struct PreparedProvider {
    service: PsiService,
    tls: TlsMaterial,
}

/// Runs every start-up check of a provider.
pub fn prepare(config: ProviderConfig) -> Result<PreparedProvider, OnlineError> {
    let mut config = config;
    let tls = TlsMaterial::load(&config.home)?;
    tls.check_validity(time::OffsetDateTime::now_utc())?;
    for name in config.allow.iter().flatten() {
        config.home.peer(name).map_err(|_| {
            OnlineError::Config(format!(
                "--allow names {name}, which is not a pinned peer of this node; pin its profile with `sotto peer add` or fix the name"
            ))
        })?;
    }
    if let Some(dir) = &config.output_dir {
        OutputRules::new(false)
            .with_input(&config.table.path)
            .check_dir(dir)?;
    }
    config.policy.keys = config.spec.params();
    let accepted = Arc::new(AcceptedSessions::open(&config.home)?);
    Ok(PreparedProvider {
        service: PsiService {
            config: Arc::new(config),
            accepted,
        },
        tls,
    })
}

impl PreparedProvider {
    /// Serves PSI sessions on `listener` until `shutdown` completes.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), OnlineError> {
        let transport = |e: tonic::transport::Error| OnlineError::Transport {
            peer: "listener".into(),
            reason: e.to_string(),
        };
        tonic::transport::Server::builder()
            .tls_config(self.tls.server_config())
            .map_err(transport)?
            .add_service(PsiServer::new(self.service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await
            .map_err(transport)
    }
}

/// Checks `config` ([`prepare`]) and serves PSI sessions on `listener` until
/// `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: ProviderConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), OnlineError> {
    prepare(config)?.serve(listener, shutdown).await
}

/// Who is at the other end of an admitted connection.
enum Admission {
    /// A pinned peer, identified by its TLS certificate.
    Direct(Box<Profile>),
    /// A trusted relay; the requester is known only from its signed hello.
    Relayed(String),
}

impl ProviderConfig {
    fn check_allowed(&self, profile: &Profile) -> Result<(), String> {
        match &self.allow {
            Some(allow) if !allow.contains(&profile.name) => Err(format!(
                "peer {} is pinned but not on this provider's allow list",
                profile.name
            )),
            _ => Ok(()),
        }
    }
}

impl PsiService {
    fn admit(&self, request: &Request<Streaming<Frame>>) -> Result<Admission, Status> {
        let (identity, name) = peer_certificate(request).map_err(|e| {
            tracing::warn!("connection refused: {e}");
            Status::unauthenticated(e.to_string())
        })?;
        if let Ok(profile) = self.config.home.peer_by_identity(&identity) {
            self.config.check_allowed(&profile).map_err(|reason| {
                tracing::warn!(peer = %profile.name, "session refused: {reason}");
                Status::permission_denied(reason)
            })?;
            return Ok(Admission::Direct(Box::new(profile)));
        }
        if self.config.relays.iter().any(|r| r.as_str() == name) {
            return Ok(Admission::Relayed(name));
        }
        let reason = format!(
            "identity {identity} ({name}) is not a pinned peer nor a trusted relay of this provider"
        );
        tracing::warn!(peer = %name, "session refused: {reason}");
        Err(Status::permission_denied(reason))
    }
}

#[tonic::async_trait]
impl Psi for PsiService {
    type SessionStream = ReceiverStream<Result<Frame, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let admission = self.admit(&request)?;
        let label = match &admission {
            Admission::Direct(profile) => profile.name.to_string(),
            Admission::Relayed(relay) => format!("relay {relay}"),
        };
        tracing::info!(peer = %label, "session started");
        let mut inbound = request.into_inner();
        let (in_tx, in_rx) = std::sync::mpsc::channel();
        tokio::spawn(async move {
            while let Some(item) = inbound.next().await {
                if in_tx.send(item).is_err() {
                    break;
                }
            }
        });
        let (out_tx, out_rx) = tokio::sync::mpsc::channel(32);
        let config = Arc::clone(&self.config);
        let accepted = Arc::clone(&self.accepted);
        tokio::task::spawn_blocking(move || {
            let link = Link {
                inbound: in_rx,
                outbound: out_tx,
                peer: label.clone(),
            };
            match run_session(&config, &accepted, &admission, &link) {
                Ok(summary) => tracing::info!(peer = %label, "{summary}"),
                Err(err) => {
                    tracing::warn!(peer = %label, "session failed: {err}");
                    link.abort(&err.to_string());
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }
}

fn protocol(sid: sotto_crypto::ids::SessionId) -> impl Fn(EngineError) -> OnlineError {
    move |source| OnlineError::Protocol { sid, source }
}

/// Runs one session as the provider; returns a line for the log.
fn run_session(
    config: &ProviderConfig,
    accepted: &AcceptedSessions,
    admission: &Admission,
    link: &Link,
) -> Result<String, OnlineError> {
    let limits = &config.limits;
    let home = &config.home;
    let signer = Signer::for_home(home);
    let hello = match link.recv(limits.idle_timeout, "the requester's hello")? {
        Body::Hello(bytes) => link.decode("hello", &bytes, Hello::decode)?,
        other => return Err(link.unexpected(&other, "the requester's hello")),
    };
    let refused = |reason: String| OnlineError::Refused {
        peer: link.peer.clone(),
        reason,
    };
    let profile = match admission {
        Admission::Direct(profile) if profile.identity == hello.sender => (**profile).clone(),
        Admission::Direct(profile) => {
            return Err(refused(format!(
            "the hello is signed by identity {}, not by {} whose certificate opened the connection",
            hello.sender, profile.name
        )))
        }
        Admission::Relayed(_) => {
            let profile = home.peer_by_identity(&hello.sender).map_err(|_| {
                refused(format!(
                    "the hello relayed from identity {} is not from a pinned peer",
                    hello.sender
                ))
            })?;
            config.check_allowed(&profile).map_err(refused)?;
            profile
        }
    };
    let profile = &profile;
    let peer = PeerKeys::from(profile);
    config.table.check_unchanged()?;
    let m = config.table.keys.len() as u64;
    let now = unix_now();
    let (mut session, accept) =
        Session::accept(&hello, &signer, &peer, m, &config.policy, now, &mut OsRng)
            .map_err(protocol(hello.sid))?;
    if hello.align {
        check_duplicates(&config.table, config.duplicates).inspect_err(|e| {
            tracing::warn!(peer = %link.peer, "aligned session refused: {e}");
        }).map_err(|_| OnlineError::Protocol {
            sid: hello.sid,
            source: EngineError::Handshake("the session asks for aligned output, and the provider's input repeats keys on several rows while it refuses duplicates (--duplicates refuse); nothing was computed".into()),
        })?;
    }
    accepted
        .record(&hello.sid, hello.created, now)
        .map_err(|e| match e {
            RecordError::Replayed(source) => OnlineError::Replayed {
                peer: link.peer.clone(),
                source,
            },
            RecordError::Node(e) => e.into(),
        })?;
    let fail = protocol(hello.sid);
    let mut w = Writer::new();
    accept.encode(&mut w);
    link.send(Body::Hello(w.finish()))?;

    let n = session.requester_size();
    let batch_size = session.params().batch_size;
    let sid = hello.sid;
    let mut round1 = Inbound::new(session.receiver(StreamKind::RequesterEncrypted, n));
    // Once checked, u's signatures are no longer needed: keep its elements.
    let mut u: Vec<Batch> = Vec::new();
    receive_stream(&mut round1, &peer, link, limits, batch_size, |mut batch| {
        batch.signatures = Vec::new();
        u.push(batch);
        Ok(())
    })?;
    round1.finish(&mut session).map_err(&fail)?;
    let both = session.params().reveal == Reveal::Both;
    let mut kept_w = Matcher::new();
    let mut outbound = Outbound::default();
    outbound.begin(link, StreamKind::Reencrypted)?;
    steps::reencrypt_each(
        &mut session,
        StreamKind::Reencrypted,
        &u,
        &signer,
        &|_| {},
        |batch| {
            if both {
                kept_w.add_probe(&batch.elements);
            }
            outbound.send(link, &batch).map_err(StepError::Online)
        },
    )
    .map_err(|e| e.into_online(sid))?;
    outbound.end(link)?;
    drop(u);
    outbound.begin(link, StreamKind::ProviderEncrypted)?;
    steps::send_own_each(
        &mut session,
        StreamKind::ProviderEncrypted,
        &config.table.keys,
        &signer,
        &|_| {},
        |batch| outbound.send(link, &batch).map_err(StepError::Online),
    )
    .map_err(|e| e.into_online(sid))?;
    outbound.end(link)?;
    let receipt = session.receipt(&signer, None).map_err(&fail)?;
    let mut rw = Writer::new();
    receipt.encode(&mut rw);
    link.send(Body::Receipt(rw.finish()))?;

    let mut round3 = both.then(|| Inbound::new(session.receiver(StreamKind::RevealBack, m)));
    let mut requester_receipt: Option<Receipt> = None;
    let mut z: Vec<Batch> = Vec::new();
    while requester_receipt.is_none() || round3.as_ref().is_some_and(|z| !z.is_complete()) {
        let awaiting = round3.as_ref().is_some_and(Inbound::awaiting_resend);
        let wait = if awaiting {
            limits.verify_timeout
        } else {
            limits.idle_timeout
        };
        match link.recv(wait, "the requester's receipt")? {
            Body::Nack(nack) => outbound.resend(link, &nack, limits)?,
            Body::Receipt(bytes) => {
                requester_receipt = Some(link.decode("receipt", &bytes, Receipt::decode)?)
            }
            Body::Batch(bytes) if is_late_copy(&bytes, &[StreamKind::RequesterEncrypted]) => {}
            Body::Batch(bytes) => match round3.as_mut() {
                Some(z_in) => {
                    if let Some(mut batch) =
                        offer_bytes(z_in, &bytes, &peer, link, limits, batch_size)?
                    {
                        batch.signatures = Vec::new();
                        z.push(batch);
                    }
                }
                None => return Err(link.unexpected(&Body::Batch(bytes), "the requester's receipt")),
            },
            Body::End(_) => {}
            other => return Err(link.unexpected(&other, "the requester's receipt")),
        }
    }
    let Some(their_receipt) = requester_receipt else {
        unreachable!("the loop ends only with a receipt")
    };
    let result = match round3 {
        Some(z_in) => {
            let refused = z_in.refused + z_in.duplicates;
            z_in.finish(&mut session).map_err(&fail)?;
            let matched = steps::provider_finish(&session, kept_w.probe(), &z).map_err(&fail)?;
            Some(stage_provider_rows(
                config,
                &mut session,
                &matched,
                refused,
            )?)
        }
        None => None,
    };
    session
        .check_receipt(&their_receipt, &peer, result.as_ref().map(|r| r.size))
        .map_err(&fail)?;
    let summary = match result {
        Some(result) => {
            let (size, rows) = (result.size, result.rows.rows);
            commit_provider_result(
                config,
                &mut session,
                &signer,
                profile,
                result,
                &their_receipt,
            )?;
            format!(
                "session {} with {}: {size} shared keys, {rows} rows",
                hello.sid, profile.name
            )
        }
        None => format!(
            "session {} with {} complete; the requester holds the result",
            hello.sid, profile.name
        ),
    };
    link.send(Body::End(StreamEnd {
        stream: SESSION_COMPLETE,
    }))?;
    Ok(summary)
}

/// The provider's result under reveal `both`, staged until the requester's
/// receipt is checked.
struct ProviderResult {
    size: u64,
    refused: u64,
    rows: FinishRows,
}

fn stage_provider_rows(
    config: &ProviderConfig,
    session: &mut Session,
    matched: &[u32],
    refused: u64,
) -> Result<ProviderResult, OnlineError> {
    let sid = session.params().sid;
    let output = config
        .output_dir
        .as_ref()
        .map(|dir| (dir.join(format!("{sid}.csv")), OutputKind::Rows));
    let key = match session.params().align {
        true => Some(session.pseudonym_key().map_err(protocol(sid))?),
        false => None,
    };
    let rows = stage_rows(
        &config.table,
        &config.spec,
        matched,
        output.as_ref(),
        key.as_ref().map(|k| (&sid, k, config.id_column.as_deref())),
    )?;
    if let Some(digest) = rows.digest {
        session.set_alignment(digest);
    }
    Ok(ProviderResult {
        size: matched.len() as u64,
        refused,
        rows,
    })
}

/// Signs the provider's own receipt and places its rows and report.
fn commit_provider_result(
    config: &ProviderConfig,
    session: &mut Session,
    signer: &Signer<'_>,
    profile: &Profile,
    result: ProviderResult,
    their_receipt: &Receipt,
) -> Result<(), OnlineError> {
    let sid = session.params().sid;
    let own = session
        .receipt(signer, Some(result.size))
        .map_err(protocol(sid))?;
    let mut staged: Vec<_> = result.rows.file.into_iter().collect();
    if let Some(dir) = &config.output_dir {
        let context = ReportContext {
            peer: profile.name.as_str(),
            input: &config.table.path,
            columns: &config.spec.columns,
            stats: config.table.stats,
            timings: Vec::new(),
            failed_batches: result.refused,
            duplicate_batches: 0,
        };
        let output = dir.join(format!("{sid}.csv"));
        let mut report = Report::new(
            session,
            context,
            Some(result.size),
            Some(result.rows.rows),
            Some(output.as_path()),
            (Some(their_receipt), Some(&own)),
        );
        report.alignment = result.rows.alignment;
        staged.push(report.stage(&dir.join(format!("{sid}.report.json")))?);
    }
    commit_all(staged)?;
    Ok(())
}
