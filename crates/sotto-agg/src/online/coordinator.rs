//! The coordinator's server: admits the job's clients by their mutual-TLS
//! identity, runs attempts of the job with the [`Coordinator`] engine on a
//! blocking thread, enforces the join and step deadlines, re-runs without
//! missing clients when asked, writes the result and report, and records
//! every attempt in the job log.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use serde::Serialize;
use sotto_crypto::identity::{IdentityKey, IdentityPublic};
use sotto_crypto::ids::JobId;
use sotto_net::tls::{peer_certificate, TlsMaterial};
use sotto_node::{NodeHome, NodeName};
use sotto_wire::agg::aggregation_server::{Aggregation, AggregationServer};
use sotto_wire::agg::Frame;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::frames::{abort_frame, envelope_frames, Assembled, Assembler};
use super::OnlineError;
use crate::engine::{Attempt, Coordinator, JobResult};
use crate::job::JobSpec;
use crate::joblog::{JobLog, JobRecord, Outcome, LOG_FILE};
use crate::message::Envelope;
use crate::table::{stage_json, stage_result, Query};

/// What the coordinator runs.
pub struct CoordinatorConfig {
    /// The node home (identity, pinned clients, job log).
    pub home: NodeHome,
    /// The job.
    pub spec: Arc<JobSpec>,
    /// The query ids.
    pub query: Arc<Query>,
    /// Re-run on the remaining clients when some miss a deadline.
    pub rerun_without_missing: bool,
    /// Where to write the result CSV.
    pub output: PathBuf,
    /// Where to write the JSON report.
    pub report: Option<PathBuf>,
}

/// What a completed job reports.
#[derive(Clone, Debug, Serialize)]
pub struct JobReport {
    /// Job name.
    pub job: String,
    /// The completed attempt's id.
    pub job_id: String,
    /// Its number.
    pub attempt: u32,
    /// Clients that took part.
    pub clients: Vec<String>,
    /// The lead.
    pub lead: String,
    /// Clients left out by re-runs.
    pub left_out: Vec<String>,
    /// Query ids.
    pub rows: u64,
    /// Summed columns.
    pub columns: Vec<String>,
    /// Customers that at least one institution has.
    pub customers_found: u64,
    /// Transcript hash (hex).
    pub transcript: String,
    /// The result file.
    pub result: String,
    /// Seconds waiting for clients to join.
    pub join_seconds: f64,
    /// Seconds from the offers to the result.
    pub protocol_seconds: f64,
    /// Seconds in all.
    pub total_seconds: f64,
    /// Peak resident memory of the coordinator.
    pub peak_rss_bytes: Option<u64>,
}

/// What the job thread hears from the connections. Every event but
/// `Shutdown` names the connection it came from, so that a second connection
/// under a client's name (refused) cannot make the job drop the first.
enum Event {
    Joined {
        name: NodeName,
        conn: u64,
        outbound: mpsc::Sender<Result<Frame, Status>>,
    },
    Envelope {
        name: NodeName,
        conn: u64,
        envelope: Envelope,
    },
    Malformed {
        name: NodeName,
        conn: u64,
        reason: String,
    },
    Gone {
        name: NodeName,
        conn: u64,
        reason: String,
    },
    Shutdown,
}

impl Event {
    /// The connection an event came from (`None` for joins and shutdown).
    fn connection(&self) -> Option<(&NodeName, u64)> {
        match self {
            Event::Envelope { name, conn, .. }
            | Event::Malformed { name, conn, .. }
            | Event::Gone { name, conn, .. } => Some((name, *conn)),
            Event::Joined { .. } | Event::Shutdown => None,
        }
    }
}

/// A client's admitted connection.
struct Link {
    conn: u64,
    outbound: mpsc::Sender<Result<Frame, Status>>,
}

struct AggService {
    clients: Vec<(NodeName, IdentityPublic)>,
    events: Sender<Event>,
    max_payload: usize,
    next_conn: std::sync::atomic::AtomicU64,
}

#[tonic::async_trait]
impl Aggregation for AggService {
    type JoinStream = ReceiverStream<Result<Frame, Status>>;

    async fn join(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::JoinStream>, Status> {
        let (identity, cert_name) =
            peer_certificate(&request).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let name = self
            .clients
            .iter()
            .find(|(_, key)| *key == identity)
            .map(|(n, _)| n.clone())
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "{cert_name} (identity {identity}) is not a pinned client of this job"
                ))
            })?;
        let (tx, rx) = mpsc::channel(32);
        let events = self.events.clone();
        let conn = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = events.send(Event::Joined {
            name: name.clone(),
            conn,
            outbound: tx,
        });
        let mut inbound = request.into_inner();
        let max_payload = self.max_payload;
        tokio::spawn(async move {
            let mut assembler = Assembler::new(max_payload);
            let reason = loop {
                match inbound.next().await {
                    None => break "closed its stream".to_owned(),
                    Some(Err(status)) => break sotto_net::tls::describe_status(&status),
                    Some(Ok(frame)) => match assembler.push(frame) {
                        Ok(Assembled::Pending) => {}
                        Ok(Assembled::Envelope(envelope)) => {
                            let event = Event::Envelope {
                                name: name.clone(),
                                conn,
                                envelope,
                            };
                            if events.send(event).is_err() {
                                return;
                            }
                        }
                        Ok(Assembled::Abort(a)) => break format!("aborted: {}", a.reason),
                        Err(reason) => {
                            let _ = events.send(Event::Malformed {
                                name: name.clone(),
                                conn,
                                reason,
                            });
                            return;
                        }
                    },
                }
            };
            let _ = events.send(Event::Gone { name, conn, reason });
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Serves one job on `listener`: waits for the clients, runs it, writes the
/// result, and returns when it is complete or has failed (or `shutdown`
/// completes first).
pub async fn serve(
    listener: TcpListener,
    config: CoordinatorConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<JobReport, OnlineError> {
    prepare(config)?.serve(listener, shutdown).await
}

/// A coordinator whose start-up checks have passed: this node is the job's
/// coordinator, its TLS material is valid, every client is pinned, and the
/// job log is open (and so locked). The binary prints `listening on` only
/// after [`prepare`] returns.
pub struct PreparedJob {
    config: CoordinatorConfig,
    tls: TlsMaterial,
    clients: Vec<(NodeName, IdentityPublic)>,
    log: JobLog,
}

/// Runs every start-up check of a coordinator.
pub fn prepare(config: CoordinatorConfig) -> Result<PreparedJob, OnlineError> {
    let home_name = config.home.name().clone();
    if home_name != config.spec.coordinator {
        return Err(OnlineError::WrongRole {
            node: home_name.to_string(),
            expected: config.spec.coordinator.to_string(),
            role: "coordinator",
        });
    }
    let tls = TlsMaterial::load(&config.home)?;
    tls.check_validity(time::OffsetDateTime::now_utc())?;
    let mut clients = Vec::new();
    for name in &config.spec.clients {
        let profile = config.home.peer(name).map_err(|_| OnlineError::NotPinned {
            client: name.to_string(),
        })?;
        clients.push((name.clone(), profile.identity));
    }
    let log = JobLog::open(&config.home.dir().join(LOG_FILE))?;
    Ok(PreparedJob {
        config,
        tls,
        clients,
        log,
    })
}

impl PreparedJob {
    /// Runs the job on `listener` (see [`serve`]).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<JobReport, OnlineError> {
        let PreparedJob {
            config,
            tls,
            clients,
            log,
        } = self;
        run_job(config, tls, clients, log, listener, shutdown).await
    }
}

async fn run_job(
    config: CoordinatorConfig,
    tls: TlsMaterial,
    clients: Vec<(NodeName, IdentityPublic)>,
    log: JobLog,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<JobReport, OnlineError> {
    let (events_tx, events_rx) = std::sync::mpsc::channel();
    let service = AggService {
        clients: clients.clone(),
        events: events_tx.clone(),
        max_payload: max_payload(&config),
        next_conn: std::sync::atomic::AtomicU64::new(0),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(tls.server_config())
            .map_err(|e| transport(e.to_string()))?
            .add_service(AggregationServer::new(service))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                let _ = stop_rx.await;
            }),
    );
    let shutdown_events = events_tx.clone();
    let watcher = tokio::spawn(async move {
        shutdown.await;
        let _ = shutdown_events.send(Event::Shutdown);
    });
    drop(events_tx);
    let runtime = tokio::runtime::Handle::current();
    let key = config.home.identity().duplicate();
    let identities: HashMap<NodeName, IdentityPublic> = clients.into_iter().collect();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut job = JobRun {
            config: &config,
            key,
            identities,
            log: &log,
            events: events_rx,
            links: HashMap::new(),
            runtime,
        };
        job.run()
    })
    .await
    .map_err(|e| transport(format!("the job thread failed: {e}")));
    watcher.abort();
    let _ = stop_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    outcome?
}

fn transport(reason: String) -> OnlineError {
    OnlineError::Transport {
        peer: "listener".into(),
        reason,
    }
}

/// The largest payload a client may send: a vector of the job's shape, or a
/// sealed one (a nonce and a tag more).
fn max_payload(config: &CoordinatorConfig) -> usize {
    let vector = config.query.ids.len() * config.spec.width() * 8;
    vector + 64
}

/// The error for clients that missed a deadline or left.
fn missing_error(missing: &[(NodeName, String)]) -> OnlineError {
    OnlineError::Missing {
        missing: missing
            .iter()
            .map(|(n, what)| (n.to_string(), what.clone()))
            .collect(),
    }
}

/// Why an attempt ended without a result.
enum Failure {
    /// Clients missed a deadline or left: a re-run without them may help.
    Missing(Vec<(NodeName, String)>),
    /// Anything else ends the job.
    Fatal(OnlineError),
}

impl From<OnlineError> for Failure {
    fn from(e: OnlineError) -> Self {
        Failure::Fatal(e)
    }
}

struct JobRun<'a> {
    config: &'a CoordinatorConfig,
    key: IdentityKey,
    identities: HashMap<NodeName, IdentityPublic>,
    log: &'a JobLog,
    events: Receiver<Event>,
    links: HashMap<NodeName, Link>,
    runtime: tokio::runtime::Handle,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl JobRun<'_> {
    fn run(&mut self) -> Result<JobReport, OnlineError> {
        let spec = Arc::clone(&self.config.spec);
        let started = Instant::now();
        let mut participants = spec.clients.clone();
        let mut left_out: Vec<String> = Vec::new();
        self.wait_for_joins(&participants, started + spec.join_deadline)
            .or_else(|missing| self.drop_missing(missing, &mut participants, &mut left_out))?;
        let join_seconds = started.elapsed().as_secs_f64();
        for number in 1.. {
            let lead = if participants.contains(&spec.lead) {
                spec.lead.clone()
            } else {
                participants[0].clone()
            };
            let attempt = Attempt {
                job: JobId::random(&mut OsRng),
                number,
                clients: participants.clone(),
                lead,
            };
            let mut record = self.start_record(&attempt)?;
            let protocol_started = Instant::now();
            let outcome = self.run_attempt(&attempt);
            record.finished = Some(now_rfc3339());
            match outcome {
                Ok(result) => {
                    record.outcome = Outcome::Completed;
                    record.transcript = Some(hex::encode(result.transcript));
                    self.log.put(&record)?;
                    let report = self.finish(
                        &attempt,
                        &result,
                        &left_out,
                        join_seconds,
                        protocol_started,
                        started,
                    )?;
                    return Ok(report);
                }
                Err(Failure::Missing(missing)) => {
                    let error = missing_error(&missing);
                    record.outcome = Outcome::Aborted;
                    record.error = Some(error.to_string());
                    self.log.put(&record)?;
                    tracing::warn!(job = %attempt.job, "{error}");
                    self.drop_missing(missing, &mut participants, &mut left_out)?;
                }
                Err(Failure::Fatal(error)) => {
                    record.outcome = Outcome::Aborted;
                    record.error = Some(error.to_string());
                    self.log.put(&record)?;
                    self.abort_all(&error.to_string());
                    return Err(error);
                }
            }
        }
        Err(OnlineError::Shutdown)
    }

    /// Removes missing clients for a re-run; `Err` when no re-run is
    /// possible (not asked for, or fewer than the job's `min_clients` would
    /// remain).
    fn drop_missing(
        &mut self,
        missing: Vec<(NodeName, String)>,
        participants: &mut Vec<NodeName>,
        left_out: &mut Vec<String>,
    ) -> Result<(), OnlineError> {
        let error = missing_error(&missing);
        let remaining = participants.len().saturating_sub(missing.len());
        if !self.config.rerun_without_missing || remaining < self.config.spec.min_clients {
            self.abort_all(&error.to_string());
            return Err(error);
        }
        for (name, _) in &missing {
            participants.retain(|p| p != name);
            left_out.push(name.to_string());
            if let Some(link) = self.links.remove(name) {
                self.send(
                    &link.outbound,
                    abort_frame("you missed a deadline; the job re-runs without you", false),
                );
            }
        }
        let reason = format!("{error}; re-running with fresh randomness without them");
        tracing::warn!("{reason}");
        let links: Vec<_> = participants
            .iter()
            .filter_map(|p| self.links.get(p).map(|l| l.outbound.clone()))
            .collect();
        for link in links {
            self.send(&link, abort_frame(&reason, true));
        }
        Ok(())
    }

    fn send(&self, link: &mpsc::Sender<Result<Frame, Status>>, frame: Frame) -> bool {
        let deadline = self.config.spec.step_deadline;
        self.runtime
            .block_on(link.send_timeout(Ok(frame), deadline))
            .is_ok()
    }

    fn abort_all(&mut self, reason: &str) {
        for link in std::mem::take(&mut self.links).into_values() {
            self.send(&link.outbound, abort_frame(reason, false));
        }
    }

    fn start_record(&self, attempt: &Attempt) -> Result<JobRecord, OnlineError> {
        let record = JobRecord {
            job_id: attempt.job.to_string(),
            name: self.config.spec.name.clone(),
            attempt: attempt.number,
            clients: attempt.clients.iter().map(ToString::to_string).collect(),
            lead: attempt.lead.to_string(),
            rows: self.config.query.ids.len() as u64,
            started: now_rfc3339(),
            finished: None,
            outcome: Outcome::Running,
            error: None,
            transcript: None,
        };
        self.log.put(&record)?;
        Ok(record)
    }

    /// Waits until every participant has joined, or returns who has not.
    fn wait_for_joins(
        &mut self,
        participants: &[NodeName],
        deadline: Instant,
    ) -> Result<(), Vec<(NodeName, String)>> {
        loop {
            let missing: Vec<_> = participants
                .iter()
                .filter(|p| !self.links.contains_key(*p))
                .map(|p| (p.clone(), "missed the deadline for its join".to_owned()))
                .collect();
            if missing.is_empty() {
                return Ok(());
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.next_event(wait) {
                Ok(Event::Joined {
                    name,
                    conn,
                    outbound,
                }) => self.admit(name, conn, outbound),
                Ok(Event::Gone { name, reason, .. }) => {
                    tracing::info!(client = %name, "left before the job started: {reason}");
                    self.links.remove(&name);
                }
                Ok(Event::Shutdown) | Err(RecvTimeoutError::Disconnected) => return Err(missing),
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => return Err(missing),
            }
        }
    }

    /// The next event from the clients, leaving out those of connections
    /// that are not (or no longer) a client's admitted one.
    fn next_event(&mut self, wait: Duration) -> Result<Event, RecvTimeoutError> {
        let until = Instant::now() + wait;
        loop {
            let event = self
                .events
                .recv_timeout(until.saturating_duration_since(Instant::now()))?;
            match event.connection() {
                Some((name, conn)) if self.links.get(name).is_none_or(|l| l.conn != conn) => {}
                _ => return Ok(event),
            }
        }
    }

    /// Refuses a second connection under a name already connected, keeping
    /// the first.
    fn refuse_second(&self, name: &NodeName, outbound: &mpsc::Sender<Result<Frame, Status>>) {
        tracing::warn!(client = %name, "a second connection under this name was refused");
        self.send(
            outbound,
            abort_frame(
                &format!(
                    "{name} is already connected to this job; this second connection is refused"
                ),
                false,
            ),
        );
    }

    fn admit(&mut self, name: NodeName, conn: u64, outbound: mpsc::Sender<Result<Frame, Status>>) {
        if self.links.contains_key(&name) {
            self.refuse_second(&name, &outbound);
            return;
        }
        tracing::info!(client = %name, "joined");
        self.links.insert(name, Link { conn, outbound });
    }

    fn run_attempt(&mut self, attempt: &Attempt) -> Result<JobResult, Failure> {
        let spec = Arc::clone(&self.config.spec);
        let key = self.key.duplicate();
        let identities = attempt
            .clients
            .iter()
            .filter_map(|c| self.identities.get(c).map(|k| (c.clone(), *k)))
            .collect();
        let mut engine = Coordinator::new(
            Arc::clone(&spec),
            attempt.clone(),
            spec.coordinator.clone(),
            key,
            identities,
            Arc::clone(&self.config.query),
        );
        tracing::info!(job = %attempt.job, attempt = attempt.number, lead = %attempt.lead, "offering the job to {} clients", attempt.clients.len());
        self.deliver(engine.offers())?;
        let mut deadline = Instant::now() + spec.step_deadline;
        loop {
            if let Some(result) = engine.result() {
                return Ok(result.clone());
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.next_event(wait) {
                Ok(Event::Envelope { name, envelope, .. }) => {
                    if !attempt.clients.contains(&name) {
                        continue;
                    }
                    let out = engine
                        .handle(&name, envelope, &mut OsRng)
                        .map_err(|e| Failure::Fatal(e.into()))?;
                    self.deliver(out)?;
                    deadline = Instant::now() + spec.step_deadline;
                }
                Ok(Event::Joined { name, outbound, .. }) if self.links.contains_key(&name) => {
                    self.refuse_second(&name, &outbound);
                }
                Ok(Event::Joined { name, outbound, .. }) => {
                    self.send(
                        &outbound,
                        abort_frame(
                            &format!("job {} is already running without {name}", attempt.job),
                            false,
                        ),
                    );
                }
                Ok(Event::Gone { name, reason, .. }) if attempt.clients.contains(&name) => {
                    self.links.remove(&name);
                    return Err(Failure::Missing(vec![(
                        name,
                        format!("left during the job ({reason})"),
                    )]));
                }
                Ok(Event::Gone { .. }) => {}
                Ok(Event::Malformed { name, reason, .. }) => {
                    return Err(Failure::Fatal(OnlineError::Malformed {
                        peer: name.to_string(),
                        reason,
                    }))
                }
                Ok(Event::Shutdown) | Err(RecvTimeoutError::Disconnected) => {
                    return Err(Failure::Fatal(OnlineError::Shutdown))
                }
                Err(RecvTimeoutError::Timeout) => {
                    let missing = engine
                        .waiting_on()
                        .into_iter()
                        .map(|(n, what)| (n, format!("missed the deadline for its {what}")))
                        .collect();
                    return Err(Failure::Missing(missing));
                }
            }
        }
    }

    fn deliver(&mut self, out: Vec<crate::engine::Outbound>) -> Result<(), Failure> {
        for o in out {
            let Some(link) = self.links.get(&o.to).map(|l| l.outbound.clone()) else {
                return Err(Failure::Missing(vec![(
                    o.to,
                    "is no longer connected".into(),
                )]));
            };
            for frame in envelope_frames(&o.envelope) {
                if !self.send(&link, frame) {
                    self.links.remove(&o.to);
                    return Err(Failure::Missing(vec![(
                        o.to,
                        format!(
                            "did not read its {} within the step deadline",
                            o.envelope.statement.step
                        ),
                    )]));
                }
            }
        }
        Ok(())
    }

    fn finish(
        &mut self,
        attempt: &Attempt,
        result: &JobResult,
        left_out: &[String],
        join_seconds: f64,
        protocol_started: Instant,
        started: Instant,
    ) -> Result<JobReport, OnlineError> {
        let spec = &self.config.spec;
        let mut staged = vec![stage_result(
            &self.config.output,
            &self.config.query,
            &spec.columns,
            &result.totals,
        )?];
        let protocol_seconds = protocol_started.elapsed().as_secs_f64();
        self.wait_for_clients_to_close(attempt);
        let width = spec.width();
        let report = JobReport {
            job: spec.name.clone(),
            job_id: attempt.job.to_string(),
            attempt: attempt.number,
            clients: attempt.clients.iter().map(ToString::to_string).collect(),
            lead: attempt.lead.to_string(),
            left_out: left_out.to_vec(),
            rows: self.config.query.ids.len() as u64,
            columns: spec.columns.iter().map(|c| c.name.clone()).collect(),
            customers_found: result
                .totals
                .chunks_exact(width)
                .filter(|r| r[width - 1] > 0)
                .count() as u64,
            transcript: hex::encode(result.transcript),
            result: self.config.output.display().to_string(),
            join_seconds,
            protocol_seconds,
            total_seconds: started.elapsed().as_secs_f64(),
            peak_rss_bytes: sotto_node::process::peak_rss_bytes(None),
        };
        if let Some(path) = &self.config.report {
            staged.push(stage_json(path, &report)?);
        }
        sotto_node::files::commit_all(staged)?;
        Ok(report)
    }

    /// After the result, gives every client up to a step deadline to read
    /// it and close its stream.
    fn wait_for_clients_to_close(&mut self, attempt: &Attempt) {
        let deadline = Instant::now() + self.config.spec.step_deadline;
        let mut open: Vec<NodeName> = attempt.clients.clone();
        while !open.is_empty() {
            let wait = deadline.saturating_duration_since(Instant::now());
            match self.next_event(wait) {
                Ok(Event::Gone { name, .. }) => open.retain(|n| *n != name),
                Ok(Event::Shutdown) | Err(_) => break,
                Ok(_) => {}
            }
        }
        self.links.clear();
    }
}
