//! `sotto psi ...`: the verifiable PSI commands.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use rand::rngs::OsRng;
use sotto_node::NodeName;
use sotto_psi::engine::{AcceptPolicy, DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE};
use sotto_psi::offline::{self, FinishOptions, ProgressSink, StartOptions};
use sotto_psi::table::{KeySpec, OutputKind};
use sotto_psi::wire::{Reveal, SigningMode};

use super::node::HomeArg;

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
}

/// The steps of an offline session.
#[derive(Subcommand)]
pub enum OfflineCommand {
    /// Requester: open a session with a pinned peer and write the hello file.
    Start(StartArgs),
    /// Provider: check a hello file, read your input, write the accept file.
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
}

impl KeyArgs {
    fn spec(&self) -> KeySpec {
        KeySpec {
            columns: self.id.clone(),
            trim: !self.no_trim,
            casefold: self.casefold,
            nfkc: self.nfkc,
        }
    }
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
    /// Elements per batch (1 to 1048576).
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_BATCH_SIZE)))]
    batch_size: u32,
    /// Where to write the hello file for the provider.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
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
    /// Where to write the accept file for the requester.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
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
}

/// Arguments of `psi offline finish`.
#[derive(Args)]
pub struct FinishArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The round-2 file (requester) or the closing file (provider).
    #[arg(long = "in", value_name = "FILE")]
    input_file: PathBuf,
    /// Write your matched rows (original columns, input order) to this CSV.
    #[arg(long, value_name = "CSV")]
    output: Option<PathBuf>,
    /// With --output: write each matched key once instead of the rows.
    #[arg(long, requires = "output", conflicts_with = "flag_column")]
    keys_only: bool,
    /// With --output: write every row plus this column, true when the key matched (blacklist checks).
    #[arg(long, value_name = "NAME", requires = "output")]
    flag_column: Option<String>,
    /// Write a JSON report (sizes, duplicates, timings, signatures, transcript hash, receipts).
    #[arg(long, value_name = "JSON")]
    report: Option<PathBuf>,
    /// Requester: write the closing file for the provider (its receipt, and
    /// round 3 under reveal `both`, where it is required).
    #[arg(long, value_name = "FILE")]
    close: Option<PathBuf>,
}

/// Runs `sotto psi ...`.
pub fn run(command: PsiCommand, progress: &dyn ProgressSink) -> Result<()> {
    let PsiCommand::Offline(step) = command;
    match step {
        OfflineCommand::Start(a) => {
            let home = a.home.open()?;
            let options = StartOptions {
                peer: a.peer,
                input: a.keys.input.clone(),
                spec: a.keys.spec(),
                mode: a.mode,
                reveal: if a.size_only { Reveal::Size } else { a.reveal },
                batch_size: a.batch_size,
            };
            let summary = offline::start(&home, &options, &a.out, &mut OsRng)?;
            println!("{}", summary.message);
        }
        OfflineCommand::Accept(a) => {
            let home = a.home.open()?;
            let policy = AcceptPolicy {
                modes: a.allow_mode,
            };
            let summary = offline::accept(
                &home,
                &a.input_file,
                &a.keys.input,
                &a.keys.spec(),
                &policy,
                &a.out,
                &mut OsRng,
            )?;
            println!("{}", summary.message);
        }
        OfflineCommand::Send(a) => {
            let summary = offline::send(&a.home.open()?, &a.input_file, &a.out, progress)?;
            println!("{}", summary.message);
        }
        OfflineCommand::Respond(a) => {
            let summary = offline::respond(&a.home.open()?, &a.input_file, &a.out, progress)?;
            println!("{}", summary.message);
        }
        OfflineCommand::Finish(a) => finish(a, progress)?,
    }
    Ok(())
}

fn finish(a: FinishArgs, progress: &dyn ProgressSink) -> Result<()> {
    let kind = match (&a.flag_column, a.keys_only) {
        (Some(name), _) if name.is_empty() => bail!("--flag-column needs a non-empty name"),
        (Some(name), _) => OutputKind::Flag(name.clone()),
        (None, true) => OutputKind::KeysOnly,
        (None, false) => OutputKind::Rows,
    };
    let options = FinishOptions {
        output: a.output.map(|p| (p, kind)),
        report: a.report,
        close: a.close,
    };
    let summary = offline::finish(&a.home.open()?, &a.input_file, &options, progress)?;
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
    if let Some((path, _)) = &options.output {
        println!("output written to {}", path.display());
    }
    Ok(())
}
