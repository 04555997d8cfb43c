//! `sotto bench ledger`: transactions per second end to end (invoke →
//! commit event at the target business node) with every role a process on
//! loopback — the demo's topology — at a given concurrency, latency
//! percentiles, and CPU seconds per transaction by role (from
//! `/proc/PID/stat`, Linux).

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::Args;
use sotto_ledger::online::client::{CallSpec, LedgerClient};
use sotto_ledger::online::read_genesis;

use super::demo_ledger::{start_site, Site};
use super::setup::{Runner, ServerProcess};

/// Arguments of `sotto bench ledger`.
#[derive(Args)]
pub struct LedgerBenchArgs {
    /// Transactions to commit (each run).
    #[arg(long, default_value_t = 2000)]
    transactions: usize,
    /// Transactions in flight at once (one client task each).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
    /// After the runs: stop business node b2, commit this many more
    /// transactions, restart b2 and time its catch-up (0: skip).
    #[arg(long, default_value_t = 0)]
    catch_up: usize,
    /// Work directory (default: a temporary one).
    #[arg(long, value_name = "DIR")]
    dir: Option<std::path::PathBuf>,
}

/// CPU seconds a process used so far (utime + stime; USER_HZ = 100).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn roles(site: &Site) -> Vec<(&'static str, Vec<&ServerProcess>)> {
    vec![
        (
            "orderers (3)",
            site.orderers
                .iter()
                .filter_map(|(_, p)| p.as_ref())
                .collect(),
        ),
        ("endorsers (3)", site.endorsers.iter().collect()),
        (
            "business nodes (2)",
            std::iter::once(&site.b1).chain(site.b2.as_ref()).collect(),
        ),
        ("compute (2)", site.compute_processes.iter().collect()),
    ]
}

fn cpu_by_role(site: &Site) -> Vec<(&'static str, f64)> {
    let mut by_role: Vec<(&'static str, f64)> = roles(site)
        .into_iter()
        .map(|(role, processes)| (role, processes.iter().map(|p| cpu_seconds(p.pid())).sum()))
        .collect();
    by_role.push(("clients (this process)", cpu_seconds(std::process::id())));
    by_role
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted.get(i).copied().unwrap_or(0.0)
}

/// One run: `transactions` kv puts from both banks; returns (tps, latencies
/// in ms sorted, CPU seconds per role).
async fn one_run(
    dir: &Path,
    site: &Site,
    run: u32,
    args: &LedgerBenchArgs,
) -> Result<(f64, Vec<f64>)> {
    let (genesis, _, _) = read_genesis(&dir.join("block0.bin"))?;
    let compute: Vec<(String, String)> = site
        .compute
        .iter()
        .filter_map(|c| c.split_once('@').map(|(n, a)| (n.to_owned(), a.to_owned())))
        .collect();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let bank = ["bank-a", "bank-b"][worker % 2];
        let home = sotto_node::NodeHome::open(&dir.join(bank))?;
        let mut client = LedgerClient::new(home, &genesis, compute.clone())?;
        let (count, step) = (args.transactions, args.concurrency);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            for i in (worker..count).step_by(step) {
                let spec = CallSpec {
                    contract: "kv".into(),
                    function: "put".into(),
                    args: format!("{{\"key\":\"r{run}-k{i}\",\"value\":\"v{i}\"}}").into_bytes(),
                    targets: vec!["b1".into()],
                };
                let t = Instant::now();
                let committed = client.invoke(&spec).await?;
                ensure!(
                    committed.code.is_valid(),
                    "transaction {} was {}",
                    committed.tx_id,
                    committed.code
                );
                latencies.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.context("a client task")??);
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    Ok((args.transactions as f64 / seconds, latencies))
}

/// Runs the benchmark.
pub fn run(args: &LedgerBenchArgs) -> Result<()> {
    ensure!(
        args.concurrency > 0 && args.transactions >= args.concurrency,
        "--transactions must be at least --concurrency (> 0)"
    );
    let temp = tempfile::Builder::new()
        .prefix("sotto-bench-ledger-")
        .tempdir()?;
    let dir = match &args.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => temp.path().to_owned(),
    };
    let mut r = Runner::new(true)?;
    let mut site = start_site(&mut r, &dir)?;
    println!(
        "sotto bench ledger: 3 orderers (Raft), 3 endorsers (2 of 3), 2 business nodes, 2 compute enclaves, 2 banks' clients in this process; {} kv puts per run at concurrency {}",
        args.transactions, args.concurrency
    );
    let runtime = super::psi::runtime()?;
    let mut results = Vec::new();
    for run in 0..args.runs {
        let before = cpu_by_role(&site);
        let (tps, latencies) = runtime.block_on(one_run(&dir, &site, run, args))?;
        let after = cpu_by_role(&site);
        let per_tx: Vec<(&str, f64)> = before
            .iter()
            .zip(&after)
            .map(|((role, b), (_, a))| (*role, (a - b) / args.transactions as f64 * 1000.0))
            .collect();
        let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
        println!(
            "  run {}: {tps:.0} tx/s, latency p50 {p50:.1} ms, p99 {p99:.1} ms; CPU ms per tx: {}",
            run + 1,
            per_tx
                .iter()
                .map(|(role, ms)| format!("{role} {ms:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        results.push((tps, p50, p99));
    }
    results.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (tps, p50, p99) = results[results.len() / 2];
    println!(
        "median of {} runs: {tps:.0} tx/s, latency p50 {p50:.1} ms, p99 {p99:.1} ms",
        args.runs
    );
    if args.catch_up > 0 {
        catch_up(&r, &dir, &mut site, &runtime, args)?;
    }
    Ok(())
}

/// Stops b2, commits `--catch-up` transactions, restarts b2 and reports how
/// long its start-up replay and its catch-up took.
fn catch_up(
    r: &Runner,
    dir: &Path,
    site: &mut Site,
    runtime: &tokio::runtime::Runtime,
    args: &LedgerBenchArgs,
) -> Result<()> {
    drop(site.b2.take());
    let more = LedgerBenchArgs {
        transactions: args.catch_up,
        concurrency: args.concurrency,
        runs: 1,
        catch_up: 0,
        dir: None,
    };
    runtime.block_on(one_run(dir, site, args.runs, &more))?;
    let (genesis, _, _) = read_genesis(&dir.join("block0.bin"))?;
    let home = sotto_node::NodeHome::open(&dir.join("bank-a"))?;
    let client = LedgerClient::new(home, &genesis, vec![(String::new(), String::new())])?;
    let target = runtime.block_on(client.status("b1"))?.height;
    let start = Instant::now();
    let (process, _) = super::demo_ledger::start(r, dir, "business node", &["peer"], "b2", &[])?;
    let serving = start.elapsed().as_secs_f64();
    site.b2 = Some(process);
    loop {
        let height = runtime
            .block_on(client.status("b2"))
            .map_or(0, |s| s.height);
        if height >= target {
            break;
        }
        ensure!(
            start.elapsed().as_secs() < 600,
            "b2 did not catch up within 600 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let caught_up = start.elapsed().as_secs_f64() - serving;
    println!(
        "catch-up: b2 was serving {serving:.2} s after its restart (its store replayed and checked), then took {caught_up:.2} s for the {} transactions it missed: {:.0} tx/s",
        args.catch_up,
        args.catch_up as f64 / caught_up.max(1e-9)
    );
    Ok(())
}
