//! `sotto bench psi`: both roles in one process on generated data, timed per
//! phase.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Result};
use clap::{Args, Subcommand};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_psi::engine::{DEFAULT_BATCH_SIZE, MAX_BATCH_SIZE};
use sotto_psi::local::{run_local, LocalOptions, LocalOutcome, LocalParty};
use sotto_psi::wire::{Reveal, SigningMode};

/// `sotto bench ...`
#[derive(Subcommand)]
pub enum BenchCommand {
    /// PSI with both roles in this process: N x M generated keys.
    Psi(PsiBenchArgs),
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
    /// Also write the figures as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Runs `sotto bench ...`.
pub fn run(command: BenchCommand) -> Result<()> {
    let BenchCommand::Psi(args) = command;
    ensure!(
        (0.0..=1.0).contains(&args.overlap),
        "--overlap must be between 0 and 1"
    );
    let m = args.m.unwrap_or(args.n);
    let shared = ((args.n as f64 * args.overlap) as u64).min(m);
    let a_keys: Vec<Vec<u8>> = (0..args.n)
        .map(|i| format!("user-{i:010}").into_bytes())
        .collect();
    let b_keys: Vec<Vec<u8>> = (args.n - shared..args.n - shared + m)
        .map(|i| format!("user-{i:010}").into_bytes())
        .collect();
    let mut rng = ChaCha20Rng::from_entropy();
    let a = LocalParty::generate(&"bench-a".parse()?, 2, &mut rng);
    let b = LocalParty::generate(&"bench-b".parse()?, 2, &mut rng);
    let options = LocalOptions {
        mode: args.mode,
        reveal: args.reveal,
        batch_size: args.batch_size,
    };
    println!(
        "sotto bench psi: n={} m={m} shared={shared} mode={} reveal={} batch={} threads={}",
        args.n,
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
    if let Some(path) = args.json {
        let value = serde_json::json!({
            "n": args.n, "m": m, "shared": shared, "mode": args.mode.to_string(),
            "reveal": args.reveal.to_string(), "batch_size": args.batch_size,
            "threads": rayon_threads(), "totals_seconds": totals, "median_seconds": median,
            "phases": outcome.phases,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&value)? + "\n")?;
    }
    Ok(())
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
