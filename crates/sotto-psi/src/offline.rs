//! The offline driver: each step reads the previous step's file, checks it
//! completely, and only then computes and writes the next file. Session state
//! (secrets included) lives in `HOME/sessions/<sid>.state`, mode 0600, and is
//! removed when the party finishes.
//!
//! Requester: [`start`] → (provider: [`accept`]) → [`send`] → (provider:
//! [`respond`]) → [`finish`]; the provider may then [`finish`] with the
//! requester's closing file (required under reveal `both`).

use sotto_crypto::group::GroupId;
use std::path::{Path, PathBuf};

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sotto_crypto::ids::SessionId;
use sotto_node::clock::unix_now;
use sotto_node::files::{commit_all, read, write_atomic, AtomicFile, Visibility};
use sotto_node::{NodeError, NodeHome, OutputRules, Profile};

use crate::accepted::{AcceptedSessions, RecordError};
use crate::aligned::{check_duplicates, stage_rows, Duplicates, FinishRows};
use crate::engine::{
    AcceptPolicy, PeerKeys, Session, SessionParams, Signer, MAX_BATCH_SIZE, TRUNCATED_LEN,
};
use crate::error::{DecodeError, EngineError, Replayed, TableError};
use crate::files::{FileBody, FileKind, PsiFile};
use crate::report::{timed, PhaseTiming, Report, ReportContext};
use crate::steps::{self, ProgressSink};
use crate::table::{read_keys, InputStats, KeySpec, KeyTable, OutputKind, Shard};
use crate::wire::{Receipt, Reveal, Role, SigningMode, StreamKind};

const STATE_MAGIC: &[u8; 8] = b"SOTTOSTA";

/// An error of an offline step. Nothing is written when a step fails.
#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    /// A file could not be decoded.
    #[error("{path}: {source}; the file is truncated, corrupted or not a sotto PSI file")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// Where decoding failed.
        source: DecodeError,
    },
    /// The file is from another step than the one expected.
    #[error("{path} is {found}, but this step needs {expected}")]
    WrongKind {
        /// The file.
        path: PathBuf,
        /// What this step needs.
        expected: &'static str,
        /// What the file is.
        found: &'static str,
    },
    /// The file's session has no state in this home.
    #[error("{path}: session {sid} is not known to this node (no {state}); was it started from another home, or already finished?")]
    UnknownSession {
        /// The file.
        path: PathBuf,
        /// Its session.
        sid: SessionId,
        /// The missing state file.
        state: PathBuf,
    },
    /// The session is not at the phase this step needs.
    #[error("session {sid}: {reason}")]
    WrongPhase {
        /// The session.
        sid: SessionId,
        /// What is out of order.
        reason: String,
    },
    /// The file's sender is not this session's peer, or not pinned at all.
    #[error("{path}: {reason}")]
    UnknownSender {
        /// The file.
        path: PathBuf,
        /// Details.
        reason: String,
    },
    /// The protocol refused the file's contents.
    #[error("{path}: {source}")]
    Protocol {
        /// The file.
        path: PathBuf,
        /// What the engine refused.
        source: EngineError,
    },
    /// The session state file is damaged.
    #[error("{path}: session state is damaged: {reason}")]
    BadState {
        /// The state file.
        path: PathBuf,
        /// Details.
        reason: String,
    },
    /// The hello's session was accepted before (a replay, or `accept` run twice).
    #[error("{path}: {source}")]
    Replayed {
        /// The hello file.
        path: PathBuf,
        /// The earlier acceptance.
        source: Replayed,
    },
    /// An output was asked for that this session cannot produce.
    #[error("session {sid}: {reason}; nothing was computed")]
    OutputUnavailable {
        /// The session.
        sid: SessionId,
        /// Why, and what to drop.
        reason: String,
    },
    /// Reading the input or writing an output failed.
    #[error(transparent)]
    Table(#[from] TableError),
    /// The node home failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}

/// Non-secret driver state kept next to the engine state.
#[derive(Serialize, Deserialize)]
struct DriverState {
    peer: String,
    phase: Phase,
    input: PathBuf,
    spec: SpecState,
    input_digest: String,
    input_stats: InputStatsState,
    timings: Vec<PhaseTiming>,
    provider_receipt: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Started,
    Accepted,
    Sent,
    Responded,
}

#[derive(Serialize, Deserialize)]
struct SpecState {
    columns: Vec<String>,
    trim: bool,
    casefold: bool,
    nfkc: bool,
    shard: Option<ShardState>,
}

#[derive(Serialize, Deserialize)]
struct ShardState {
    index: u32,
    count: u32,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct InputStatsState {
    rows: u64,
    empty_key_rows: u64,
    duplicate_rows: u64,
    other_shard_rows: u64,
    distinct_keys: u64,
}

impl From<&KeySpec> for SpecState {
    fn from(s: &KeySpec) -> Self {
        Self {
            columns: s.columns.clone(),
            trim: s.trim,
            casefold: s.casefold,
            nfkc: s.nfkc,
            shard: s.shard.as_ref().map(|h| ShardState {
                index: h.index,
                count: h.count,
                salt: h.salt.clone(),
            }),
        }
    }
}

impl From<&SpecState> for KeySpec {
    fn from(s: &SpecState) -> Self {
        Self {
            columns: s.columns.clone(),
            trim: s.trim,
            casefold: s.casefold,
            nfkc: s.nfkc,
            shard: s.shard.as_ref().map(|h| Shard {
                index: h.index,
                count: h.count,
                salt: h.salt.clone(),
            }),
        }
    }
}

impl From<InputStats> for InputStatsState {
    fn from(s: InputStats) -> Self {
        Self {
            rows: s.rows,
            empty_key_rows: s.empty_key_rows,
            duplicate_rows: s.duplicate_rows,
            other_shard_rows: s.other_shard_rows,
            distinct_keys: s.distinct_keys,
        }
    }
}

/// Options of `start`.
pub struct StartOptions {
    /// The pinned peer to run with.
    pub peer: sotto_node::NodeName,
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
}

/// What a provider accepts with, in `accept`.
pub struct AcceptOptions {
    /// The provider's CSV.
    pub input: PathBuf,
    /// Key columns and normalization (sent to the requester and compared).
    pub spec: KeySpec,
    /// Signing modes accepted.
    pub modes: Vec<SigningMode>,
    /// Agree to aligned output if the requester asks for it.
    pub allow_align: bool,
    /// Under alignment, what to do with keys on several rows.
    pub duplicates: Duplicates,
}

/// Where a finishing party writes its results.
#[derive(Default)]
pub struct FinishOptions {
    /// Output CSV (rows, keys, or flagged rows).
    pub output: Option<(PathBuf, OutputKind)>,
    /// JSON report.
    pub report: Option<PathBuf>,
    /// Closing file for the provider (requester only; required under reveal `both`).
    pub close: Option<PathBuf>,
    /// Under alignment: replace the key columns of the output by this
    /// column of per-session pseudonyms.
    pub id_column: Option<String>,
}

/// What a step tells its caller.
#[derive(Debug)]
pub struct StepSummary {
    /// The session.
    pub sid: SessionId,
    /// One line for the user.
    pub message: String,
}

/// What a finishing party learned.
#[derive(Debug)]
pub struct FinishSummary {
    /// The session.
    pub sid: SessionId,
    /// Intersection size, if learned.
    pub intersection: Option<u64>,
    /// Matched rows written, if any.
    pub matched_rows: Option<u64>,
    /// The full report.
    pub report: Report,
}

fn state_path(home: &NodeHome, sid: &SessionId) -> PathBuf {
    home.sessions_dir().join(format!("{sid}.state"))
}

fn kept_w_path(home: &NodeHome, sid: &SessionId) -> PathBuf {
    home.sessions_dir().join(format!("{sid}.w"))
}

fn save_state(
    home: &NodeHome,
    session: &Session,
    driver: &DriverState,
) -> Result<(), OfflineError> {
    let engine = session.encode_state();
    let json = serde_json::to_vec(driver).map_err(|e| OfflineError::BadState {
        path: state_path(home, &session.params().sid),
        reason: e.to_string(),
    })?;
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(engine.len() + json.len() + 16));
    bytes.extend_from_slice(STATE_MAGIC);
    bytes.extend_from_slice(&(engine.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&engine);
    bytes.extend_from_slice(&json);
    write_atomic(
        &state_path(home, &session.params().sid),
        &bytes,
        Visibility::Private,
    )?;
    Ok(())
}

fn load_state(
    home: &NodeHome,
    file: &Path,
    sid: &SessionId,
) -> Result<(Session, DriverState), OfflineError> {
    let path = state_path(home, sid);
    if !path.exists() {
        return Err(OfflineError::UnknownSession {
            path: file.to_owned(),
            sid: *sid,
            state: path,
        });
    }
    let bytes = zeroize::Zeroizing::new(read(&path)?);
    let bad = |reason: String| OfflineError::BadState {
        path: path.clone(),
        reason,
    };
    if bytes.len() < 12 || &bytes[..8] != STATE_MAGIC {
        return Err(bad("not a sotto session state file".into()));
    }
    let len = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let engine = bytes
        .get(12..12 + len)
        .ok_or_else(|| bad("truncated".into()))?;
    let session = Session::decode_state(engine).map_err(|e| bad(e.to_string()))?;
    let driver: DriverState =
        serde_json::from_slice(&bytes[12 + len..]).map_err(|e| bad(e.to_string()))?;
    Ok((session, driver))
}

fn remove_state(home: &NodeHome, sid: &SessionId) {
    let _ = std::fs::remove_file(state_path(home, sid));
    let _ = std::fs::remove_file(kept_w_path(home, sid));
}

fn read_file(path: &Path, expected: FileKind) -> Result<PsiFile, OfflineError> {
    let bytes = read(path)?;
    let file = PsiFile::decode(&bytes, MAX_BATCH_SIZE).map_err(|source| OfflineError::BadFile {
        path: path.to_owned(),
        source,
    })?;
    if file.kind != expected {
        return Err(OfflineError::WrongKind {
            path: path.to_owned(),
            expected: expected.describe(),
            found: file.kind.describe(),
        });
    }
    Ok(file)
}

fn stage_file(path: &Path, file: &PsiFile) -> Result<AtomicFile, OfflineError> {
    let mut staged = AtomicFile::create(path, Visibility::Public)?;
    std::io::Write::write_all(staged.writer(), &file.encode())
        .map_err(|e| NodeError::io(path, "write", e))?;
    Ok(staged)
}

/// Writes a step's output file, then the session state; if the state cannot
/// be saved, the output is removed again so the step can simply be re-run.
fn commit_step(
    home: &NodeHome,
    session: &Session,
    driver: &DriverState,
    out: &Path,
    file: &PsiFile,
) -> Result<(), OfflineError> {
    stage_file(out, file)?.commit()?;
    save_state(home, session, driver).inspect_err(|_| {
        let _ = std::fs::remove_file(out);
    })
}

fn protocol(path: &Path) -> impl FnOnce(EngineError) -> OfflineError + '_ {
    move |source| OfflineError::Protocol {
        path: path.to_owned(),
        source,
    }
}

fn expect_phase(
    session: &Session,
    driver: &DriverState,
    role: Role,
    phase: Phase,
    step: &str,
) -> Result<(), OfflineError> {
    if session.role() != role || driver.phase != phase {
        return Err(OfflineError::WrongPhase {
            sid: session.params().sid,
            reason: format!(
                "`{step}` is a step of the {role} after {phase:?}, but this node is the {} at {:?}",
                session.role(),
                driver.phase
            ),
        });
    }
    Ok(())
}

fn peer_of(
    home: &NodeHome,
    session: &Session,
    driver: &DriverState,
    file: &Path,
    sender: &sotto_crypto::identity::IdentityPublic,
) -> Result<PeerKeys, OfflineError> {
    if sender != session.peer() {
        return Err(OfflineError::UnknownSender {
            path: file.to_owned(),
            reason: format!(
                "written by identity {sender}, not by this session's peer {:?}",
                driver.peer
            ),
        });
    }
    Ok(PeerKeys::from(&home.peer(&driver.peer.parse()?)?))
}

fn reload_input(driver: &DriverState) -> Result<KeyTable, OfflineError> {
    let table = read_keys(&driver.input, &KeySpec::from(&driver.spec))?;
    if hex::encode(table.digest) != driver.input_digest {
        return Err(TableError::Changed {
            path: driver.input.clone(),
        }
        .into());
    }
    Ok(table)
}

fn new_driver(
    peer: &Profile,
    input: &Path,
    spec: &KeySpec,
    table: &KeyTable,
    phase: Phase,
) -> DriverState {
    DriverState {
        peer: peer.name.to_string(),
        phase,
        input: std::fs::canonicalize(input).unwrap_or_else(|_| input.to_owned()),
        spec: spec.into(),
        input_digest: hex::encode(table.digest),
        input_stats: table.stats.into(),
        timings: Vec::new(),
        provider_receipt: None,
    }
}

/// Requester, step 1: reads the input, opens a session with a pinned peer,
/// writes the hello file to `out` (checked against `rules` first).
pub fn start<R: RngCore + CryptoRng>(
    home: &NodeHome,
    options: &StartOptions,
    out: &Path,
    rules: &OutputRules,
    rng: &mut R,
) -> Result<StepSummary, OfflineError> {
    rules.clone().with_input(&options.input).check(out)?;
    let peer = home.peer(&options.peer)?;
    let table = read_keys(&options.input, &options.spec)?;
    if options.align {
        check_duplicates(&table, options.duplicates)?;
    }
    let signer = Signer::for_home(home);
    let params = SessionParams {
        align: options.align,
        ..SessionParams::fresh(
            options.group,
            options.mode,
            options.reveal,
            options.batch_size,
            options.spec.params(),
            unix_now(),
            rng,
        )
    };
    let (session, hello) = Session::request(
        params,
        &signer,
        &PeerKeys::from(&peer),
        table.stats.distinct_keys,
        rng,
    )
    .map_err(protocol(out))?;
    let driver = new_driver(&peer, &options.input, &options.spec, &table, Phase::Started);
    let file = PsiFile {
        kind: FileKind::Hello,
        sid: params.sid,
        sender: signer.identity.public(),
        body: FileBody::Hello(hello),
    };
    commit_step(home, &session, &driver, out, &file)?;
    Ok(StepSummary {
        sid: params.sid,
        message: format!(
            "session {} opened with {}: {} distinct keys ({} rows); send {} to the peer",
            params.sid,
            peer.name,
            table.stats.distinct_keys,
            table.stats.rows,
            out.display()
        ),
    })
}

/// Provider, step 2: checks the hello against the pinned peers, the policy
/// and the sessions accepted before, reads the input, writes the accept file.
pub fn accept<R: RngCore + CryptoRng>(
    home: &NodeHome,
    hello_path: &Path,
    options: &AcceptOptions,
    out: &Path,
    rules: &OutputRules,
    rng: &mut R,
) -> Result<StepSummary, OfflineError> {
    rules
        .clone()
        .with_inputs([hello_path, options.input.as_path()])
        .check(out)?;
    let file = read_file(hello_path, FileKind::Hello)?;
    let FileBody::Hello(hello) = &file.body else {
        unreachable!("read_file checked the kind")
    };
    let peer = home.peer_by_identity(&hello.sender).map_err(|_| OfflineError::UnknownSender {
        path: hello_path.to_owned(),
        reason: format!(
            "the hello is signed by identity {}, which is not a pinned peer; pin its profile with `sotto peer add` if you trust it",
            hello.sender
        ),
    })?;
    if file.sid != hello.sid || file.sender != hello.sender {
        return Err(OfflineError::UnknownSender {
            path: hello_path.to_owned(),
            reason: "the file header disagrees with the signed hello inside it".into(),
        });
    }
    let table = read_keys(&options.input, &options.spec)?;
    let signer = Signer::for_home(home);
    let policy = AcceptPolicy {
        modes: options.modes.clone(),
        keys: options.spec.params(),
        allow_align: options.allow_align,
    };
    let now = unix_now();
    let (session, reply) = Session::accept(
        hello,
        &signer,
        &PeerKeys::from(&peer),
        table.stats.distinct_keys,
        &policy,
        now,
        rng,
    )
    .map_err(protocol(hello_path))?;
    if hello.align {
        check_duplicates(&table, options.duplicates)?;
    }
    let accepted = AcceptedSessions::open(home)?;
    accepted
        .record(&hello.sid, hello.created, now)
        .map_err(|e| match e {
            RecordError::Replayed(source) => OfflineError::Replayed {
                path: hello_path.to_owned(),
                source,
            },
            RecordError::Node(e) => e.into(),
        })?;
    let driver = new_driver(
        &peer,
        &options.input,
        &options.spec,
        &table,
        Phase::Accepted,
    );
    let reply_file = PsiFile {
        kind: FileKind::Accept,
        sid: hello.sid,
        sender: signer.identity.public(),
        body: FileBody::Hello(reply),
    };
    commit_step(home, &session, &driver, out, &reply_file)
        .inspect_err(|_| accepted.forget(&hello.sid))?;
    Ok(StepSummary {
        sid: hello.sid,
        message: format!(
            "accepted session {} from {} (mode {}, reveal {}, {} of their keys, {} of ours); send {} back",
            hello.sid,
            peer.name,
            hello.mode,
            hello.reveal,
            hello.input_size,
            table.stats.distinct_keys,
            out.display()
        ),
    })
}

/// Requester, step 3: checks the accept, agrees the salt, encrypts and signs
/// round 1, writes it.
pub fn send(
    home: &NodeHome,
    accept_path: &Path,
    out: &Path,
    rules: &OutputRules,
    progress: &dyn ProgressSink,
) -> Result<StepSummary, OfflineError> {
    let file = read_file(accept_path, FileKind::Accept)?;
    let (mut session, mut driver) = load_state(home, accept_path, &file.sid)?;
    expect_phase(&session, &driver, Role::Requester, Phase::Started, "send")?;
    rules
        .clone()
        .with_inputs([accept_path, driver.input.as_path()])
        .check(out)?;
    let peer = peer_of(home, &session, &driver, accept_path, &file.sender)?;
    let FileBody::Hello(reply) = &file.body else {
        unreachable!("read_file checked the kind")
    };
    session
        .on_accept(reply, &peer)
        .map_err(protocol(accept_path))?;
    let table = reload_input(&driver)?;
    let signer = Signer::for_home(home);
    let n = table.keys.len() as u64;
    let bar = progress.phase("round 1: encrypt and sign", n);
    let u = timed(
        &mut driver.timings,
        "round 1: encrypt and sign u",
        n,
        || {
            steps::send_own(
                &mut session,
                StreamKind::RequesterEncrypted,
                &table.keys,
                &signer,
                &*bar,
            )
            .map_err(protocol(out))
        },
    )?;
    driver.phase = Phase::Sent;
    let round1 = PsiFile {
        kind: FileKind::Round1,
        sid: session.params().sid,
        sender: signer.identity.public(),
        body: FileBody::Round1 { u },
    };
    commit_step(home, &session, &driver, out, &round1)?;
    Ok(StepSummary {
        sid: session.params().sid,
        message: format!("round 1: {n} encrypted keys written to {}", out.display()),
    })
}

/// Provider, step 4: checks every round-1 batch, then re-encrypts it (w),
/// encrypts its own keys (v), signs its receipt, writes round 2.
pub fn respond(
    home: &NodeHome,
    round1_path: &Path,
    out: &Path,
    rules: &OutputRules,
    progress: &dyn ProgressSink,
) -> Result<StepSummary, OfflineError> {
    let file = read_file(round1_path, FileKind::Round1)?;
    let (mut session, mut driver) = load_state(home, round1_path, &file.sid)?;
    expect_phase(
        &session,
        &driver,
        Role::Provider,
        Phase::Accepted,
        "respond",
    )?;
    rules
        .clone()
        .with_inputs([round1_path, driver.input.as_path()])
        .check(out)?;
    let peer = peer_of(home, &session, &driver, round1_path, &file.sender)?;
    let FileBody::Round1 { u } = &file.body else {
        unreachable!("read_file checked the kind")
    };
    let n = session.requester_size();
    let signer = Signer::for_home(home);
    timed(&mut driver.timings, "round 1: verify u", n, || {
        let bar = progress.phase("round 1: verify", n);
        steps::check_stream(
            &mut session,
            StreamKind::RequesterEncrypted,
            n,
            u,
            &peer,
            &*bar,
        )
        .map_err(protocol(round1_path))
    })?;
    let table = reload_input(&driver)?;
    let w = timed(
        &mut driver.timings,
        "round 2: re-encrypt and sign w",
        n,
        || {
            let bar = progress.phase("round 2: re-encrypt and sign w", n);
            steps::reencrypt_stream(&mut session, StreamKind::Reencrypted, u, &signer, &*bar)
                .map_err(protocol(round1_path))
        },
    )?;
    let m = table.keys.len() as u64;
    let v = timed(
        &mut driver.timings,
        "round 2: encrypt and sign v",
        m,
        || {
            let bar = progress.phase("round 2: encrypt and sign v", m);
            steps::send_own(
                &mut session,
                StreamKind::ProviderEncrypted,
                &table.keys,
                &signer,
                &*bar,
            )
            .map_err(protocol(out))
        },
    )?;
    let receipt = session.receipt(&signer, None).map_err(protocol(out))?;
    driver.provider_receipt = Some(receipt.to_hex());
    if session.params().reveal == Reveal::Both {
        let kept: Vec<u8> = steps::truncated_elements(&w).concat();
        write_atomic(
            &kept_w_path(home, &session.params().sid),
            &kept,
            Visibility::Private,
        )?;
    }
    driver.phase = Phase::Responded;
    let round2 = PsiFile {
        kind: FileKind::Round2,
        sid: session.params().sid,
        sender: signer.identity.public(),
        body: FileBody::Round2 { receipt, w, v },
    };
    commit_step(home, &session, &driver, out, &round2)?;
    Ok(StepSummary {
        sid: session.params().sid,
        message: format!(
            "round 1 verified ({n} elements); round 2 written to {}",
            out.display()
        ),
    })
}

/// Last step of either party: the requester takes round 2, the provider the
/// requester's closing file. Every output is checked against `rules` (and
/// against what this session can produce) before anything is verified, and
/// all of them are placed together at the end; then the session state is
/// removed.
pub fn finish(
    home: &NodeHome,
    path: &Path,
    options: &FinishOptions,
    rules: &OutputRules,
    progress: &dyn ProgressSink,
) -> Result<FinishSummary, OfflineError> {
    let bytes = read(path)?;
    let file = PsiFile::decode(&bytes, MAX_BATCH_SIZE).map_err(|source| OfflineError::BadFile {
        path: path.to_owned(),
        source,
    })?;
    match file.kind {
        FileKind::Round2 => finish_requester(home, path, file, options, rules, progress),
        FileKind::Close => finish_provider(home, path, file, options, rules, progress),
        other => Err(OfflineError::WrongKind {
            path: path.to_owned(),
            expected: "a round-2 file (requester) or a closing file (provider)",
            found: other.describe(),
        }),
    }
}

/// Refuses outputs this party cannot produce in this session, and output
/// paths that break `rules` (inputs: the received file and the CSV).
fn check_finish_outputs(
    session: &Session,
    driver: &DriverState,
    path: &Path,
    options: &FinishOptions,
    rules: &OutputRules,
) -> Result<(), OfflineError> {
    let sid = session.params().sid;
    let reveal = session.params().reveal;
    let unavailable = |reason: &str| {
        Err(OfflineError::OutputUnavailable {
            sid,
            reason: reason.to_owned(),
        })
    };
    match session.role() {
        Role::Requester if reveal == Reveal::Size && options.output.is_some() => {
            return unavailable("reveal is `size`: you learn only how many keys are shared, so there are no rows for --output (drop it)");
        }
        Role::Requester if reveal == Reveal::Both && options.close.is_none() => {
            return Err(OfflineError::WrongPhase {
                sid,
                reason: "reveal is `both`: give --close FILE so the provider can finish".into(),
            });
        }
        Role::Provider if reveal != Reveal::Both && options.output.is_some() => {
            return unavailable(&format!("reveal is `{reveal}`: the provider does not learn the shared keys, so there are no rows for --output (drop it)"));
        }
        Role::Provider if options.close.is_some() => {
            return unavailable(
                "--close is the requester's output; the provider's finish ends the session",
            );
        }
        _ => {}
    }
    let align = session.params().align;
    if align && matches!(options.output, Some((_, OutputKind::Flag(_)))) {
        return unavailable("the session is aligned: it writes one row per shared customer, so --flag-column (every row, flagged) cannot be used");
    }
    if !align && options.id_column.is_some() {
        return unavailable("--output-id-column needs an aligned session (start it with --align)");
    }
    let outputs: Vec<&Path> = [
        options.output.as_ref().map(|(p, _)| p.as_path()),
        options.report.as_deref(),
        options.close.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    rules
        .clone()
        .with_inputs([path, driver.input.as_path()])
        .check_all(&outputs)?;
    Ok(())
}

fn finish_requester(
    home: &NodeHome,
    path: &Path,
    file: PsiFile,
    options: &FinishOptions,
    rules: &OutputRules,
    progress: &dyn ProgressSink,
) -> Result<FinishSummary, OfflineError> {
    let (mut session, mut driver) = load_state(home, path, &file.sid)?;
    expect_phase(&session, &driver, Role::Requester, Phase::Sent, "finish")?;
    check_finish_outputs(&session, &driver, path, options, rules)?;
    let peer = peer_of(home, &session, &driver, path, &file.sender)?;
    let FileBody::Round2 { receipt, w, v } = file.body else {
        unreachable!("dispatched on the kind")
    };
    let (n, m) = (session.requester_size(), session.provider_size());
    timed(
        &mut driver.timings,
        "round 2: verify w and v",
        n + m,
        || {
            let bar = progress.phase("round 2: verify", n + m);
            steps::check_stream(&mut session, StreamKind::Reencrypted, n, &w, &peer, &*bar)
                .map_err(protocol(path))?;
            steps::check_stream(
                &mut session,
                StreamKind::ProviderEncrypted,
                m,
                &v,
                &peer,
                &*bar,
            )
            .map_err(protocol(path))
        },
    )?;
    let signer = Signer::for_home(home);
    let result = timed(
        &mut driver.timings,
        "finish: compute z and match",
        m,
        || {
            let bar = progress.phase("finish: compute z and match", m);
            steps::requester_finish(&mut session, &w, &v, &signer, &*bar).map_err(protocol(path))
        },
    )?;
    let finished = if session.params().reveal == Reveal::Size {
        None
    } else {
        Some(stage_finish(
            &mut session,
            &driver,
            &result.matched,
            options,
            path,
        )?)
    };
    session
        .check_receipt(&receipt, &peer, Some(result.size))
        .map_err(protocol(path))?;
    let own = session
        .receipt(&signer, Some(result.size))
        .map_err(protocol(path))?;
    let mut staged = Vec::new();
    let (matched_rows, alignment) = match finished {
        Some(rows) => {
            staged.extend(rows.file);
            (Some(rows.rows), rows.alignment)
        }
        None => (None, None),
    };
    if let Some(close) = &options.close {
        staged.push(stage_file(
            close,
            &PsiFile {
                kind: FileKind::Close,
                sid: session.params().sid,
                sender: signer.identity.public(),
                body: FileBody::Close {
                    receipt: own.clone(),
                    z: result.reveal_back,
                },
            },
        )?);
    }
    let mut report = build_report(
        &session,
        &driver,
        Some(result.size),
        matched_rows,
        options,
        (Some(&own), Some(&receipt)),
    );
    report.alignment = alignment;
    finalize(
        home,
        &session,
        report,
        (Some(result.size), matched_rows),
        options,
        staged,
    )
}

fn finish_provider(
    home: &NodeHome,
    path: &Path,
    file: PsiFile,
    options: &FinishOptions,
    rules: &OutputRules,
    progress: &dyn ProgressSink,
) -> Result<FinishSummary, OfflineError> {
    let (mut session, mut driver) = load_state(home, path, &file.sid)?;
    expect_phase(
        &session,
        &driver,
        Role::Provider,
        Phase::Responded,
        "finish",
    )?;
    check_finish_outputs(&session, &driver, path, options, rules)?;
    let peer = peer_of(home, &session, &driver, path, &file.sender)?;
    let FileBody::Close { receipt, z } = file.body else {
        unreachable!("dispatched on the kind")
    };
    let mut staged = Vec::new();
    let mut alignment = None;
    let (size, matched_rows) = if session.params().reveal == Reveal::Both {
        let m = session.provider_size();
        let kept_path = kept_w_path(home, &session.params().sid);
        let kept_bytes = read(&kept_path)?;
        let kept: Vec<[u8; TRUNCATED_LEN]> = kept_bytes
            .chunks_exact(TRUNCATED_LEN)
            .map(|c| {
                let mut t = [0u8; TRUNCATED_LEN];
                t.copy_from_slice(c);
                t
            })
            .collect();
        let matched = timed(
            &mut driver.timings,
            "round 3: verify z and match",
            m,
            || {
                let bar = progress.phase("round 3: verify z", m);
                steps::check_stream(&mut session, StreamKind::RevealBack, m, &z, &peer, &*bar)
                    .map_err(protocol(path))?;
                steps::provider_finish(&session, &kept, &z).map_err(protocol(path))
            },
        )?;
        let size = matched.len() as u64;
        let rows = stage_finish(&mut session, &driver, &matched, options, path)?;
        session
            .check_receipt(&receipt, &peer, Some(size))
            .map_err(protocol(path))?;
        staged.extend(rows.file);
        alignment = rows.alignment;
        (Some(size), Some(rows.rows))
    } else {
        if !z.is_empty() {
            return Err(protocol(path)(EngineError::Phase(
                "round 3 elements sent although reveal is not `both`".into(),
            )));
        }
        session
            .check_receipt(&receipt, &peer, None)
            .map_err(protocol(path))?;
        (None, None)
    };
    let signer = Signer::for_home(home);
    let own = session.receipt(&signer, size).map_err(protocol(path))?;
    let mut report = build_report(
        &session,
        &driver,
        size,
        matched_rows,
        options,
        (Some(&receipt), Some(&own)),
    );
    report.alignment = alignment;
    finalize(
        home,
        &session,
        report,
        (size, matched_rows),
        options,
        staged,
    )
}

/// Re-reads the input and stages this party's rows (aligned in an aligned
/// session, whose digest is then recorded for the receipts).
fn stage_finish(
    session: &mut Session,
    driver: &DriverState,
    matched: &[u32],
    options: &FinishOptions,
    path: &Path,
) -> Result<FinishRows, OfflineError> {
    let table = reload_input(driver)?;
    let key = match session.params().align {
        true => Some(session.pseudonym_key().map_err(protocol(path))?),
        false => None,
    };
    let sid = session.params().sid;
    let rows = stage_rows(
        &table,
        &KeySpec::from(&driver.spec),
        matched,
        options.output.as_ref(),
        key.as_ref()
            .map(|k| (&sid, k, options.id_column.as_deref())),
    )?;
    if let Some(digest) = rows.digest {
        session.set_alignment(digest);
    }
    Ok(rows)
}

fn build_report(
    session: &Session,
    driver: &DriverState,
    size: Option<u64>,
    matched_rows: Option<u64>,
    options: &FinishOptions,
    receipts: (Option<&Receipt>, Option<&Receipt>),
) -> Report {
    let stats = &driver.input_stats;
    let context = ReportContext {
        peer: &driver.peer,
        input: &driver.input,
        columns: &driver.spec.columns,
        stats: InputStats {
            rows: stats.rows,
            empty_key_rows: stats.empty_key_rows,
            duplicate_rows: stats.duplicate_rows,
            other_shard_rows: stats.other_shard_rows,
            distinct_keys: stats.distinct_keys,
        },
        timings: driver.timings.clone(),
        failed_batches: 0,
        duplicate_batches: 0,
    };
    Report::new(
        session,
        context,
        size,
        matched_rows,
        options.output.as_ref().map(|(p, _)| p.as_path()),
        receipts,
    )
}

/// Stages the report, places every output of the step together, and only
/// then removes the session state.
fn finalize(
    home: &NodeHome,
    session: &Session,
    report: Report,
    (size, matched_rows): (Option<u64>, Option<u64>),
    options: &FinishOptions,
    mut staged: Vec<AtomicFile>,
) -> Result<FinishSummary, OfflineError> {
    if let Some(path) = &options.report {
        staged.push(report.stage(path)?);
    }
    commit_all(staged)?;
    remove_state(home, &session.params().sid);
    Ok(FinishSummary {
        sid: session.params().sid,
        intersection: size,
        matched_rows,
        report,
    })
}
