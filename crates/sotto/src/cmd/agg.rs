//! `sotto agg`: the coordinator (`serve`), a client (`join`) and the job log
//! (`log`) of secure aggregation.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use sotto_agg::job::JobSpec;
use sotto_agg::joblog::{JobLog, LOG_FILE};
use sotto_agg::online::client::{join, ClientConfig};
use sotto_agg::online::coordinator::{prepare, CoordinatorConfig};
use sotto_agg::table::{ClientTable, ColumnMap, Query};

use super::node::{ForceArg, HomeArg};
use super::psi::{bind_and_announce, ctrl_c, runtime};

/// Secure aggregation commands.
#[derive(Subcommand)]
pub enum AggCommand {
    /// Coordinator: run one job (described by a TOML file) and write the
    /// per-id totals.
    ///
    /// Prints `listening on ADDRESS` once ready, waits for every client of
    /// the job to join (the job's join deadline), deals zero-sum masks, sends
    /// the query, adds what comes back and sends the signed result to every
    /// client. A client that misses a step's deadline aborts the job, naming
    /// it; with --rerun-without-missing the job runs again on the others with
    /// fresh randomness. Every attempt is recorded in the home's job log.
    Serve(ServeArgs),
    /// Client: join a job with your table; every value is checked against
    /// the job's columns, scales and ranges before anything is sent.
    Join(JoinArgs),
    /// Show the coordinator's job log (every attempt, its outcome and
    /// transcript hash).
    Log(LogArgs),
}

/// Arguments of `agg serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7444")]
    listen: String,
    /// The job file (TOML: name, coordinator, clients, lead, [[column]]s, [deadlines]).
    #[arg(long, value_name = "TOML")]
    job: PathBuf,
    /// CSV with the ids to ask about.
    #[arg(long, value_name = "CSV")]
    query: PathBuf,
    /// The id column of --query.
    #[arg(long, default_value = "id")]
    query_column: String,
    /// Write the result here: `id, <column>_total..., institutions`.
    #[arg(long, value_name = "CSV")]
    output: PathBuf,
    /// Write a JSON report (clients, sizes, timings, transcript hash).
    #[arg(long, value_name = "JSON")]
    report: Option<PathBuf>,
    /// When clients miss a deadline, run again on the remaining clients
    /// (at least the job's min_clients) with fresh randomness instead of
    /// failing.
    #[arg(long)]
    rerun_without_missing: bool,
    #[command(flatten)]
    force: ForceArg,
}

/// Arguments of `agg join`.
#[derive(Args)]
pub struct JoinArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The coordinator's address, HOST:PORT.
    #[arg(long)]
    connect: String,
    /// The job file (the same one the coordinator runs).
    #[arg(long, value_name = "TOML")]
    job: PathBuf,
    /// Your table: a CSV with an id column and the job's numeric columns.
    #[arg(long, value_name = "CSV")]
    table: PathBuf,
    /// The id column of --table.
    #[arg(long, default_value = "id")]
    id_column: String,
    /// Read a job column from a differently named table column:
    /// JOB_COLUMN=TABLE_COLUMN (repeatable).
    #[arg(long = "column", value_name = "JOB=TABLE", value_parser = parse_rename)]
    renames: Vec<(String, String)>,
    /// Also write the result you receive to this CSV.
    #[arg(long, value_name = "CSV")]
    output: Option<PathBuf>,
    /// Write a JSON report.
    #[arg(long, value_name = "JSON")]
    report: Option<PathBuf>,
    /// Seconds of silence from the coordinator before giving up.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=86400))]
    timeout: u64,
    #[command(flatten)]
    force: ForceArg,
}

/// Arguments of `agg log`.
#[derive(Args)]
pub struct LogArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

fn parse_rename(text: &str) -> Result<(String, String), String> {
    let (job, table) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected JOB_COLUMN=TABLE_COLUMN"))?;
    if job.is_empty() || table.is_empty() {
        return Err(format!("{text:?}: both column names are needed"));
    }
    Ok((job.to_owned(), table.to_owned()))
}

/// Runs an `agg` command.
pub fn run(command: AggCommand) -> Result<()> {
    match command {
        AggCommand::Serve(a) => serve_job(a),
        AggCommand::Join(a) => join_job(a),
        AggCommand::Log(a) => show_log(&a),
    }
}

fn serve_job(a: ServeArgs) -> Result<()> {
    let outputs: Vec<&Path> = [Some(a.output.as_path()), a.report.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    a.force
        .rules()
        .with_inputs([&a.job, &a.query])
        .check_all(&outputs)?;
    let home = a.home.open()?;
    let spec = Arc::new(JobSpec::read(&a.job)?);
    let query = Query::read(&a.query, &a.query_column)?;
    anyhow::ensure!(
        !query.ids.is_empty(),
        "{}: the query has no ids",
        a.query.display()
    );
    let config = CoordinatorConfig {
        home,
        spec,
        query: Arc::new(query),
        rerun_without_missing: a.rerun_without_missing,
        output: a.output,
        report: a.report,
    };
    runtime()?.block_on(async move {
        let job = prepare(config)?;
        let listener = bind_and_announce(&a.listen).await?;
        let report = job.serve(listener, ctrl_c()).await?;
        println!(
            "job {} completed (attempt {}, {} clients): {} of {} ids found; result in {}; transcript {}",
            report.job,
            report.attempt,
            report.clients.len(),
            report.customers_found,
            report.rows,
            report.result,
            report.transcript
        );
        anyhow::Ok(())
    })
}

fn join_job(a: JoinArgs) -> Result<()> {
    let outputs: Vec<&Path> = [a.output.as_deref(), a.report.as_deref()]
        .into_iter()
        .flatten()
        .collect();
    a.force
        .rules()
        .with_inputs([&a.job, &a.table])
        .check_all(&outputs)?;
    let home = a.home.open()?;
    let spec = Arc::new(JobSpec::read(&a.job)?);
    for (job_column, _) in &a.renames {
        anyhow::ensure!(
            spec.columns.iter().any(|c| c.name == *job_column),
            "--column {job_column}=...: the job has no column {job_column:?}"
        );
    }
    let map = ColumnMap::new(&a.id_column, &spec.columns, &a.renames);
    let table = ClientTable::read(&a.table, &map, &spec.columns)?;
    tracing::info!(rows = table.rows(), "table checked against the job");
    let config = ClientConfig {
        home,
        spec,
        address: a.connect,
        table: Arc::new(table),
        output: a.output,
        report: a.report,
        timeout: Duration::from_secs(a.timeout),
    };
    let report = runtime()?.block_on(join(config))?;
    println!(
        "job {} completed (attempt {}): {} of your {} rows were asked about; transcript {}{}",
        report.job,
        report.attempt,
        report.own_matches,
        report.table_rows,
        report.transcript,
        report
            .result
            .as_ref()
            .map(|p| format!("; result in {p}"))
            .unwrap_or_default()
    );
    Ok(())
}

fn show_log(a: &LogArgs) -> Result<()> {
    let home = a.home.open()?;
    let path = home.dir().join(LOG_FILE);
    anyhow::ensure!(
        path.exists(),
        "{} has no job log yet: it is written by `sotto agg serve`",
        home.dir().display()
    );
    let log = JobLog::open(&path).context("opening the job log")?;
    for record in log.list()? {
        if a.json {
            println!("{}", serde_json::to_string(&record)?);
        } else {
            println!(
                "{}  {}  attempt {}  {:?}  clients {}  rows {}  {}",
                record.started,
                record.job_id,
                record.attempt,
                record.outcome,
                record.clients.join(","),
                record.rows,
                record
                    .error
                    .or(record.transcript.map(|t| format!("transcript {t}")))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}
