//! The requester's client: connects over mutual TLS, runs one session, and
//! writes the same outputs and report as the offline mode.

use sotto_crypto::group::GroupId;
use std::path::PathBuf;

use rand::rngs::OsRng;
use sotto_net::tls::TlsMaterial;
use sotto_node::clock::unix_now;
use sotto_node::files::commit_all;
use sotto_node::{NodeHome, NodeName, OutputRules};
use sotto_wire::psi::frame::Body;
use sotto_wire::psi::psi_client::PsiClient;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::link::Link;
use super::streams::{is_late_copy, offer_bytes, Inbound, Outbound, SESSION_COMPLETE};
use super::{Limits, OnlineError, StepError};
use crate::aligned::{check_duplicates, stage_rows, Duplicates};
use crate::codec::Writer;
use crate::engine::{PeerKeys, Session, SessionParams, Signer};
use crate::offline::FinishSummary;
use crate::report::{timed, Report, ReportContext};
use crate::steps::{self, ProgressSink, RequesterMatching};
use crate::table::{read_keys, KeySpec, OutputKind};
use crate::wire::{Hello, Receipt, Reveal, SigningMode, StreamKind};

/// What a requester runs.
pub struct RequesterConfig {
    /// The node home.
    pub home: NodeHome,
    /// The pinned provider.
    pub peer: NodeName,
    /// Its address (`host:port`), or the relay's.
    pub address: String,
    /// The relay to go through, by its certified node name.
    pub via: Option<NodeName>,
    /// The requester's CSV.
    pub input: PathBuf,
    /// Key columns and normalization.
    pub spec: KeySpec,
    /// PSI group the requester proposes.
    pub group: GroupId,
    /// Signing mode.
    pub mode: SigningMode,
    /// Reveal mode.
    pub reveal: Reveal,
    /// Elements per batch.
    pub batch_size: u32,
    /// Ask for aligned output (needs reveal `both`).
    pub align: bool,
    /// Under alignment, what to do with keys on several rows.
    pub duplicates: Duplicates,
    /// Under alignment, replace the key columns of the output by this column
    /// of per-session pseudonyms.
    pub id_column: Option<String>,
    /// Output CSV.
    pub output: Option<(PathBuf, OutputKind)>,
    /// JSON report.
    pub report: Option<PathBuf>,
    /// What the outputs are checked against (inputs, `--force`).
    pub rules: OutputRules,
    /// Timeouts and retries.
    pub limits: Limits,
    /// Progress display.
    pub progress: std::sync::Arc<dyn ProgressSink + Send>,
}

impl RequesterConfig {
    /// Refuses, before connecting, outputs that cannot be produced or that
    /// would overwrite an input, a key or an existing file.
    fn check_outputs(&self) -> Result<(), OnlineError> {
        let unavailable = |reason: &str| {
            Err(OnlineError::OutputUnavailable {
                reason: reason.to_owned(),
            })
        };
        if self.reveal == Reveal::Size && self.output.is_some() {
            return unavailable("reveal is `size`: you learn only how many keys are shared, so there are no rows for --output (drop it)");
        }
        if self.align && matches!(self.output, Some((_, OutputKind::Flag(_)))) {
            return unavailable("aligned output writes one row per shared customer, so --flag-column (every row, flagged) cannot be used");
        }
        if !self.align && self.id_column.is_some() {
            return unavailable("--output-id-column needs aligned output (--align)");
        }
        let outputs: Vec<&std::path::Path> = [
            self.output.as_ref().map(|(p, _)| p.as_path()),
            self.report.as_deref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.rules
            .clone()
            .with_input(&self.input)
            .check_all(&outputs)?;
        Ok(())
    }
}

/// Connects to the provider and runs one session.
pub async fn run(config: RequesterConfig) -> Result<FinishSummary, OnlineError> {
    config.check_outputs()?;
    let peer_label = match &config.via {
        Some(relay) => format!("{} via relay {relay} at {}", config.peer, config.address),
        None => format!("{} at {}", config.peer, config.address),
    };
    let transport = |reason: String| OnlineError::Transport {
        peer: peer_label.clone(),
        reason,
    };
    config.home.peer(&config.peer)?;
    let tls = TlsMaterial::load(&config.home)?;
    tls.check_validity(time::OffsetDateTime::now_utc())?;
    let endpoint = Channel::from_shared(format!("https://{}", config.address))
        .map_err(|e| transport(format!("bad address: {e}")))?
        .tls_config(tls.client_config(config.via.as_ref().unwrap_or(&config.peer).as_str()))
        .map_err(|e| transport(e.to_string()))?
        .connect_timeout(config.limits.verify_timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| transport(sotto_net::tls::describe_transport(&e)))?;
    let (out_tx, out_rx) = tokio::sync::mpsc::channel(32);
    let mut request = tonic::Request::new(ReceiverStream::new(out_rx).filter_map(Result::ok));
    let target = config
        .peer
        .as_str()
        .parse()
        .map_err(|_| transport(format!("{} cannot be sent as a header", config.peer)))?;
    request.metadata_mut().insert(super::TARGET_HEADER, target);
    let response = PsiClient::new(channel)
        .session(request)
        .await
        .map_err(|status| OnlineError::Refused {
            peer: peer_label.clone(),
            reason: sotto_net::tls::describe_refused_call(&status),
        })?;
    let mut inbound = response.into_inner();
    let (in_tx, in_rx) = std::sync::mpsc::channel();
    tokio::spawn(async move {
        while let Some(item) = inbound.next().await {
            if in_tx.send(item).is_err() {
                break;
            }
        }
    });
    let link = Link {
        inbound: in_rx,
        outbound: out_tx,
        peer: config.peer.to_string(),
    };
    tokio::task::spawn_blocking(move || {
        let result = run_session(&config, &link);
        if let Err(err) = &result {
            link.abort(&err.to_string());
        }
        result
    })
    .await
    .map_err(|e| transport(format!("session task failed: {e}")))?
}

fn run_session(config: &RequesterConfig, link: &Link) -> Result<FinishSummary, OnlineError> {
    let limits = &config.limits;
    let home = &config.home;
    let profile = home.peer(&config.peer)?;
    let peer = PeerKeys::from(&profile);
    let signer = Signer::for_home(home);
    let table = read_keys(&config.input, &config.spec)?;
    if config.align {
        check_duplicates(&table, config.duplicates)?;
    }
    let params = SessionParams {
        align: config.align,
        ..SessionParams::fresh(
            config.group,
            config.mode,
            config.reveal,
            config.batch_size,
            config.spec.params(),
            unix_now(),
            &mut OsRng,
        )
    };
    let fail = |source| OnlineError::Protocol {
        sid: params.sid,
        source,
    };
    let n = table.keys.len() as u64;
    let (mut session, hello) =
        Session::request(params, &signer, &peer, n, &mut OsRng).map_err(fail)?;
    let mut w = Writer::new();
    hello.encode(&mut w);
    link.send(Body::Hello(w.finish()))?;
    let accept = match link.recv(limits.idle_timeout, "the provider's accept")? {
        Body::Hello(bytes) => link.decode("accept", &bytes, Hello::decode)?,
        other => return Err(link.unexpected(&other, "the provider's accept")),
    };
    session.on_accept(&accept, &peer).map_err(fail)?;
    let m = session.provider_size();
    let mut timings = Vec::new();
    let sid = session.params().sid;
    let mut outbound = Outbound::default();
    let bar = config.progress.phase("round 1: encrypt and sign", n);
    outbound.begin(link, StreamKind::RequesterEncrypted)?;
    timed(&mut timings, "round 1: encrypt, sign and send u", n, || {
        steps::send_own_each(
            &mut session,
            StreamKind::RequesterEncrypted,
            &table.keys,
            &signer,
            &*bar,
            |batch| outbound.send(link, &batch).map_err(StepError::Online),
        )
        .map_err(|e| e.into_online(sid))
    })?;
    outbound.end(link)?;

    let mut w_in = Inbound::new(session.receiver(StreamKind::Reencrypted, n));
    let mut v_in = Inbound::new(session.receiver(StreamKind::ProviderEncrypted, m));
    let mut matching = RequesterMatching::new(&session);
    let reveal_both = config.reveal == Reveal::Both;
    if reveal_both {
        outbound.begin(link, StreamKind::RevealBack)?;
    }
    let mut provider_receipt: Option<Receipt> = None;
    let batch_size = session.params().batch_size;
    let bar = config
        .progress
        .phase("round 2: receive, verify and match", n + m);
    timed(
        &mut timings,
        "round 2: receive and verify w and v, compute z",
        n + m,
        || {
            while !(w_in.is_complete() && v_in.is_complete() && provider_receipt.is_some()) {
                let awaiting = w_in.awaiting_resend() || v_in.awaiting_resend();
                let wait = if awaiting {
                    limits.verify_timeout
                } else {
                    limits.idle_timeout
                };
                match link.recv(wait, "round 2 (batches of w and v)")? {
                    Body::Nack(nack) => outbound.resend(link, &nack, limits)?,
                    Body::Batch(bytes)
                        if w_in.is_complete()
                            && is_late_copy(&bytes, &[StreamKind::Reencrypted]) =>
                    {
                        w_in.duplicates += 1;
                    }
                    Body::Batch(bytes) if !w_in.is_complete() => {
                        let accepted =
                            offer_bytes(&mut w_in, &bytes, &peer, link, limits, batch_size)?;
                        if let Some(batch) = accepted {
                            matching.on_w(&batch);
                            bar(batch.elements.len() as u64);
                        }
                    }
                    Body::Batch(bytes) => {
                        let accepted =
                            offer_bytes(&mut v_in, &bytes, &peer, link, limits, batch_size)?;
                        if let Some(batch) = accepted {
                            let z = matching
                                .on_v(&mut session, &batch, &signer)
                                .map_err(|source| OnlineError::Protocol { sid, source })?;
                            if let Some(z) = z {
                                outbound.keep(link, &z)?;
                            }
                            bar(batch.elements.len() as u64);
                        }
                    }
                    Body::Receipt(bytes) => {
                        provider_receipt = Some(link.decode("receipt", &bytes, Receipt::decode)?)
                    }
                    Body::End(_) => {}
                    other => return Err(link.unexpected(&other, "round 2 (batches of w and v)")),
                }
            }
            Ok(())
        },
    )?;
    let failed_batches = w_in.refused + v_in.refused;
    let duplicate_batches = w_in.duplicates + v_in.duplicates;
    w_in.finish(&mut session).map_err(fail)?;
    v_in.finish(&mut session).map_err(fail)?;
    let result = timed(&mut timings, "finish: match", m, || {
        Ok::<_, OnlineError>(matching.finish(&mut session))
    })?;
    let Some(their_receipt) = provider_receipt else {
        unreachable!("round 2 ends only with the provider's receipt")
    };
    let finished = if config.reveal == Reveal::Size {
        None
    } else {
        let key = match config.align {
            true => Some(session.pseudonym_key().map_err(fail)?),
            false => None,
        };
        let rows = stage_rows(
            &table,
            &config.spec,
            &result.matched,
            config.output.as_ref(),
            key.as_ref().map(|k| (&sid, k, config.id_column.as_deref())),
        )?;
        if let Some(digest) = rows.digest {
            session.set_alignment(digest);
        }
        Some(rows)
    };
    session
        .check_receipt(&their_receipt, &peer, Some(result.size))
        .map_err(fail)?;
    let own_receipt = session.receipt(&signer, Some(result.size)).map_err(fail)?;
    let mut rw = Writer::new();
    own_receipt.encode(&mut rw);
    link.send(Body::Receipt(rw.finish()))?;
    if reveal_both {
        outbound.end(link)?;
    }
    loop {
        match link.recv(limits.idle_timeout, "the provider to confirm the session")? {
            Body::Nack(nack) => outbound.resend(link, &nack, limits)?,
            Body::Batch(bytes)
                if is_late_copy(
                    &bytes,
                    &[StreamKind::Reencrypted, StreamKind::ProviderEncrypted],
                ) => {}
            Body::End(end) if end.stream == SESSION_COMPLETE => break,
            Body::End(_) => {}
            other => return Err(link.unexpected(&other, "the provider to confirm the session")),
        }
    }
    let mut staged = Vec::new();
    let (matched_rows, alignment) = match finished {
        Some(rows) => {
            staged.extend(rows.file);
            (Some(rows.rows), rows.alignment)
        }
        None => (None, None),
    };
    let context = ReportContext {
        peer: config.peer.as_str(),
        input: &config.input,
        columns: &config.spec.columns,
        stats: table.stats,
        timings,
        failed_batches,
        duplicate_batches,
    };
    let mut report = Report::new(
        &session,
        context,
        Some(result.size),
        matched_rows,
        config.output.as_ref().map(|(p, _)| p.as_path()),
        (Some(&own_receipt), Some(&their_receipt)),
    );
    report.alignment = alignment;
    if let Some(path) = &config.report {
        staged.push(report.stage(path)?);
    }
    commit_all(staged)?;
    Ok(FinishSummary {
        sid: session.params().sid,
        intersection: Some(result.size),
        matched_rows,
        report,
    })
}
