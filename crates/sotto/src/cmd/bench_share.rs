//! `sotto bench share`: what the providers' enclaves compute to share a
//! dataset, in this process, at the spec's size (3 providers x 10^6
//! customers x 10 columns each): tagging and splitting every table, sealing
//! every fragment in chunks, and at each provider opening its chunks and
//! fusing them. With `--through-ledger`, the whole path instead: the
//! demo's site with every role a process, each provider's `share publish`
//! (every chunk a ledger transaction) and `share fuse`, timed, and the
//! shares checked against the tables.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use clap::Args;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sotto_crypto::hpke::HpkeSecretKey;
use sotto_crypto::secret::SecretBytes;
use sotto_share::fragment::DEFAULT_CHUNK_ROWS;
use sotto_share::{open_chunk, seal_fragment, split, Declaration, Fuser, IdTagger, SealedChunk};

use super::demo_ledger::start_site_with;
use super::demo_share::{check_shares, Sharing, PROVIDERS};
use super::setup::Runner;

/// Arguments of `sotto bench share`.
#[derive(Args)]
pub struct ShareBenchArgs {
    /// Customers per provider (neighbouring providers share half of them);
    /// with --through-ledger, customers in all.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Columns per provider.
    #[arg(long, default_value_t = 10, conflicts_with = "through_ledger")]
    columns: usize,
    /// Providers.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(2..=16), conflicts_with = "through_ledger")]
    providers: u8,
    /// Timed runs (the median is reported).
    #[arg(long, default_value_t = 3, conflicts_with = "through_ledger")]
    runs: u32,
    /// Through the ledger: the demo's three providers (lender 2 columns,
    /// telecom 1, insurer 2) with --rows customers in all, as processes.
    #[arg(long)]
    through_ledger: bool,
}

fn declaration(providers: usize, columns: usize) -> Result<Declaration> {
    let mut text = String::from("format = 1\ndataset = \"bench\"\nversion = 1\n");
    for p in 0..providers {
        text += &format!("[[provider]]\nname = \"p{p}\"\n");
        for c in 0..columns {
            text += &format!(
                "[[provider.column]]\nname = \"c{c}\"\nscale = 100\nmin = \"-1000000\"\nmax = \"1000000\"\n"
            );
        }
    }
    Ok(Declaration::parse(
        std::path::Path::new("bench.toml"),
        &text,
    )?)
}

/// Provider `p`'s table: ids p*rows/2 .. p*rows/2 + rows, so neighbours
/// overlap by half.
fn table(p: u64, rows: u64, columns: usize, rng: &mut ChaCha20Rng) -> Vec<(String, Vec<i64>)> {
    let first = p * rows / 2;
    (first..first + rows)
        .map(|i| {
            let values = (0..columns)
                .map(|_| (rng.next_u64() % 200_000_001) as i64 - 100_000_000)
                .collect();
            (format!("customer-{i:010}"), values)
        })
        .collect()
}

struct Timing {
    split: Duration,
    seal: Duration,
    fuse: Duration,
    chunks: usize,
    customers: usize,
}

fn one_run(
    args: &ShareBenchArgs,
    declaration: &Declaration,
    keys: &[HpkeSecretKey],
) -> Result<Timing> {
    let providers = declaration.providers.len();
    let tagger = IdTagger::new(SecretBytes::new([5; 32]));
    let mut rng = ChaCha20Rng::from_rng(rand::rngs::OsRng)?;
    let mut inbox: Vec<Vec<SealedChunk>> = vec![Vec::new(); providers];
    let (mut split_time, mut seal_time) = (Duration::ZERO, Duration::ZERO);
    for p in 0..providers {
        let rows = table(p as u64, args.rows, args.columns, &mut rng);
        let name = &declaration.providers[p].name;
        let started = Instant::now();
        let fragments = split(
            declaration,
            name,
            rows.iter().map(|(id, v)| (id.as_str(), v.as_slice())),
            &tagger,
            &mut rng,
        )?;
        split_time += started.elapsed();
        drop(rows);
        let started = Instant::now();
        for (j, fragment) in fragments.iter().enumerate() {
            inbox[j].extend(seal_fragment(
                declaration,
                name,
                &declaration.providers[j].name,
                &keys[j].public(),
                fragment,
                DEFAULT_CHUNK_ROWS,
                &mut rng,
            )?);
        }
        seal_time += started.elapsed();
    }
    let chunks = inbox.iter().map(Vec::len).sum();
    let started = Instant::now();
    let mut customers = 0;
    for (j, chunks) in inbox.into_iter().enumerate() {
        let me = &declaration.providers[j].name;
        let mut fuser = Fuser::new(declaration);
        for chunk in &chunks {
            fuser.add(open_chunk(declaration, me, &keys[j], chunk)?)?;
        }
        drop(chunks);
        customers = fuser.finish()?.len();
    }
    Ok(Timing {
        split: split_time,
        seal: seal_time,
        fuse: started.elapsed(),
        chunks,
        customers,
    })
}

/// Publishes and fuses through a running ledger; prints the times.
fn through_ledger(args: &ShareBenchArgs) -> Result<()> {
    let temp = tempfile::Builder::new()
        .prefix("sotto-bench-share-")
        .tempdir()?;
    let dir = temp.path();
    let mut r = Runner::new(true)?;
    let site = start_site_with(&mut r, dir, &PROVIDERS)?;
    let sharing = Sharing::new(dir, &site, args.rows)?;
    let mut phases = Vec::new();
    for verb in ["publish", "fuse"] {
        let started = Instant::now();
        for (p, provider) in PROVIDERS.iter().enumerate() {
            let one = Instant::now();
            let out = if verb == "publish" {
                sharing.publish(&mut r, p)?
            } else {
                sharing.fuse(&mut r, p)?
            };
            let rss = out
                .rsplit_once('(')
                .map_or("", |(_, tail)| tail.trim().trim_end_matches(')'));
            println!(
                "  {provider} {verb}: {:.2} s, {rss}",
                one.elapsed().as_secs_f64()
            );
        }
        phases.push(started.elapsed());
    }
    let model = sotto_share::model::LinearModel::parse(
        std::path::Path::new("model.json"),
        super::demo_share::MODEL,
        &sharing.declaration,
    )?;
    let customers = check_shares(dir, &sharing.declaration, &site.center.1, args.rows, &model)?;
    println!(
        "through the ledger, {customers} customers (lender 2 columns, telecom 1, insurer 2): publish {:.2} s, fuse {:.2} s, one provider after another; shares checked against the tables",
        phases[0].as_secs_f64(),
        phases[1].as_secs_f64()
    );
    Ok(())
}

/// Runs the benchmark.
pub fn run(args: &ShareBenchArgs) -> Result<()> {
    ensure!(
        args.rows > 0 && args.columns > 0,
        "--rows and --columns must be positive"
    );
    if args.through_ledger {
        return through_ledger(args);
    }
    let providers = usize::from(args.providers);
    let declaration = declaration(providers, args.columns)?;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let keys: Vec<HpkeSecretKey> = (0..providers)
        .map(|_| HpkeSecretKey::generate(&mut rng).0)
        .collect();
    let mut totals = Vec::new();
    for run in 1..=args.runs.max(1) {
        let t = one_run(args, &declaration, &keys)?;
        let total = t.split + t.seal + t.fuse;
        println!(
            "run {run}: {:.2} s (split {:.2} s, seal {:.2} s, open and fuse {:.2} s); {} chunks, {} customers in the joint table",
            total.as_secs_f64(),
            t.split.as_secs_f64(),
            t.seal.as_secs_f64(),
            t.fuse.as_secs_f64(),
            t.chunks,
            t.customers
        );
        totals.push(total);
    }
    totals.sort();
    let median = totals[totals.len() / 2];
    let per_provider = median / u32::from(args.providers);
    println!(
        "{} providers x {} customers x {} columns: median {:.2} s for every provider's work in one process, {:.2} s per provider; peak RSS of this process (all providers' data at once) {} MiB",
        args.providers,
        args.rows,
        args.columns,
        median.as_secs_f64(),
        per_provider.as_secs_f64(),
        sotto_node::process::peak_rss_bytes(None).unwrap_or(0) >> 20
    );
    Ok(())
}
