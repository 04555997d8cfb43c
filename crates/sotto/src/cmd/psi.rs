//! `sotto psi ...`: the verifiable PSI commands.

use std::path::PathBuf;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rand::rngs::OsRng;
use sotto_crypto::group::GroupId;
use sotto_node::NodeName;
use sotto_psi::aligned::{self, Duplicates};
use sotto_psi::engine::{AcceptPolicy, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE};
use sotto_psi::offline::{self, AcceptOptions, FinishOptions, StartOptions};
use sotto_psi::online::{self, Limits, ProviderConfig, RequesterConfig};
use sotto_psi::steps::ProgressSink;
use sotto_psi::table::{read_keys, KeySpec, OutputKind, Shard};
use sotto_psi::wire::{Reveal, SigningMode};

use super::node::{ForceArg, HomeArg};

/// `sotto psi ...`
#[derive(Subcommand)]
pub enum PsiCommand {
    /// Run a session by exchanging files (any channel: sftp, e-mail, a bucket).
    ///
    /// Steps: requester `start` → provider `accept` → requester `send` →
    /// provider `respond` → requester `finish` (→ provider `finish`). Each step
    /// checks the previous file completely before computing anything.
    #[command(subcommand)]
    Offline(OfflineCommand),
    /// Provider: answer sessions over gRPC with mutual TLS until Ctrl-C.
    ///
    /// Prints `listening on ADDRESS` once ready. Every session is checked
    /// against the client's certificate, the pinned peers and --allow.
    Serve(ServeArgs),
    /// Requester: run one session with a provider over gRPC with mutual TLS.
    Run(RunArgs),
    /// Check, from the two parties' JSON reports of an aligned session
    /// (--align), that their outputs line up row for row: one session, each
    /// party's own receipt signed by the identity it names and signing the
    /// digest its report states, equal digests and row counts. Neither
    /// output file is needed.
    VerifyAlignment(VerifyAlignmentArgs),
}

/// Arguments of `psi verify-alignment`.
#[derive(Args)]
pub struct VerifyAlignmentArgs {
    /// Your report (`--report` of `finish` or `run`, or the provider's
    /// SID.report.json).
    #[arg(long, value_name = "JSON")]
    report: PathBuf,
    /// The other party's report of the same session.
    #[arg(long, value_name = "JSON")]
    peer_report: PathBuf,
}

/// Limits of an online session.
#[derive(Args, Clone)]
pub struct LimitArgs {
    /// Seconds to wait for a correct retransmission after refusing a batch.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    verify_timeout: u64,
    /// Failures of one batch tolerated before the session aborts.
    #[arg(long, default_value_t = 3)]
    max_retries: u32,
    /// Seconds to wait for any message from the peer.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86400))]
    idle_timeout: u64,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits {
            idle_timeout: Duration::from_secs(self.idle_timeout),
            verify_timeout: Duration::from_secs(self.verify_timeout),
            max_retries: self.max_retries,
        }
    }
}

/// Arguments of `psi serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7443")]
    listen: String,
    #[command(flatten)]
    keys: KeyArgs,
    /// Signing modes you accept (comma-separated). `none` gives no integrity.
    #[arg(long, value_delimiter = ',', default_values_t = [SigningMode::Element, SigningMode::Digest])]
    allow_mode: Vec<SigningMode>,
    /// Pinned peers allowed to start sessions (comma-separated; default: every pinned peer).
    #[arg(long, value_delimiter = ',')]
    allow: Option<Vec<NodeName>>,
    /// Under reveal `both`, write each session's matched rows (mode 0600) and
    /// report here, as SID.csv and SID.report.json. The directory must exist
    /// and lie outside any node home.
    #[arg(long, value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Relays (certified node names, comma-separated) whose connections you
    /// admit; the requester behind them must still sign as a pinned peer.
    #[arg(long, value_delimiter = ',')]
    relay: Vec<NodeName>,
    #[command(flatten)]
    align: ProviderAlignArgs,
    /// Under alignment, replace the key columns of the rows written to
    /// --output-dir by this column of per-session pseudonyms.
    #[arg(long, value_name = "NAME", requires = "output_dir")]
    output_id_column: Option<String>,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Arguments of `psi run`.
#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The pinned provider.
    #[arg(long)]
    peer: NodeName,
    /// The provider's address, HOST:PORT (or the relay's, with --via).
    #[arg(long)]
    connect: String,
    /// Go through this relay (its certified node name) at --connect.
    #[arg(long, value_name = "RELAY")]
    via: Option<NodeName>,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    session: SessionArgs,
    #[command(flatten)]
    outputs: OutputArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

/// Where a requester writes its results.
#[derive(Args)]
pub struct OutputArgs {
    /// Write your matched rows (original columns, input order) to this CSV.
    #[arg(long, value_name = "CSV")]
    output: Option<PathBuf>,
    /// With --output: write each matched key once instead of the rows.
    #[arg(long, requires = "output", conflicts_with = "flag_column")]
    keys_only: bool,
    /// With --output: write every row plus this column, true when the key matched.
    #[arg(long, value_name = "NAME", requires = "output")]
    flag_column: Option<String>,
    /// Aligned sessions only: replace the key column(s) of the output by
    /// this column of per-session pseudonyms (the same on both sides for
    /// the same customer, meaningless outside the session).
    #[arg(long, value_name = "NAME")]
    output_id_column: Option<String>,
    /// Write a JSON report.
    #[arg(long, value_name = "JSON")]
    report: Option<PathBuf>,
    #[command(flatten)]
    force: ForceArg,
}

impl OutputArgs {
    fn output(&self) -> Result<Option<(PathBuf, OutputKind)>> {
        let kind = match (&self.flag_column, self.keys_only) {
            (Some(name), _) if name.is_empty() => bail!("--flag-column needs a non-empty name"),
            (Some(name), _) => OutputKind::Flag(name.clone()),
            (None, true) => OutputKind::KeysOnly,
            (None, false) => OutputKind::Rows,
        };
        Ok(self.output.clone().map(|p| (p, kind)))
    }
}

/// The steps of an offline session.
#[derive(Subcommand)]
pub enum OfflineCommand {
    /// Requester: open a session with a pinned peer and write the hello file.
    Start(StartArgs),
    /// Provider: check a hello file, read your input, write the accept file.
    ///
    /// A hello is accepted once: its session id is remembered for 8 days
    /// (a hello older than 7 days is refused by its date), so a replayed or
    /// repeated hello is refused. Its key parameters (columns, normalization,
    /// shard) must equal yours.
    Accept(AcceptArgs),
    /// Requester: check the accept file, encrypt and sign round 1.
    Send(StepArgs),
    /// Provider: verify round 1, then re-encrypt it and encrypt your own keys (round 2).
    Respond(StepArgs),
    /// Requester (with the round-2 file) or provider (with the closing file):
    /// verify, compute the intersection, write outputs and report.
    Finish(FinishArgs),
}

/// Which columns form the key and how they are normalized.
#[derive(Args, Clone)]
pub struct KeyArgs {
    /// Input CSV with a header row (UTF-8).
    #[arg(long, value_name = "CSV")]
    input: PathBuf,
    /// Key column(s) by header name; several names (comma-separated) form a composite key.
    #[arg(
        long = "id",
        value_name = "COL[,COL...]",
        value_delimiter = ',',
        required = true
    )]
    id: Vec<String>,
    /// Keep leading and trailing whitespace (trimmed by default).
    #[arg(long)]
    no_trim: bool,
    /// Fold case before matching (Unicode lowercase).
    #[arg(long)]
    casefold: bool,
    /// Apply Unicode NFKC normalization before matching (full-width letters, ligatures...).
    #[arg(long)]
    nfkc: bool,
    /// Take part only in shard I of N (I from 0): both parties run N sessions,
    /// one per shard, with the same N and --shard-salt; together they give
    /// the whole intersection.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<(u32, u32)>,
    /// Salt of the shard partition (agree on it with the peer).
    #[arg(long, default_value = "sotto", requires = "shard")]
    shard_salt: String,
}

fn parse_shard(text: &str) -> Result<(u32, u32), String> {
    let (i, n) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?}: expected I/N, for example 0/4"))?;
    let (i, n): (u32, u32) = (
        i.parse()
            .map_err(|_| format!("{i:?} is not a shard number"))?,
        n.parse()
            .map_err(|_| format!("{n:?} is not a shard count"))?,
    );
    if n == 0 || i >= n {
        return Err(format!("shard {i}/{n}: need 0 <= I < N"));
    }
    Ok((i, n))
}

impl KeyArgs {
    fn spec(&self) -> KeySpec {
        KeySpec {
            columns: self.id.clone(),
            trim: !self.no_trim,
            casefold: self.casefold,
            nfkc: self.nfkc,
            shard: self.shard.map(|(index, count)| Shard {
                index,
                count,
                salt: self.shard_salt.clone(),
            }),
        }
    }
}

/// What a requester proposes for a session.
#[derive(Args)]
pub struct SessionArgs {
    /// PSI group: x25519 (RFC 9380 hashing to curve25519, eight X25519
    /// ladders at once on CPUs with AVX-512 IFMA) or ristretto255. Default:
    /// x25519 where this CPU runs the IFMA kernel, ristretto255 elsewhere.
    /// The provider accepts either.
    #[arg(long)]
    group: Option<GroupId>,
    /// Signing mode: element (every element BLS-signed), digest (batch headers
    /// only), none (no integrity; comparison only).
    #[arg(long, default_value_t = SigningMode::Element)]
    mode: SigningMode,
    /// Who learns the result: requester, both, or size (only the intersection size).
    #[arg(long, default_value_t = Reveal::Requester)]
    reveal: Reveal,
    /// Same as --reveal size: the requester learns only how many keys are shared.
    #[arg(long, conflicts_with = "reveal")]
    size_only: bool,
    /// Sample alignment for federated learning: both parties write their
    /// matched rows in one common order (ascending normalized key), one row
    /// per shared customer, and sign a digest of that order in their
    /// receipts. Implies --reveal both; the provider must agree
    /// (--allow-align).
    #[arg(long, conflicts_with_all = ["reveal", "size_only"])]
    align: bool,
    /// With --align: what to do with a key on several rows of your input:
    /// refuse (before anything is computed, naming the lines) or first
    /// (keep the first row of each key).
    #[arg(long, default_value_t = Duplicates::Refuse, requires = "align")]
    duplicates: Duplicates,
    /// Elements per batch (1 to 1048576).
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_BATCH_SIZE)))]
    batch_size: u32,
}

impl SessionArgs {
    fn group(&self) -> GroupId {
        self.group.unwrap_or_else(GroupId::fastest_here)
    }

    fn reveal(&self) -> Reveal {
        if self.size_only {
            Reveal::Size
        } else if self.align {
            Reveal::Both
        } else {
            self.reveal
        }
    }
}

/// A provider's answer to requests for aligned output.
#[derive(Args)]
pub struct ProviderAlignArgs {
    /// Agree to aligned output (--align) when a requester asks for it.
    #[arg(long)]
    allow_align: bool,
    /// Under alignment: what to do with a key on several rows of your input
    /// (refuse the session before anything is computed, or keep the first row).
    #[arg(long, default_value_t = Duplicates::Refuse)]
    duplicates: Duplicates,
}

/// Arguments of `psi offline start`.
#[derive(Args)]
pub struct StartArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The pinned peer (provider) to run with.
    #[arg(long)]
    peer: NodeName,
    #[command(flatten)]
    keys: KeyArgs,
    #[command(flatten)]
    session: SessionArgs,
    /// Where to write the hello file for the provider.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    force: ForceArg,
}

/// Arguments of `psi offline accept`.
#[derive(Args)]
pub struct AcceptArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The requester's hello file.
    #[arg(long = "in", value_name = "FILE")]
    input_file: PathBuf,
    #[command(flatten)]
    keys: KeyArgs,
    /// Signing modes you accept (comma-separated). `none` gives no integrity.
    #[arg(long, value_delimiter = ',', default_values_t = [SigningMode::Element, SigningMode::Digest])]
    allow_mode: Vec<SigningMode>,
    #[command(flatten)]
    align: ProviderAlignArgs,
    /// Where to write the accept file for the requester.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    force: ForceArg,
}

/// Arguments of `send` and `respond`.
#[derive(Args)]
pub struct StepArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The file received from the peer.
    #[arg(long = "in", value_name = "FILE")]
    input_file: PathBuf,
    /// Where to write the next file for the peer.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    #[command(flatten)]
    force: ForceArg,
}

/// Arguments of `psi offline finish`.
#[derive(Args)]
pub struct FinishArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The round-2 file (requester) or the closing file (provider).
    #[arg(long = "in", value_name = "FILE")]
    input_file: PathBuf,
    #[command(flatten)]
    outputs: OutputArgs,
    /// Requester: write the closing file for the provider (its receipt, and
    /// round 3 under reveal `both`, where it is required).
    #[arg(long, value_name = "FILE")]
    close: Option<PathBuf>,
}

/// Runs `sotto psi ...`.
pub fn run(command: PsiCommand, progress: std::sync::Arc<dyn ProgressSink + Send>) -> Result<()> {
    let step = match command {
        PsiCommand::Offline(step) => step,
        PsiCommand::Serve(a) => return serve(a),
        PsiCommand::Run(a) => return run_online(a, progress),
        PsiCommand::VerifyAlignment(a) => return verify_alignment(&a),
    };
    match step {
        OfflineCommand::Start(a) => {
            let home = a.home.open()?;
            let options = StartOptions {
                peer: a.peer,
                input: a.keys.input.clone(),
                spec: a.keys.spec(),
                group: a.session.group(),
                mode: a.session.mode,
                reveal: a.session.reveal(),
                batch_size: a.session.batch_size,
                align: a.session.align,
                duplicates: a.session.duplicates,
            };
            let summary = offline::start(&home, &options, &a.out, &a.force.rules(), &mut OsRng)?;
            println!("{}", summary.message);
        }
        OfflineCommand::Accept(a) => {
            let home = a.home.open()?;
            let options = AcceptOptions {
                input: a.keys.input.clone(),
                spec: a.keys.spec(),
                modes: a.allow_mode,
                allow_align: a.align.allow_align,
                duplicates: a.align.duplicates,
            };
            let summary = offline::accept(
                &home,
                &a.input_file,
                &options,
                &a.out,
                &a.force.rules(),
                &mut OsRng,
            )?;
            println!("{}", summary.message);
        }
        OfflineCommand::Send(a) => middle_step(offline::send, a, &*progress)?,
        OfflineCommand::Respond(a) => middle_step(offline::respond, a, &*progress)?,
        OfflineCommand::Finish(a) => finish(a, &*progress)?,
    }
    Ok(())
}

fn verify_alignment(a: &VerifyAlignmentArgs) -> Result<()> {
    let mine =
        std::fs::read(&a.report).with_context(|| format!("reading {}", a.report.display()))?;
    let theirs = std::fs::read(&a.peer_report)
        .with_context(|| format!("reading {}", a.peer_report.display()))?;
    let verdict = aligned::verify_alignment(
        (&a.report.display().to_string(), &mine),
        (&a.peer_report.display().to_string(), &theirs),
    )?;
    println!(
        "aligned: session {}, {} rows in each output, digest {}\nrequester identity {}\nprovider identity {}\n(compare the identities with the pinned profiles)",
        verdict.session, verdict.rows, verdict.digest, verdict.requester, verdict.provider
    );
    Ok(())
}

/// The signature shared by `send` and `respond`.
type MiddleStep = fn(
    &sotto_node::NodeHome,
    &std::path::Path,
    &std::path::Path,
    &sotto_node::OutputRules,
    &dyn ProgressSink,
) -> Result<offline::StepSummary, offline::OfflineError>;

/// Runs `send` or `respond`: one file in, the next file out.
fn middle_step(step: MiddleStep, a: StepArgs, progress: &dyn ProgressSink) -> Result<()> {
    let summary = step(
        &a.home.open()?,
        &a.input_file,
        &a.out,
        &a.force.rules(),
        progress,
    )?;
    println!("{}", summary.message);
    Ok(())
}

/// Builds the runtime the online commands run on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn serve(a: ServeArgs) -> Result<()> {
    let home = a.home.open()?;
    sotto_net::tls::TlsMaterial::load(&home)?.check_validity(time::OffsetDateTime::now_utc())?;
    let table = read_keys(&a.keys.input, &a.keys.spec())?;
    let config = ProviderConfig {
        home,
        table,
        spec: a.keys.spec(),
        policy: AcceptPolicy {
            modes: a.allow_mode,
            keys: a.keys.spec().params(),
            allow_align: a.align.allow_align,
        },
        duplicates: a.align.duplicates,
        id_column: a.output_id_column,
        allow: a.allow,
        relays: a.relay,
        output_dir: a.output_dir,
        limits: a.limits.limits(),
    };
    runtime()?.block_on(async move {
        let provider = online::prepare(config)?;
        let listener = bind_and_announce(&a.listen).await?;
        provider.serve(listener, ctrl_c()).await?;
        anyhow::Ok(())
    })
}

/// Binds `address` and prints `listening on ADDRESS` (the line scripts and
/// tests wait for).
pub async fn bind_and_announce(address: &str) -> Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    println!("listening on {}", listener.local_addr()?);
    std::io::Write::flush(&mut std::io::stdout())?;
    Ok(listener)
}

/// Completes on Ctrl-C, for a clean shutdown.
pub async fn ctrl_c() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}

fn run_online(a: RunArgs, progress: std::sync::Arc<dyn ProgressSink + Send>) -> Result<()> {
    let config = RequesterConfig {
        home: a.home.open()?,
        peer: a.peer,
        address: a.connect,
        via: a.via,
        input: a.keys.input.clone(),
        spec: a.keys.spec(),
        group: a.session.group(),
        mode: a.session.mode,
        reveal: a.session.reveal(),
        batch_size: a.session.batch_size,
        align: a.session.align,
        duplicates: a.session.duplicates,
        id_column: a.outputs.output_id_column.clone(),
        output: a.outputs.output()?,
        report: a.outputs.report.clone(),
        rules: a.outputs.force.rules(),
        limits: a.limits.limits(),
        progress,
    };
    let output = config.output.clone();
    let summary = runtime()?.block_on(online::run(config))?;
    print_summary(&summary, output.as_ref().map(|(p, _)| p.as_path()));
    Ok(())
}

fn print_summary(summary: &offline::FinishSummary, output: Option<&std::path::Path>) {
    match (summary.intersection, summary.matched_rows) {
        (Some(size), Some(rows)) => println!(
            "session {}: {size} shared keys, {rows} of your rows matched",
            summary.sid
        ),
        (Some(size), None) => println!("session {}: {size} shared keys (size only)", summary.sid),
        _ => println!(
            "session {}: finished; receipts exchanged (the requester learns the result)",
            summary.sid
        ),
    }
    if let Some(path) = output {
        println!("output written to {}", path.display());
    }
}

fn finish(a: FinishArgs, progress: &dyn ProgressSink) -> Result<()> {
    let options = FinishOptions {
        output: a.outputs.output()?,
        report: a.outputs.report.clone(),
        close: a.close,
        id_column: a.outputs.output_id_column.clone(),
    };
    let summary = offline::finish(
        &a.home.open()?,
        &a.input_file,
        &options,
        &a.outputs.force.rules(),
        progress,
    )?;
    print_summary(&summary, options.output.as_ref().map(|(p, _)| p.as_path()));
    Ok(())
}
