//! `sotto bench psi`: both roles in one process on generated data, timed per
//! phase (or as two processes with --online). `sotto bench agg`: a
//! coordinator and n lender processes on loopback.

use sotto_crypto::group::GroupId;
use std::path::PathBuf;
use std::time::Instant;

use std::io::Write;

use anyhow::{ensure, Result};
use clap::{Args, Subcommand};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_node::files::{write_atomic, Visibility};
use sotto_psi::engine::{DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE};
use sotto_psi::keystore::KeyStore;
use sotto_psi::local::{run_local, LocalOptions, LocalOutcome, LocalParty};
use sotto_psi::wire::{Reveal, SigningMode};

use super::agg_drill;
use super::node::ForceArg;
use super::setup::{start_provider, two_certified_banks, Runner, ServerProcess};

/// `sotto bench ...`
#[derive(Subcommand)]
pub enum BenchCommand {
    /// PSI with both roles in this process: N x M generated keys.
    Psi(PsiBenchArgs),
    /// Secure aggregation end to end: a coordinator and n lender processes
    /// over mutual TLS on loopback, 2 columns, generated loan books.
    Agg(AggBenchArgs),
    /// TEE registration round trips: a center process and one node client
    /// (challenge, software evidence, register) over mutual TLS on loopback.
    Registry(RegistryBenchArgs),
    /// Hierarchical KMS: escrow puts/s to a local directory, recoveries/s
    /// over mutual TLS against a KMS process at a concurrency, restore time.
    Kms(super::bench_kms::KmsBenchArgs),
    /// Privacy ledger end to end: every role a process on loopback (the
    /// demo's topology); transactions per second, latency percentiles and
    /// CPU per transaction by role.
    Ledger(super::bench_ledger::LedgerBenchArgs),
    /// Secret-shared data sharing: what the providers' enclaves compute
    /// (tag, split, seal every fragment; open and fuse), in this process;
    /// or with --through-ledger, publish and fuse with every role a process.
    Share(super::bench_share::ShareBenchArgs),
}

/// Arguments of `sotto bench registry`.
#[derive(Args)]
pub struct RegistryBenchArgs {
    /// Registrations to time (over one connection).
    #[arg(long, default_value_t = 200)]
    runs: u32,
}

/// Arguments of `sotto bench agg`.
#[derive(Args)]
pub struct AggBenchArgs {
    /// Query ids (each lender has about 40% of them).
    #[arg(long, default_value_t = 1_000_000)]
    rows: usize,
    /// Lenders.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..=32))]
    clients: u16,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: u32,
    /// Work directory (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    #[command(flatten)]
    json: JsonOut,
}

/// Arguments of `sotto bench psi`.
#[derive(Args)]
pub struct PsiBenchArgs {
    /// Distinct keys of the requester.
    #[arg(long, default_value_t = 100_000)]
    n: u64,
    /// Distinct keys of the provider (default: N).
    #[arg(long)]
    m: Option<u64>,
    /// Fraction of the requester's keys the provider also has.
    #[arg(long, default_value_t = 0.5)]
    overlap: f64,
    /// PSI group (default: x25519 where this CPU runs the AVX-512 IFMA
    /// kernel, ristretto255 elsewhere). SOTTO_X25519_BACKEND=portable forces
    /// x25519's portable backend.
    #[arg(long)]
    group: Option<GroupId>,
    /// Signing mode.
    #[arg(long, default_value_t = SigningMode::Element)]
    mode: SigningMode,
    /// Reveal mode.
    #[arg(long, default_value_t = Reveal::Requester)]
    reveal: Reveal,
    /// Elements per batch.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_BATCH_SIZE)))]
    batch_size: u32,
    /// Repetitions; the run with the median total is shown.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: u32,
    #[command(flatten)]
    json: JsonOut,
    /// Run the two roles as two processes over mutual TLS on loopback
    /// (`psi serve` and `psi run`), and report each one's peak memory.
    #[arg(long)]
    online: bool,
    /// With --online: an aligned session (--align; both parties write their
    /// rows, as under --reveal both, which writes them too).
    #[arg(long, requires = "online")]
    align: bool,
}

/// Where a benchmark writes its figures as JSON.
#[derive(Args)]
pub struct JsonOut {
    /// Also write the figures as JSON.
    #[arg(long = "json", value_name = "FILE")]
    path: Option<PathBuf>,
    #[command(flatten)]
    force: ForceArg,
}

impl JsonOut {
    /// Refuses an unusable path before the benchmark runs.
    fn check(&self) -> Result<()> {
        if let Some(path) = &self.path {
            self.force.rules().check(path)?;
        }
        Ok(())
    }

    /// Writes the figures, if asked to.
    fn write(&self, value: &serde_json::Value) -> Result<()> {
        if let Some(path) = &self.path {
            let text = serde_json::to_string_pretty(value)? + "\n";
            write_atomic(path, text.as_bytes(), Visibility::Public)?;
        }
        Ok(())
    }
}

/// Runs `sotto bench ...`.
pub fn run(command: BenchCommand) -> Result<()> {
    let args = match command {
        BenchCommand::Psi(args) => args,
        BenchCommand::Agg(args) => {
            args.json.check()?;
            return agg(&args);
        }
        BenchCommand::Registry(args) => return registry(&args),
        BenchCommand::Kms(args) => return super::bench_kms::run(&args),
        BenchCommand::Ledger(args) => return super::bench_ledger::run(&args),
        BenchCommand::Share(args) => return super::bench_share::run(&args),
    };
    ensure!(
        (0.0..=1.0).contains(&args.overlap),
        "--overlap must be between 0 and 1"
    );
    args.json.check()?;
    let m = args.m.unwrap_or(args.n);
    let shared = ((args.n as f64 * args.overlap) as u64).min(m);
    if args.online {
        return online(&args, m, shared);
    }
    let a_keys = KeyStore::from_keys((0..args.n).map(|i| format!("user-{i:010}")));
    let b_keys = KeyStore::from_keys(
        (args.n - shared..args.n - shared + m).map(|i| format!("user-{i:010}")),
    );
    let mut rng = ChaCha20Rng::from_entropy();
    let a = LocalParty::generate(&"bench-a".parse()?, 2, &mut rng);
    let b = LocalParty::generate(&"bench-b".parse()?, 2, &mut rng);
    let group = args.group.unwrap_or_else(GroupId::fastest_here);
    let options = LocalOptions {
        group,
        mode: args.mode,
        reveal: args.reveal,
        batch_size: args.batch_size,
    };
    println!(
        "sotto bench psi: n={} m={m} shared={shared} group={group} ({}) mode={} reveal={} batch={} threads={}",
        args.n,
        group_backend(group),
        args.mode,
        args.reveal,
        args.batch_size,
        rayon_threads()
    );
    let mut runs: Vec<(f64, LocalOutcome)> = Vec::new();
    for run in 1..=args.runs {
        let start = Instant::now();
        let outcome = run_local(&a, &b, &a_keys, &b_keys, options, &mut rng)?;
        let total = start.elapsed().as_secs_f64();
        ensure!(
            outcome.size == shared,
            "wrong intersection size {} (expected {shared})",
            outcome.size
        );
        println!("run {run}: {total:.2} s");
        runs.push((total, outcome));
    }
    runs.sort_by(|x, y| x.0.total_cmp(&y.0));
    let totals: Vec<f64> = runs.iter().map(|r| r.0).collect();
    let (median, outcome) = &runs[runs.len() / 2];
    println!(
        "\n{:<36} {:>9} {:>14}",
        "phase (median run)", "seconds", "elements/s"
    );
    for p in &outcome.phases {
        println!(
            "{:<36} {:>9.2} {:>14.0}",
            p.phase,
            p.seconds,
            p.elements as f64 / p.seconds.max(1e-9)
        );
    }
    println!(
        "{:<36} {:>9.2} {:>14.0}\nsignatures: requester made {} verified {}; provider made {} verified {}",
        "total",
        median,
        (args.n + m) as f64 / median,
        outcome.requester_counts.made,
        outcome.requester_counts.verified,
        outcome.provider_counts.made,
        outcome.provider_counts.verified
    );
    args.json.write(&serde_json::json!({
        "n": args.n, "m": m, "shared": shared, "mode": args.mode.to_string(),
        "group": group.name(), "backend": group_backend(group),
        "reveal": args.reveal.to_string(), "batch_size": args.batch_size,
        "threads": rayon_threads(), "totals_seconds": totals, "median_seconds": median,
        "phases": outcome.phases,
    }))
}

/// The implementation behind a group on this CPU, for the report.
fn group_backend(group: GroupId) -> &'static str {
    match group {
        GroupId::Ristretto255 => "curve25519-dalek",
        GroupId::X25519 => sotto_crypto::x25519::backend().name(),
    }
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

fn write_keys(path: &std::path::Path, range: std::ops::Range<u64>) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "id")?;
    for i in range {
        writeln!(out, "user-{i:010}")?;
    }
    out.flush()?;
    Ok(())
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(
        || "unknown".to_owned(),
        |b| format!("{:.0} MiB", b as f64 / (1024.0 * 1024.0)),
    )
}

/// Both roles as separate processes over mutual TLS on loopback.
fn online(args: &PsiBenchArgs, m: u64, shared: u64) -> Result<()> {
    let group = args.group.unwrap_or_else(GroupId::fastest_here);
    let dir = tempfile::Builder::new().prefix("sotto-bench-").tempdir()?;
    let p = |name: &str| dir.path().join(name);
    let mut r = Runner::new(true)?;
    two_certified_banks(&mut r, dir.path())?;
    write_keys(&p("a.csv"), 0..args.n)?;
    write_keys(&p("b.csv"), args.n - shared..args.n - shared + m)?;
    let writes_rows = args.align || args.reveal == Reveal::Both;
    let results = p("provider-results");
    std::fs::create_dir(&results)?;
    let (provider, address) = start_provider(
        &r.exe,
        &[
            "--id",
            "id",
            "--allow-mode",
            "element,digest,none",
            "--allow-align",
        ],
        &p("bank-b"),
        &p("b.csv"),
        writes_rows.then_some(results.as_path()),
    )?;
    println!(
        "sotto bench psi --online: n={} m={m} shared={shared} group={group} ({}) mode={} reveal={}{} batch={}, two processes over mutual TLS on loopback",
        args.n,
        group_backend(group),
        args.mode,
        if args.align { "both" } else { args.reveal.name() },
        if args.align { " (aligned)" } else { "" },
        args.batch_size
    );
    let group_name = group.name();
    let mut totals = Vec::new();
    let mut requester_rss = Vec::new();
    let (home_a, input_a) = (p("bank-a"), p("a.csv"));
    for run in 1..=args.runs {
        let report = p(&format!("report-{run}.json"));
        let (mode, reveal, batch) = (
            args.mode.to_string(),
            args.reveal.to_string(),
            args.batch_size.to_string(),
        );
        let output = p(&format!("rows-{run}.csv"));
        let mut args_run: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"psi",
            &"run",
            &"--home",
            &home_a,
            &"--peer",
            &"bank-b",
            &"--connect",
            &address,
            &"--input",
            &input_a,
            &"--id",
            &"id",
            &"--mode",
            &mode,
            &"--group",
            &group_name,
            &"--batch-size",
            &batch,
            &"--report",
            &report,
        ];
        if args.align {
            args_run.push(&"--align");
        } else {
            args_run.extend([&"--reveal" as &dyn AsRef<std::ffi::OsStr>, &reveal]);
        }
        if writes_rows {
            args_run.extend([&"--output" as &dyn AsRef<std::ffi::OsStr>, &output]);
        }
        let start = Instant::now();
        r.sotto("run", &args_run)?;
        let total = start.elapsed().as_secs_f64();
        let value: serde_json::Value = serde_json::from_slice(&std::fs::read(&report)?)?;
        ensure!(
            value["intersection"]["distinct_keys"].as_u64() == Some(shared),
            "wrong intersection size"
        );
        requester_rss.push(value["peak_rss_bytes"].as_u64());
        println!(
            "run {run}: {total:.2} s (requester peak RSS {})",
            mib(value["peak_rss_bytes"].as_u64())
        );
        totals.push(total);
    }
    let mut sorted = totals.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let provider_rss = provider.peak_rss_bytes();
    println!(
        "median {median:.2} s, {:.0} pairs/s; peak RSS: requester {}, provider {}",
        (args.n + m) as f64 / 2.0 / median,
        mib(requester_rss.iter().flatten().max().copied()),
        mib(provider_rss)
    );
    args.json.write(&serde_json::json!({
        "online": true, "align": args.align, "n": args.n, "m": m, "shared": shared, "mode": args.mode.to_string(),
        "group": group.name(), "backend": group_backend(group),
        "reveal": args.reveal.to_string(), "batch_size": args.batch_size,
        "totals_seconds": totals, "median_seconds": median,
        "requester_peak_rss_bytes": requester_rss, "provider_peak_rss_bytes": provider_rss,
    }))
}

/// Secure aggregation as separate processes; median wall time and peak
/// memory per process.
fn agg(args: &AggBenchArgs) -> Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("sotto-bench-agg-")
        .tempdir()?;
    let dir = args.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    std::fs::create_dir_all(&dir)?;
    let clients = usize::from(args.clients);
    println!(
        "bench agg: {clients} lenders, {} query ids, 2 columns, {} runs",
        args.rows, args.runs
    );
    let truth = agg_drill::generate(&dir, clients, args.rows, 7)?;
    let mut r = Runner::new(true)?;
    agg_drill::set_up_nodes(&mut r, &dir, clients)?;
    let mut runs = Vec::new();
    for i in 0..args.runs {
        let run = agg_drill::run_job(&r, &dir, clients, &format!("bench-{i}"))?;
        agg_drill::check_result(&dir.join(format!("result-bench-{i}.csv")), &truth)?;
        let client_rss: Vec<Option<u64>> = run
            .clients
            .iter()
            .map(|c| c["peak_rss_bytes"].as_u64())
            .collect();
        let max_client = client_rss.iter().flatten().max().copied();
        println!(
            "  run {}: {:.2} s end to end (protocol {:.2} s at the coordinator); peak memory: coordinator {}, largest client {}",
            i + 1,
            run.seconds,
            run.coordinator["protocol_seconds"].as_f64().unwrap_or(f64::NAN),
            mib(run.coordinator["peak_rss_bytes"].as_u64()),
            mib(max_client)
        );
        runs.push((run.seconds, run, max_client));
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (seconds, median, max_client) = &runs[runs.len() / 2];
    println!(
        "median: {seconds:.2} s end to end; coordinator {}; largest client {}",
        mib(median.coordinator["peak_rss_bytes"].as_u64()),
        mib(*max_client)
    );
    let all: Vec<f64> = runs.iter().map(|r| r.0).collect();
    args.json.write(&serde_json::json!({
        "clients": clients, "rows": args.rows, "columns": 2, "runs_seconds": all,
        "median_seconds": seconds,
        "coordinator_peak_rss_bytes": median.coordinator["peak_rss_bytes"],
        "max_client_peak_rss_bytes": max_client,
        "coordinator_report": median.coordinator,
    }))
}

/// Registration round trips against a center process.
fn registry(args: &RegistryBenchArgs) -> Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("sotto-bench-tee-")
        .tempdir()?;
    let dir = temp.path();
    let mut r = Runner::new(true)?;
    super::setup::certified_nodes(&mut r, dir, &["center", "node-1"])?;
    let out = r.sotto(
        "platform key",
        &[&"tee", &"platform-key", &"--out", &dir.join("platform.key")],
    )?;
    let platform = out.trim().rsplit(' ').next().unwrap_or_default().to_owned();
    let measurement = r.sotto("measure", &[&"tee", &"measure"])?.trim().to_owned();
    std::fs::write(
        dir.join("policy.toml"),
        format!("platforms = [\"sgx\"]\nmeasurements = [\"{measurement}\"]\nallow_software = true\nsoftware_platform_keys = [\"{platform}\"]\n"),
    )?;
    let serve_args: Vec<std::ffi::OsString> = [
        "registry",
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--dev",
        "--home",
    ]
    .iter()
    .map(Into::into)
    .chain([
        dir.join("center").into(),
        "--policy".into(),
        dir.join("policy.toml").into(),
    ])
    .collect();
    let (center, address) = ServerProcess::start(
        &r.exe,
        &serve_args,
        &dir.join("center.log"),
        "registration center",
    )?;
    let result = super::psi::runtime()?.block_on(async {
        let home = sotto_node::NodeHome::open(&dir.join("node-1"))?;
        let enclave = sotto_tee::software::SoftwareEnclave::current(
            sotto_tee::software::PlatformKey::read(&dir.join("platform.key"))?,
        )?;
        let mut client =
            sotto_tee::online::node::CenterClient::connect(&home, "center".parse()?, &address)
                .await?;
        client.register(&home, &enclave).await?;
        let mut times = Vec::new();
        for _ in 0..args.runs {
            let start = Instant::now();
            client.register(&home, &enclave).await?;
            times.push(start.elapsed().as_secs_f64() * 1000.0);
        }
        anyhow::Ok(times)
    });
    drop(center);
    let mut times = result?;
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "bench registry: {} registrations (challenge, software evidence, register; center persists each): median {median:.2} ms, p90 {:.2} ms, {:.0}/s",
        times.len(),
        times[times.len() * 9 / 10],
        1000.0 / median
    );
    Ok(())
}
