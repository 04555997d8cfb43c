//! `sotto`: one binary for every role. This file owns the command line,
//! logging and exit codes; the work is done by the library crates.

mod cmd;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Privacy computing between institutions: verifiable PSI, secure aggregation,
/// trusted-execution attestation with a registration center, and
/// hierarchical key management (secrets escrowed to a root KMS, recovered
/// after a loss).
///
/// Every party runs this one binary. A node keeps its keys and state in a home
/// directory (--home, or $SOTTO_HOME).
#[derive(Parser)]
#[command(
    name = "sotto",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    /// Log format on standard error.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    log_format: LogFormat,
    /// Show no progress bars and only warnings and errors in the log.
    #[arg(long, short, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Create a node home: identity key, BLS signing keys, empty peer list.
    Init(cmd::node::InitArgs),
    /// Show or export this node's public profile.
    #[command(subcommand)]
    Identity(cmd::node::IdentityCommand),
    /// The consortium certificate authority: create it, issue node certificates.
    #[command(subcommand)]
    Ca(cmd::ca::CaCommand),
    /// Pin and list the peers this node trusts.
    #[command(subcommand)]
    Peer(cmd::node::PeerCommand),
    /// Private set intersection with signed elements.
    #[command(subcommand)]
    Psi(Box<cmd::psi::PsiCommand>),
    /// Secure aggregation: per-customer totals across institutions.
    #[command(subcommand)]
    Agg(Box<cmd::agg::AggCommand>),
    /// Trusted execution: measure, make software evidence, verify evidence.
    #[command(subcommand)]
    Tee(cmd::tee::TeeCommand),
    /// The TEE registration center: admits identical code, syncs group keys.
    #[command(subcommand)]
    Registry(cmd::registry::RegistryCommand),
    /// This node with the registration center: register, members, group key.
    #[command(subcommand)]
    Node(cmd::registry::NodeCommand),
    /// The root key management service: key pairs, recovery, sealed
    /// disaster-recovery bundle, audit log.
    #[command(subcommand)]
    Kms(Box<cmd::kms::KmsCommand>),
    /// The participant agent: escrow secrets to the KMS, recover them.
    #[command(subcommand)]
    Secrets(Box<cmd::secrets::SecretsCommand>),
    /// The privacy ledger: genesis, orderer, endorser, compute and business
    /// node processes, and the client.
    #[command(subcommand)]
    Ledger(Box<cmd::ledger::LedgerCommand>),
    /// Secret-shared data sharing between providers through the ledger:
    /// publish shares of a table, fuse the shares addressed to this
    /// provider, show what is posted, serve partial results to gateways.
    #[command(subcommand)]
    Share(Box<cmd::share::ShareCommand>),
    /// The consortium's model registry on the ledger: register a model's
    /// digest (linear, logistic or ONNX), check a model file against it.
    #[command(subcommand)]
    Model(Box<cmd::model::ModelCommand>),
    /// The inference gateway for outside users: HTTPS + JSON scoring on
    /// the providers' shares, API tokens, rate limits, queries recorded on
    /// the ledger.
    #[command(subcommand)]
    Gateway(Box<cmd::gateway::GatewayCommand>),
    /// An outside user of the gateway: score customer ids with a model.
    Infer(cmd::infer::InferArgs),
    /// An untrusted relay that forwards sessions between institutions.
    #[command(subcommand)]
    Relay(cmd::relay::RelayCommand),
    /// Run a complete demonstration on generated data and check the result.
    #[command(subcommand)]
    Demo(cmd::demo::DemoCommand),
    /// Measure a capability end to end.
    #[command(subcommand)]
    Bench(cmd::bench::BenchCommand),
}

fn init_logging(format: LogFormat, quiet: bool) {
    let default = if quiet { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SOTTO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Human => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format, cli.quiet);
    let progress = std::sync::Arc::new(progress::Bars::new(cli.quiet));
    let result = match cli.command {
        Command::Init(args) => cmd::node::init(args),
        Command::Identity(c) => cmd::node::identity(c),
        Command::Peer(c) => cmd::node::peer(c),
        Command::Ca(c) => cmd::ca::run(c),
        Command::Psi(c) => cmd::psi::run(*c, progress),
        Command::Agg(c) => cmd::agg::run(*c),
        Command::Kms(c) => cmd::kms::run(*c),
        Command::Secrets(c) => cmd::secrets::run(*c),
        Command::Ledger(c) => cmd::ledger::run(*c),
        Command::Share(c) => cmd::share::run(*c),
        Command::Model(c) => cmd::model::run(*c),
        Command::Gateway(c) => cmd::gateway::run(*c),
        Command::Infer(a) => cmd::infer::run(&a),
        Command::Relay(c) => cmd::relay::run(c),
        Command::Tee(c) => cmd::tee::run(c),
        Command::Registry(c) => cmd::registry::run_registry(c),
        Command::Node(c) => cmd::registry::run_node(c),
        Command::Demo(c) => cmd::demo::run(c, cli.quiet),
        Command::Bench(c) => cmd::bench::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", describe(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the
/// message already shows (most errors name their cause in their message).
fn describe(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::other("disk full");
        let err = anyhow::Error::new(io).context("out.csv: write: disk full");
        assert_eq!(super::describe(&err), "out.csv: write: disk full");
        let err = anyhow::Error::new(std::io::Error::other("denied")).context("opening x");
        assert_eq!(super::describe(&err), "opening x: denied");
    }
}
