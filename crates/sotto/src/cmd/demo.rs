//! `sotto demo psi` and `sotto demo agg`. PSI: two institutions on generated data, each a separate
//! `sotto` process — online (a provider server and a requester over mutual
//! TLS on loopback) or offline (one process per file-exchange step) —
//! checked against the known truth. Aggregation: a coordinator and n lenders
//! as separate processes (see `agg_drill`), checked against plaintext sums.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use clap::{Args, Subcommand};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sotto_psi::wire::SigningMode;

use super::agg_drill;
use super::setup::{start_provider, two_certified_banks, Runner};

/// `sotto demo ...`
#[derive(Subcommand)]
pub enum DemoCommand {
    /// Two banks find their shared customers (online by default, or --offline).
    Psi(PsiDemoArgs),
    /// Lenders learn each customer's total debt and number of lenders through
    /// a coordinator that sees no single lender's figures.
    Agg(AggDemoArgs),
    /// A TEE registration center and three nodes: identical code admitted,
    /// a different binary refused, group keys synced, a member revoked.
    Tee(WorkDirArgs),
    /// A root KMS and a participant: secrets of every kind escrowed, the
    /// participant's home wiped and every secret recovered, then the KMS
    /// host lost, restored from its password-sealed bundle, and every
    /// secret recovered again.
    Kms(WorkDirArgs),
    /// The privacy ledger: CA, registration center, orderer, 3 endorsers
    /// (2 of 3), 2 business nodes, 2 compute enclaves and 2 banks as
    /// processes; credit records checked against the plaintext truth, a
    /// business node restarted and caught up, a revoked enclave refused.
    Ledger(WorkDirArgs),
    /// Secret-shared data sharing: the ledger and 3 providers with different
    /// columns about overlapping customers; each publishes additive shares
    /// of its table through the ledger and fuses its share; the shares add
    /// up to the joint table; a missing provider and a second publication
    /// refused.
    Share(WorkDirArgs),
}

/// Arguments of `sotto demo tee` and `sotto demo kms`.
#[derive(Args)]
pub struct WorkDirArgs {
    /// Work directory (created; must not exist or be empty). Default: a temporary directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the temporary work directory.
    #[arg(long)]
    keep: bool,
}

/// Arguments of `sotto demo agg`.
#[derive(Args)]
pub struct AggDemoArgs {
    /// Work directory (created; must not exist or be empty). Default: a temporary directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Customers in the query (each lender has about 40% of them).
    #[arg(long, default_value_t = 20_000)]
    rows: usize,
    /// Lenders (clients of the job), at least 2.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(2..=32))]
    clients: u16,
    /// Keep the temporary work directory.
    #[arg(long)]
    keep: bool,
}

/// Arguments of `sotto demo psi`.
#[derive(Args)]
pub struct PsiDemoArgs {
    /// Work directory (created; must not exist or be empty). Default: a temporary directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Customers per bank.
    #[arg(long, default_value_t = 20_000)]
    rows: u32,
    /// Signing mode of the session.
    #[arg(long, default_value_t = SigningMode::Element)]
    mode: SigningMode,
    /// Keep the temporary work directory.
    #[arg(long)]
    keep: bool,
    /// Exchange files step by step instead of running online over mutual TLS.
    #[arg(long)]
    offline: bool,
}

/// Runs `sotto demo ...`.
pub fn run(command: DemoCommand, quiet: bool) -> Result<()> {
    let (dir_arg, keep) = match &command {
        DemoCommand::Psi(a) => (a.dir.clone(), a.keep),
        DemoCommand::Agg(a) => (a.dir.clone(), a.keep),
        DemoCommand::Tee(a)
        | DemoCommand::Kms(a)
        | DemoCommand::Ledger(a)
        | DemoCommand::Share(a) => (a.dir.clone(), a.keep),
    };
    let temp;
    let dir = match &dir_arg {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            ensure!(
                std::fs::read_dir(d)?.next().is_none(),
                "{} is not empty; give an empty or new --dir",
                d.display()
            );
            d.clone()
        }
        None => {
            temp = tempfile::Builder::new().prefix("sotto-demo-").tempdir()?;
            if keep {
                temp.keep()
            } else {
                temp.path().to_owned()
            }
        }
    };
    let result = match &command {
        DemoCommand::Psi(args) => run_psi(&dir, args, quiet),
        DemoCommand::Agg(args) => run_agg(&dir, args, quiet),
        DemoCommand::Tee(_) => super::demo_tee::run(&dir, quiet),
        DemoCommand::Kms(_) => super::demo_kms::run(&dir, quiet),
        DemoCommand::Ledger(_) => super::demo_ledger::run(&dir, quiet),
        DemoCommand::Share(_) => super::demo_share::run(&dir, quiet),
    };
    if dir_arg.is_some() || keep {
        println!("work directory kept: {}", dir.display());
    }
    result
}

fn run_agg(dir: &Path, args: &AggDemoArgs, quiet: bool) -> Result<()> {
    let clients = usize::from(args.clients);
    println!(
        "sotto demo agg: {clients} lenders, {} customers asked about, each lender a separate process",
        args.rows
    );
    let started = Instant::now();
    let truth = agg_drill::generate(dir, clients, args.rows, 2026)?;
    let mut r = Runner::new(quiet)?;
    agg_drill::set_up_nodes(&mut r, dir, clients)?;
    println!(
        "  consortium CA, coordinator {} and {clients} lender homes ready ({:.1} s)",
        agg_drill::COORDINATOR,
        started.elapsed().as_secs_f64()
    );
    let run = agg_drill::run_job(&r, dir, clients, "demo")?;
    println!("  {}", run.summary);
    let checked = agg_drill::check_result(&dir.join("result-demo.csv"), &truth)?;
    for lender in agg_drill::lender_names(clients) {
        let path = dir.join(format!("{lender}-result-demo.csv"));
        agg_drill::check_result(&path, &truth)?;
    }
    let transcript = run.coordinator["transcript"].as_str().unwrap_or_default();
    ensure!(
        run.clients
            .iter()
            .all(|c| c["transcript"].as_str() == Some(transcript)),
        "a lender received a different transcript hash than the coordinator recorded"
    );
    let found = truth.values().filter(|t| t.2 > 0).count();
    println!(
        "  checked: all {checked} totals (debt, loans, lenders per customer; {found} customers with at least one lender) equal the plaintext sums, at the coordinator and at every lender"
    );
    println!(
        "  job ran in {:.2} s end to end; the coordinator saw only masked vectors",
        run.seconds
    );
    Ok(())
}

struct Truth {
    shared_keys: BTreeSet<String>,
    requester_rows: u64,
    provider_rows: u64,
}

/// Writes the two banks' CSVs and returns what the result must be.
fn generate(dir: &Path, rows: u32) -> Result<Truth> {
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let (mut a, mut b) = (
        String::from("email,name,balance\n"),
        String::from("customer_email,risk_score\n"),
    );
    let half = rows / 2;
    let mut truth = Truth {
        shared_keys: BTreeSet::new(),
        requester_rows: 0,
        provider_rows: 0,
    };
    for i in 0..rows {
        let email = format!("customer{i:07}@example.org");
        writeln!(a, "{email},Customer {i},{}", rng.gen_range(0..100_000))?;
        if i >= half {
            truth.shared_keys.insert(email.clone());
            truth.requester_rows += 1;
            if i % 97 == 0 {
                // The same customer twice in bank A's book: both rows must come out.
                writeln!(
                    a,
                    "{email},Customer {i} (joint account),{}",
                    rng.gen_range(0..100_000)
                )?;
                truth.requester_rows += 1;
            }
        }
    }
    for i in half..half + rows {
        let email = format!("customer{i:07}@example.org");
        // Messy keys in bank B: other case, stray spaces.
        let messy = match i % 5 {
            0 => email.to_uppercase(),
            1 => format!("  {email} "),
            _ => email.clone(),
        };
        writeln!(b, "\"{messy}\",{}", rng.gen_range(0..1000))?;
        if i < rows {
            truth.provider_rows += 1;
        }
    }
    a.push_str(",Nobody,0\n");
    b.push_str("\"   \",5\n");
    std::fs::write(dir.join("bank-a.csv"), a)?;
    std::fs::write(dir.join("bank-b.csv"), b)?;
    Ok(truth)
}

fn read_column(path: &Path, column: &str) -> Result<Vec<String>> {
    let mut rdr = csv_reader(path)?;
    let headers = rdr.headers()?.clone();
    let index = headers
        .iter()
        .position(|h| h == column)
        .context("column missing in output")?;
    let mut out = Vec::new();
    for record in rdr.records() {
        out.push(record?.get(index).unwrap_or_default().trim().to_lowercase());
    }
    Ok(out)
}

fn csv_reader(path: &Path) -> Result<csv::Reader<std::fs::File>> {
    csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))
}

fn run_psi(dir: &Path, args: &PsiDemoArgs, quiet: bool) -> Result<()> {
    let mut r = Runner::new(quiet)?;
    let how = if args.offline {
        "offline file exchange"
    } else {
        "online over mutual TLS"
    };
    println!(
        "sotto demo psi: bank-a (requester) and bank-b (provider), {} customers each, {how}, in {}",
        args.rows,
        dir.display()
    );
    two_certified_banks(&mut r, dir)?;
    let truth = generate(dir, args.rows)?;
    let setup_steps = r.steps.len();
    let started = Instant::now();
    let exchange = |r: &mut Runner, v: &Variant| {
        if args.offline {
            offline_exchange(r, dir, &args.mode.to_string(), v)
        } else {
            online_exchange(r, dir, &args.mode.to_string(), v)
        }
    };
    let provider_rows = exchange(&mut r, &Variant { aligned: false })?;
    let elapsed = started.elapsed().as_secs_f64();
    check(dir, &truth, &provider_rows)?;
    let plain_steps = r.steps.len();
    let aligned = exchange(&mut r, &Variant { aligned: true })?;
    let aligned_rows = check_aligned(&mut r, dir, &truth, &aligned)?;
    println!("\nsession steps (each a separate process):");
    for (label, secs) in r
        .steps
        .iter()
        .skip(setup_steps)
        .take(plain_steps - setup_steps)
    {
        println!("  {label:<12} {secs:>7.2} s");
    }
    println!(
        "result: {} shared customers; bank-a got {} rows (duplicates kept), bank-b {} rows; mode {}; {elapsed:.1} s in all",
        truth.shared_keys.len(),
        truth.requester_rows,
        truth.provider_rows,
        args.mode
    );
    println!(
        "aligned session (--align, for federated learning): both banks wrote the {aligned_rows} shared customers in the same order, one row each; the signed digests match (psi verify-alignment)"
    );
    println!("CHECK PASSED: both banks' results equal the plaintext intersection, and the aligned outputs line up row for row");
    Ok(())
}

/// The provider's matched keys as written by either exchange.
struct ProviderRows {
    file: PathBuf,
    report: PathBuf,
    key_column: &'static str,
    flag_column: Option<&'static str>,
}

/// The flags and file names of the plain and the aligned exchange.
struct Variant {
    aligned: bool,
}

impl Variant {
    fn name(&self, base: &str) -> String {
        if self.aligned {
            format!("aligned-{base}")
        } else {
            base.to_owned()
        }
    }

    /// The requester's session flags.
    fn session(&self, mode: &str) -> Vec<String> {
        let mut flags = vec!["--mode".to_owned(), mode.to_owned()];
        if self.aligned {
            flags.extend(["--align", "--duplicates", "first"].map(String::from));
        } else {
            flags.extend(["--reveal", "both"].map(String::from));
        }
        flags
    }

    /// The provider's flags.
    fn provider(&self) -> Vec<String> {
        let mut flags = vec!["--allow-mode".to_owned(), "element,digest,none".to_owned()];
        if self.aligned {
            flags.extend(["--allow-align", "--duplicates", "first"].map(String::from));
        }
        flags
    }
}

/// Runs `label` with fixed arguments followed by `extra` ones.
fn sotto_with(
    r: &mut Runner,
    label: &str,
    fixed: &[&dyn AsRef<std::ffi::OsStr>],
    extra: &[String],
) -> Result<String> {
    let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = fixed.to_vec();
    args.extend(extra.iter().map(|e| e as &dyn AsRef<std::ffi::OsStr>));
    r.sotto(label, &args)
}

fn offline_exchange(r: &mut Runner, dir: &Path, mode: &str, v: &Variant) -> Result<ProviderRows> {
    let p = |name: &str| dir.join(v.name(name));
    let (home_a, home_b) = (dir.join("bank-a"), dir.join("bank-b"));
    let (input_a, input_b) = (dir.join("bank-a.csv"), dir.join("bank-b.csv"));
    sotto_with(
        r,
        "a: start",
        &[
            &"psi",
            &"offline",
            &"start",
            &"--home",
            &home_a,
            &"--peer",
            &"bank-b",
            &"--input",
            &input_a,
            &"--id",
            &"email",
            &"--casefold",
            &"--out",
            &p("1-hello.psi"),
        ],
        &v.session(mode),
    )?;
    sotto_with(
        r,
        "b: accept",
        &[
            &"psi",
            &"offline",
            &"accept",
            &"--home",
            &home_b,
            &"--in",
            &p("1-hello.psi"),
            &"--input",
            &input_b,
            &"--id",
            &"customer_email",
            &"--casefold",
            &"--out",
            &p("2-accept.psi"),
        ],
        &v.provider(),
    )?;
    r.sotto(
        "a: send",
        &[
            &"psi",
            &"offline",
            &"send",
            &"--home",
            &home_a,
            &"--in",
            &p("2-accept.psi"),
            &"--out",
            &p("3-round1.psi"),
        ],
    )?;
    r.sotto(
        "b: respond",
        &[
            &"psi",
            &"offline",
            &"respond",
            &"--home",
            &home_b,
            &"--in",
            &p("3-round1.psi"),
            &"--out",
            &p("4-round2.psi"),
        ],
    )?;
    r.sotto(
        "a: finish",
        &[
            &"psi",
            &"offline",
            &"finish",
            &"--home",
            &home_a,
            &"--in",
            &p("4-round2.psi"),
            &"--output",
            &p("bank-a.matched.csv"),
            &"--report",
            &p("bank-a.report.json"),
            &"--close",
            &p("5-close.psi"),
        ],
    )?;
    let (output, flag): (PathBuf, Vec<String>) = if v.aligned {
        (p("bank-b.matched.csv"), Vec::new())
    } else {
        (
            p("bank-b.flagged.csv"),
            vec!["--flag-column".into(), "shared".into()],
        )
    };
    sotto_with(
        r,
        "b: finish",
        &[
            &"psi",
            &"offline",
            &"finish",
            &"--home",
            &home_b,
            &"--in",
            &p("5-close.psi"),
            &"--output",
            &output,
            &"--report",
            &p("bank-b.report.json"),
        ],
        &flag,
    )?;
    Ok(ProviderRows {
        report: p("bank-b.report.json"),
        file: output,
        key_column: "customer_email",
        flag_column: (!v.aligned).then_some("shared"),
    })
}

fn online_exchange(r: &mut Runner, dir: &Path, mode: &str, v: &Variant) -> Result<ProviderRows> {
    let p = |name: &str| dir.join(v.name(name));
    let out_dir = p("bank-b.results");
    std::fs::create_dir_all(&out_dir)?;
    let mut provider_flags = vec![
        "--id".to_owned(),
        "customer_email".into(),
        "--casefold".into(),
    ];
    provider_flags.extend(v.provider());
    let provider_flags: Vec<&str> = provider_flags.iter().map(String::as_str).collect();
    let (provider, address) = start_provider(
        &r.exe,
        &provider_flags,
        &dir.join("bank-b"),
        &dir.join("bank-b.csv"),
        Some(&out_dir),
    )?;
    if !r.quiet {
        println!("  [b: serve] listening on {address}");
    }
    sotto_with(
        r,
        "a: run",
        &[
            &"psi",
            &"run",
            &"--home",
            &dir.join("bank-a"),
            &"--peer",
            &"bank-b",
            &"--connect",
            &address,
            &"--input",
            &dir.join("bank-a.csv"),
            &"--id",
            &"email",
            &"--casefold",
            &"--output",
            &p("bank-a.matched.csv"),
            &"--report",
            &p("bank-a.report.json"),
        ],
        &v.session(mode),
    )?;
    drop(provider);
    let in_results = |ending: &str| {
        std::fs::read_dir(&out_dir)
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|path| path.to_string_lossy().ends_with(ending))
    };
    Ok(ProviderRows {
        file: in_results(".csv").context("the provider wrote no result")?,
        report: in_results(".report.json").context("the provider wrote no report")?,
        key_column: "customer_email",
        flag_column: None,
    })
}

/// The second step of the demo: an aligned session, whose two outputs must
/// hold the shared customers in the same order, one row each, with equal
/// signed digests.
fn check_aligned(
    r: &mut Runner,
    dir: &Path,
    truth: &Truth,
    provider: &ProviderRows,
) -> Result<usize> {
    let a = read_column(&dir.join("aligned-bank-a.matched.csv"), "email")?;
    let b = read_column(&provider.file, provider.key_column)?;
    let expected: Vec<String> = truth.shared_keys.iter().cloned().collect();
    ensure!(
        a == expected,
        "bank-a's aligned output is not the shared customers in ascending order"
    );
    ensure!(
        b == a,
        "bank-b's aligned output does not line up with bank-a's row for row"
    );
    r.sotto(
        "verify-alignment",
        &[
            &"psi",
            &"verify-alignment",
            &"--report",
            &dir.join("aligned-bank-a.report.json"),
            &"--peer-report",
            &provider.report,
        ],
    )?;
    Ok(a.len())
}

fn check(dir: &Path, truth: &Truth, provider: &ProviderRows) -> Result<()> {
    let a_rows = read_column(&dir.join("bank-a.matched.csv"), "email")?;
    let a_keys: BTreeSet<String> = a_rows.iter().cloned().collect();
    ensure!(
        a_keys == truth.shared_keys,
        "bank-a's matched keys differ from the truth ({} vs {})",
        a_keys.len(),
        truth.shared_keys.len()
    );
    ensure!(
        a_rows.len() as u64 == truth.requester_rows,
        "bank-a got {} rows, expected {}",
        a_rows.len(),
        truth.requester_rows
    );
    let keys = read_column(&provider.file, provider.key_column)?;
    let shared: BTreeSet<String> = match provider.flag_column {
        Some(flag) => {
            let flags = read_column(&provider.file, flag)?;
            keys.iter()
                .zip(&flags)
                .filter(|(_, f)| *f == "true")
                .map(|(k, _)| k.clone())
                .collect()
        }
        None => keys.iter().cloned().collect(),
    };
    ensure!(
        shared == truth.shared_keys,
        "bank-b's matched keys differ from the truth"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("bank-a.report.json"))?)?;
    ensure!(
        report["intersection"]["distinct_keys"].as_u64() == Some(truth.shared_keys.len() as u64),
        "bank-a's report states a different intersection size"
    );
    Ok(())
}
