//! The client: connects to the coordinator over mutual TLS, runs the
//! [`Client`] engine on a blocking thread (following re-runs the coordinator
//! announces), and returns the signed result.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::OsRng;
use serde::Serialize;
use sotto_net::tls::TlsMaterial;
use sotto_node::{NodeHome, NodeName};
use sotto_wire::agg::aggregation_client::AggregationClient;
use sotto_wire::agg::Frame;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::frames::{envelope_frames, Assembled, Assembler};
use super::OnlineError;
use crate::engine::{Client, ClientResult};
use crate::job::JobSpec;
use crate::table::{stage_json, stage_result, ClientTable};

/// The largest payload a client buffers from the coordinator (the query
/// and the vectors of very large jobs stay well below it).
const MAX_PAYLOAD: usize = 1 << 30;

/// What a client runs.
pub struct ClientConfig {
    /// The node home.
    pub home: NodeHome,
    /// The job (the same file the coordinator runs).
    pub spec: Arc<JobSpec>,
    /// The coordinator's address (`host:port`).
    pub address: String,
    /// This client's table, already read and checked.
    pub table: Arc<ClientTable>,
    /// Where to write the result, if wanted.
    pub output: Option<PathBuf>,
    /// Where to write the JSON report, if wanted.
    pub report: Option<PathBuf>,
    /// Longest silence from the coordinator before giving up.
    pub timeout: Duration,
}

/// What a client reports.
#[derive(Clone, Debug, Serialize)]
pub struct ClientReport {
    /// Job name.
    pub job: String,
    /// The attempt's id.
    pub job_id: String,
    /// Its number.
    pub attempt: u32,
    /// This client.
    pub client: String,
    /// Whether it was the lead.
    pub lead: bool,
    /// Rows in this client's table.
    pub table_rows: u64,
    /// Query ids.
    pub rows: u64,
    /// Query ids this client has.
    pub own_matches: u64,
    /// Transcript hash from the coordinator (hex).
    pub transcript: String,
    /// The result file, if written.
    pub result: Option<String>,
    /// Seconds from connecting to the result.
    pub seconds: f64,
    /// Peak resident memory of this client.
    pub peak_rss_bytes: Option<u64>,
}

/// Joins the job and returns the report once the result has arrived.
pub async fn join(config: ClientConfig) -> Result<ClientReport, OnlineError> {
    let me = config.home.name().clone();
    if !config.spec.clients.contains(&me) {
        return Err(OnlineError::WrongRole {
            node: me.to_string(),
            expected: config
                .spec
                .clients
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            role: "clients",
        });
    }
    let coordinator = config.spec.coordinator.clone();
    let label = format!("coordinator {coordinator} at {}", config.address);
    let transport = |reason: String| OnlineError::Transport {
        peer: label.clone(),
        reason,
    };
    let coordinator_key = config
        .home
        .peer(&coordinator)
        .map_err(|_| OnlineError::NotPinned {
            client: coordinator.to_string(),
        })?
        .identity;
    let peers: HashMap<NodeName, _> = config
        .spec
        .clients
        .iter()
        .filter_map(|c| config.home.peer(c).ok().map(|p| (c.clone(), p.identity)))
        .collect();
    let tls = TlsMaterial::load(&config.home)?;
    tls.check_validity(time::OffsetDateTime::now_utc())?;
    let started = Instant::now();
    let channel = Channel::from_shared(format!("https://{}", config.address))
        .map_err(|e| transport(format!("bad address: {e}")))?
        .tls_config(tls.client_config(coordinator.as_str()))
        .map_err(|e| transport(e.to_string()))?
        .connect_timeout(Duration::from_secs(30))
        .connect()
        .await
        .map_err(|e| transport(sotto_net::tls::describe_transport(&e)))?;
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Frame>(32);
    let mut inbound = AggregationClient::new(channel)
        .max_decoding_message_size(8 << 20)
        .join(ReceiverStream::new(out_rx))
        .await
        .map_err(|status| transport(sotto_net::tls::describe_refused_call(&status)))?
        .into_inner();
    let (in_tx, in_rx) = std::sync::mpsc::channel();
    tokio::spawn(async move {
        while let Some(item) = inbound.next().await {
            if in_tx.send(item).is_err() {
                break;
            }
        }
    });
    let key = config.home.identity().duplicate();
    let engine = Client::new(
        Arc::clone(&config.spec),
        me.clone(),
        key,
        coordinator_key,
        peers,
        Arc::clone(&config.table),
        OsRng,
    );
    let timeout = config.timeout;
    let result =
        tokio::task::spawn_blocking(move || run_client(engine, &in_rx, &out_tx, timeout, &label))
            .await
            .map_err(|e| OnlineError::Transport {
                peer: "client".into(),
                reason: format!("the client thread failed: {e}"),
            })??;
    finish(&config, &me, &result, started)
}

fn run_client(
    mut engine: Client<OsRng>,
    inbound: &std::sync::mpsc::Receiver<Result<Frame, tonic::Status>>,
    outbound: &tokio::sync::mpsc::Sender<Frame>,
    timeout: Duration,
    label: &str,
) -> Result<ClientResult, OnlineError> {
    let mut assembler = Assembler::new(MAX_PAYLOAD);
    loop {
        let frame = match inbound.recv_timeout(timeout) {
            Ok(Ok(frame)) => frame,
            Ok(Err(status)) => {
                return Err(OnlineError::Transport {
                    peer: label.to_owned(),
                    reason: sotto_net::tls::describe_status(&status),
                })
            }
            Err(RecvTimeoutError::Timeout) => {
                return Err(OnlineError::Timeout {
                    peer: label.to_owned(),
                    waiting_for: "the next step of the job",
                    seconds: timeout.as_secs(),
                })
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(OnlineError::Transport {
                    peer: label.to_owned(),
                    reason: "the coordinator closed the connection before the result".into(),
                })
            }
        };
        let envelope = match assembler.push(frame) {
            Ok(Assembled::Pending) => continue,
            Ok(Assembled::Envelope(envelope)) => envelope,
            Ok(Assembled::Abort(abort)) if abort.rerun => {
                tracing::warn!("{}; waiting for the re-run", abort.reason);
                engine.reset();
                assembler = Assembler::new(MAX_PAYLOAD);
                continue;
            }
            Ok(Assembled::Abort(abort)) => {
                return Err(OnlineError::Aborted {
                    peer: label.to_owned(),
                    reason: abort.reason,
                })
            }
            Err(reason) => {
                return Err(OnlineError::Malformed {
                    peer: label.to_owned(),
                    reason,
                })
            }
        };
        let is_offer = envelope.statement.step == crate::message::Step::Offer;
        let replies = match engine.handle(envelope) {
            Ok(replies) => replies,
            Err(e) => {
                let _ = outbound.blocking_send(super::frames::abort_frame(&e.to_string(), false));
                return Err(e.into());
            }
        };
        if let Some(attempt) = engine.attempt().filter(|_| is_offer) {
            tracing::info!(job = %attempt.job, attempt = attempt.number, lead = %attempt.lead, "joined");
        }
        for reply in &replies {
            for frame in envelope_frames(reply) {
                outbound
                    .blocking_send(frame)
                    .map_err(|_| OnlineError::Transport {
                        peer: label.to_owned(),
                        reason: "the coordinator stopped reading".into(),
                    })?;
            }
        }
        if let Some(result) = engine.result() {
            return Ok(result.clone());
        }
    }
}

fn finish(
    config: &ClientConfig,
    me: &NodeName,
    result: &ClientResult,
    started: Instant,
) -> Result<ClientReport, OnlineError> {
    let mut staged = Vec::new();
    if let Some(path) = &config.output {
        staged.push(stage_result(
            path,
            &result.query,
            &config.spec.columns,
            &result.totals,
        )?);
    }
    let report = ClientReport {
        job: config.spec.name.clone(),
        job_id: result.attempt.job.to_string(),
        attempt: result.attempt.number,
        client: me.to_string(),
        lead: *me == result.attempt.lead,
        table_rows: config.table.rows() as u64,
        rows: result.query.ids.len() as u64,
        own_matches: result.own_matches as u64,
        transcript: hex::encode(result.transcript),
        result: config.output.as_ref().map(|p| p.display().to_string()),
        seconds: started.elapsed().as_secs_f64(),
        peak_rss_bytes: sotto_node::process::peak_rss_bytes(None),
    };
    if let Some(path) = &config.report {
        staged.push(stage_json(path, &report)?);
    }
    sotto_node::files::commit_all(staged)?;
    Ok(report)
}
