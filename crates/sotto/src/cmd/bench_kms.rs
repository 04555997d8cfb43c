//! `sotto bench kms`: escrow puts per second to a local directory (the
//! agent library: HPKE seal + atomic object write), recoveries per second
//! over mutual TLS against a `sotto kms serve` process at a given
//! concurrency (decrypt, sign, seal under a fresh key of the reply channel,
//! audit commit at the KMS; open and verify at the agent), and the time of
//! `sotto kms restore`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{ensure, Result};
use clap::Args;
use sotto_kms::agent::{Agent, EscrowOptions, SecretId};
use sotto_kms::escrow::{Envelope, SecretKind};

use super::setup::{init_agent, kms_site, start_kms, Runner, KMS_PASSWORD_FILE, KMS_THIRD_ENV};

/// Arguments of `sotto bench kms`.
#[derive(Args)]
pub struct KmsBenchArgs {
    /// Secrets to escrow (each run), 32 bytes each.
    #[arg(long, default_value_t = 20_000)]
    secrets: usize,
    /// Recoveries to time (each run).
    #[arg(long, default_value_t = 20_000)]
    recoveries: usize,
    /// Requests in flight at once (escrow tasks and recovery tasks).
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// HTTP/2 connections the recovery tasks share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Repetitions; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

async fn escrow_run(agent: &Arc<Agent>, run: u32, args: &KmsBenchArgs) -> Result<f64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let agent = Arc::clone(agent);
        let (count, step) = (args.secrets, args.concurrency);
        tasks.push(tokio::spawn(async move {
            let options = EscrowOptions::default();
            for i in (worker..count).step_by(step) {
                let id: SecretId = format!("r{run}-s{i}").parse()?;
                let secret = sotto_crypto::hash::sha256(id.to_string().as_bytes());
                agent
                    .put(&id, SecretKind::BusinessSubKey, &secret, &options)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(args.secrets as f64 / start.elapsed().as_secs_f64())
}

async fn recovery_run(
    agents: &[Arc<Agent>],
    envelopes: &Arc<Vec<Envelope>>,
    args: &KmsBenchArgs,
) -> Result<f64> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency {
        let agent = Arc::clone(&agents[worker % agents.len()]);
        let envelopes = Arc::clone(envelopes);
        let (count, step) = (args.recoveries, args.concurrency);
        tasks.push(tokio::spawn(async move {
            let mut client = agent.client();
            for i in (worker..count).step_by(step) {
                let envelope = &envelopes[i % envelopes.len()];
                let secret = client.recover(agent.signer(), envelope).await?;
                ensure!(
                    secret.len() == 32,
                    "recovered a secret of {} bytes",
                    secret.len()
                );
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(args.recoveries as f64 / start.elapsed().as_secs_f64())
}

fn restore_run(r: &mut Runner, dir: &Path, run: u32) -> Result<f64> {
    let home = dir.join(format!("kms-restored-{run}"));
    r.sotto(
        "restore host",
        &[&"init", &"--home", &home, &"--name", &"kms"],
    )?;
    let start = Instant::now();
    r.sotto(
        "kms restore",
        &[
            &"kms",
            &"restore",
            &"--home",
            &home,
            &"--from",
            &dir.join(KMS_THIRD_ENV),
            &"--password-file",
            &dir.join(KMS_PASSWORD_FILE),
        ],
    )?;
    Ok(start.elapsed().as_secs_f64())
}

/// Runs the benchmark.
pub fn run(args: &KmsBenchArgs) -> Result<()> {
    ensure!(
        args.concurrency > 0 && args.connections > 0,
        "--concurrency and --connections must be at least 1"
    );
    let temp = tempfile::Builder::new()
        .prefix("sotto-bench-kms-")
        .tempdir()?;
    let dir = temp.path();
    let mut r = Runner::new(true)?;
    kms_site(&mut r, dir, "bench operator password")?;
    let kms_home = dir.join("kms");
    let unlimited = ["--recover-rate", "10000000", "--recover-burst", "10000000"];
    let (server, address) = start_kms(&r.exe, dir, &unlimited)?;
    r.sotto(
        "keygen",
        &[
            &"kms",
            &"keygen",
            &"--home",
            &kms_home,
            &"--connect",
            &address,
            &"--owner",
            &"bank-a",
        ],
    )?;
    init_agent(&mut r, dir, &address, false)?;
    let (puts, recoveries) = super::psi::runtime()?.block_on(async {
        let home = sotto_node::NodeHome::open(&dir.join("bank-a"))?;
        let mut agents = Vec::new();
        for _ in 0..args.connections {
            agents.push(Arc::new(Agent::open(&home).await?));
        }
        let mut puts = Vec::new();
        for run in 0..args.runs {
            puts.push(escrow_run(&agents[0], run, args).await?);
        }
        let mut envelopes = Vec::new();
        for id in agents[0].list().await?.into_iter().take(1000) {
            envelopes.push(agents[0].get(&id, false).await?.envelope);
        }
        let envelopes = Arc::new(envelopes);
        let mut recoveries = Vec::new();
        for _ in 0..args.runs {
            recoveries.push(recovery_run(&agents, &envelopes, args).await?);
        }
        anyhow::Ok((puts, recoveries))
    })?;
    let kms_rss = server.peak_rss_bytes();
    drop(server);
    let mut restores = Vec::new();
    for run in 0..args.runs {
        restores.push(restore_run(&mut r, dir, run)?);
    }
    println!(
        "bench kms: escrow to a local directory: median {:.0} puts/s ({} secrets, concurrency {}, runs {:.0?})",
        median(puts.clone()), args.secrets, args.concurrency, puts
    );
    println!(
        "bench kms: recoveries over mTLS: median {:.0}/s ({} recoveries, concurrency {} over {} connections, runs {:.0?}; KMS peak RSS {} MiB)",
        median(recoveries.clone()), args.recoveries, args.concurrency, args.connections, recoveries,
        kms_rss.map_or_else(|| "?".into(), |b| (b >> 20).to_string())
    );
    println!(
        "bench kms: kms restore (Argon2id m=64 MiB t=3 open + re-seal of the password check, database build): median {:.2} s (runs {:.2?})",
        median(restores.clone()), restores
    );
    Ok(())
}
