//! Generated loan books for secure aggregation and a job run as separate
//! processes (a coordinator and one client per lender over mutual TLS on
//! loopback), shared by `sotto demo agg` and `sotto bench agg`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::setup::{certified_nodes, Runner};

/// The coordinator's node name in generated jobs.
pub const COORDINATOR: &str = "bureau";

/// Per-customer plaintext totals: debt in cents, loans, lenders.
pub type Truth = BTreeMap<String, (i64, i64, u64)>;

/// Lender node names for `clients` lenders.
pub fn lender_names(clients: usize) -> Vec<String> {
    (1..=clients).map(|i| format!("lender-{i}")).collect()
}

/// Writes the job file, the query (`rows` customers plus 1% nobody has) and
/// one loan book per lender (each has a customer with probability 0.4;
/// outstanding balance may be negative, a credit), and returns the plaintext
/// truth.
pub fn generate(dir: &Path, clients: usize, rows: usize, seed: u64) -> Result<Truth> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let lenders = lender_names(clients);
    let quoted: Vec<String> = lenders.iter().map(|l| format!("{l:?}")).collect();
    let job = format!(
        r#"name = "multi-lender-demo"
coordinator = "{COORDINATOR}"
clients = [{}]
lead = "lender-1"
min_clients = {}

[deadlines]
join_seconds = 120
step_seconds = 120

[[column]]
name = "debt"
scale = 100
min = "-1000000"
max = "10000000"

[[column]]
name = "loans"
scale = 1
min = "0"
max = "100"
"#,
        quoted.join(", "),
        clients.min(sotto_agg::job::DEFAULT_MIN_CLIENTS)
    );
    std::fs::write(dir.join("job.toml"), job)?;
    let mut truth = Truth::new();
    let mut query = String::from("id\n");
    let extra = rows / 100;
    for i in 0..rows + extra {
        let id = format!("cust-{i:08}");
        writeln!(query, "{id}")?;
        truth.insert(id, (0, 0, 0));
    }
    std::fs::write(dir.join("query.csv"), query)?;
    for lender in &lenders {
        let mut book = String::from("customer,outstanding,loans\n");
        for i in 0..rows {
            if !rng.gen_bool(0.4) {
                continue;
            }
            let id = format!("cust-{i:08}");
            let cents: i64 = rng.gen_range(-5_000_000..=50_000_000);
            let loans: i64 = rng.gen_range(0..=10);
            let sign = if cents < 0 { "-" } else { "" };
            let abs = cents.unsigned_abs();
            writeln!(book, "{id},{sign}{}.{:02},{loans}", abs / 100, abs % 100)?;
            let t = truth.entry(id).or_default();
            t.0 += cents;
            t.1 += loans;
            t.2 += 1;
        }
        std::fs::write(dir.join(format!("{lender}.csv")), book)?;
    }
    Ok(truth)
}

/// Creates the CA and the certified homes of the coordinator and the lenders.
pub fn set_up_nodes(r: &mut Runner, dir: &Path, clients: usize) -> Result<()> {
    let mut names = vec![COORDINATOR.to_owned()];
    names.extend(lender_names(clients));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    certified_nodes(r, dir, &names)
}

/// What one job run produced.
pub struct JobRun {
    /// Wall-clock seconds from starting the coordinator to every process done.
    pub seconds: f64,
    /// The coordinator's JSON report.
    pub coordinator: serde_json::Value,
    /// Each lender's JSON report.
    pub clients: Vec<serde_json::Value>,
    /// The coordinator's stdout summary.
    pub summary: String,
}

fn spawn(r: &Runner, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Result<Child> {
    let mut command = Command::new(&r.exe);
    command.arg("--quiet");
    for a in args {
        command.arg(a);
    }
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", r.exe.display()))
}

fn finished(child: Child, label: &str) -> Result<String> {
    let out = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{label} failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// Runs the job in `dir` with `clients` lenders, each a `sotto agg join`
/// process, against a `sotto agg serve` process; `tag` names this run's
/// output files.
pub fn run_job(r: &Runner, dir: &Path, clients: usize, tag: &str) -> Result<JobRun> {
    let p = |name: &str| dir.join(name);
    let started = Instant::now();
    let result = p(&format!("result-{tag}.csv"));
    let report = p(&format!("report-{tag}.json"));
    let mut coordinator = spawn(
        r,
        &[
            &"agg",
            &"serve",
            &"--listen",
            &"127.0.0.1:0",
            &"--home",
            &p(COORDINATOR),
            &"--job",
            &p("job.toml"),
            &"--query",
            &p("query.csv"),
            &"--output",
            &result,
            &"--report",
            &report,
        ],
    )?;
    let stdout = coordinator.stdout.take().context("coordinator stdout")?;
    let mut reader = std::io::BufReader::new(stdout);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut reader, &mut line)?;
    let Some(address) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
        let _ = coordinator.kill();
        bail!(
            "the coordinator did not start: {}",
            finished(coordinator, "coordinator")
                .err()
                .map(|e| e.to_string())
                .unwrap_or(line)
        );
    };
    let mut lenders = Vec::new();
    for lender in lender_names(clients) {
        let child = spawn(
            r,
            &[
                &"agg",
                &"join",
                &"--home",
                &p(&lender),
                &"--connect",
                &address,
                &"--job",
                &p("job.toml"),
                &"--table",
                &p(&format!("{lender}.csv")),
                &"--id-column",
                &"customer",
                &"--column",
                &"debt=outstanding",
                &"--output",
                &p(&format!("{lender}-result-{tag}.csv")),
                &"--report",
                &p(&format!("{lender}-report-{tag}.json")),
            ],
        )?;
        lenders.push((lender, child));
    }
    let mut failures = Vec::new();
    for (lender, child) in lenders {
        if let Err(e) = finished(child, &lender) {
            failures.push(e.to_string());
        }
    }
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut reader, &mut rest)?;
    let status = coordinator.wait()?;
    let seconds = started.elapsed().as_secs_f64();
    if !status.success() || !failures.is_empty() {
        let mut stderr = String::new();
        if let Some(mut e) = coordinator.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut stderr)?;
        }
        bail!(
            "the job failed:\ncoordinator: {stderr}\n{}",
            failures.join("\n")
        );
    }
    let read_json = |path: &PathBuf| -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )?)
    };
    let clients = lender_names(clients)
        .iter()
        .map(|l| read_json(&p(&format!("{l}-report-{tag}.json"))))
        .collect::<Result<Vec<_>>>()?;
    Ok(JobRun {
        seconds,
        coordinator: read_json(&report)?,
        clients,
        summary: rest.trim().to_owned(),
    })
}

/// Checks a result CSV against the plaintext truth, line by line.
pub fn check_result(path: &Path, truth: &Truth) -> Result<usize> {
    let mut reader =
        csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
    let header = reader.headers()?.clone();
    ensure!(
        header.iter().collect::<Vec<_>>() == ["id", "debt_total", "loans_total", "institutions"],
        "{}: unexpected header {header:?}",
        path.display()
    );
    let mut checked = 0;
    for record in reader.records() {
        let record = record?;
        let id = &record[0];
        let &(debt, loans, count) = truth
            .get(id)
            .with_context(|| format!("{}: id {id} was not asked about", path.display()))?;
        let expected = [
            sotto_agg::fixed::format(debt, 100),
            loans.to_string(),
            count.to_string(),
        ];
        for (col, want) in expected.iter().enumerate() {
            ensure!(
                &record[col + 1] == want,
                "{}: {id}: column {} is {} but the plaintext sum is {want}",
                path.display(),
                header[col + 1].to_owned(),
                &record[col + 1]
            );
        }
        checked += 1;
    }
    ensure!(
        checked == truth.len(),
        "{}: {checked} rows, expected {}",
        path.display(),
        truth.len()
    );
    Ok(checked)
}
