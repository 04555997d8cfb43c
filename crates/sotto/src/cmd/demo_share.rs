//! `sotto demo share`: three providers with different columns about
//! overlapping customers share a dataset through the privacy ledger. Each
//! publishes additive shares of its table, one sealed to each provider's
//! enclave; a fusion before every provider has published is refused naming
//! the missing one; a second publication of the same version is refused by
//! the ledger; every provider fuses its share; a logistic model is
//! registered on the ledger and an altered copy of it refused, and an ONNX
//! tree ensemble (generated here) registered too; the shares, unsealed by
//! the demo, add up to the joint table built from the three CSV files and
//! the model's score on shares equals the plaintext score for every
//! customer; then the providers serve inference and outside users score
//! through the gateway (`demo_infer`); and no file a ledger node, provider
//! or the gateway wrote holds a customer id.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use sotto_agg::fixed;
use sotto_node::NodeHome;
use sotto_onnx::{Node, TreeEnsemble};
use sotto_share::model::LinearModel;
use sotto_share::Declaration;
use sotto_tee::software::{PlatformKey, SoftwareEnclave};

use super::demo_ledger::{files_of, start_site_with, Site};
use super::setup::Runner;
use super::share::{fused_path, keys_from_center};

/// The providers, in declaration order.
pub const PROVIDERS: [&str; 3] = ["lender", "telecom", "insurer"];
/// The enclave group's members besides the ledger's: the providers and
/// the gateway.
const MEMBERS: [&str; 4] = ["lender", "telecom", "insurer", "gateway"];
/// Customers in the demo's universe; each provider has a different subset.
const CUSTOMERS: u64 = 300;

/// The demo's model: a logistic credit score over all three providers'
/// columns (and whether the insurer knows the customer).
pub const MODEL: &str = r#"{
  "format": 1,
  "name": "credit-score",
  "version": 1,
  "kind": "logistic",
  "dataset": "credit-features",
  "intercept": "-1.25",
  "features": [
    {"column": "lender.debt", "weight": "0.00002"},
    {"column": "lender.loans", "weight": "-0.3"},
    {"column": "telecom.tenure_months", "weight": "0.01"},
    {"column": "insurer.premium", "weight": "0.0004"},
    {"column": "insurer.present", "weight": "0.5"}
  ]
}"#;

/// The joint columns the demo's tree ensemble reads, in input order.
const TREE_FEATURES: [&str; 5] = [
    "lender.debt",
    "lender.loans",
    "telecom.tenure_months",
    "insurer.premium",
    "insurer.present",
];

/// The demo's general model: three small trees (a gradient-boosted
/// classifier's shape), generated here rather than downloaded.
pub fn tree_model() -> TreeEnsemble {
    let branch = |feature, threshold, yes, no| Node::Branch {
        feature,
        threshold,
        yes,
        no,
    };
    let leaf = |weight| Node::Leaf { weight };
    TreeEnsemble {
        features: TREE_FEATURES.len(),
        trees: vec![
            vec![
                branch(0, 20_000.0, 1, 2),
                branch(2, 120.0, 3, 4),
                leaf(-1.1),
                leaf(-0.4),
                leaf(0.3),
            ],
            vec![branch(1, 2.5, 1, 2), leaf(0.5), leaf(-0.6)],
            vec![
                branch(3, 50_000.0, 1, 2),
                leaf(0.25),
                branch(4, 0.5, 3, 4),
                leaf(-0.2),
                leaf(0.15),
            ],
        ],
    }
}

/// The tree's input from a joint row in clear: each feature at its
/// declared scale, as the gateway's enclave decodes it.
pub fn tree_input(declaration: &Declaration, row: &[u64]) -> Vec<f32> {
    let names = declaration.column_names();
    let scales = declaration.column_scales();
    TREE_FEATURES
        .iter()
        .map(|f| {
            let c = names.iter().position(|n| n == f).unwrap_or(0);
            ((row[c] as i64) as f64 / scales[c] as f64) as f32
        })
        .collect()
}

/// Writes the tree ensemble as ONNX and its descriptor; returns the
/// descriptor's path.
fn write_tree(dir: &Path) -> Result<std::path::PathBuf> {
    std::fs::write(dir.join("credit-tree.onnx"), tree_model().to_onnx())?;
    let descriptor = serde_json::json!({
        "format": 1, "name": "credit-tree", "version": 1, "kind": "onnx",
        "dataset": "credit-features", "file": "credit-tree.onnx",
        "features": TREE_FEATURES,
    });
    let path = dir.join("credit-tree.json");
    std::fs::write(&path, serde_json::to_string_pretty(&descriptor)?)?;
    Ok(path)
}

const DECLARATION: &str = r#"format = 1
dataset = "credit-features"
version = 1

[[provider]]
name = "lender"
[[provider.column]]
name = "debt"
scale = 100
min = "-1000000"
max = "1000000"
[[provider.column]]
name = "loans"
scale = 1
min = "0"
max = "100"

[[provider]]
name = "telecom"
[[provider.column]]
name = "tenure_months"
scale = 1
min = "0"
max = "600"

[[provider]]
name = "insurer"
[[provider.column]]
name = "claims"
scale = 1
min = "0"
max = "50"
[[provider.column]]
name = "premium"
scale = 100
min = "0"
max = "100000"
"#;

fn customer(i: u64) -> String {
    format!("cust-{i:05}")
}

/// Provider `p`'s rows among `customers`: (customer, values at the
/// declared scales).
fn rows(p: usize, customers: u64) -> Vec<(String, Vec<i64>)> {
    let has = |i: u64| match p {
        0 => !i.is_multiple_of(3),
        1 => i.is_multiple_of(2),
        _ => i % 5 != 1,
    };
    (0..customers)
        .filter(|&i| has(i))
        .map(|i| {
            let n = i as i64;
            let values = match p {
                0 => vec![(n * 7919) % 20_000_000 - 5_000_000, n % 7],
                1 => vec![(n * 13) % 600],
                _ => vec![n % 4, (n * 3719) % 10_000_000],
            };
            (customer(i), values)
        })
        .collect()
}

/// The providers' side of a running site: the declaration and tables in
/// the work directory, and `sotto share` run as each provider.
pub struct Sharing<'a> {
    dir: &'a Path,
    declaration_path: std::path::PathBuf,
    /// The agreed declaration.
    pub declaration: Declaration,
    compute: Vec<String>,
    center: String,
    customers: u64,
}

impl<'a> Sharing<'a> {
    /// Writes the declaration and each provider's table (among `customers`).
    pub fn new(dir: &'a Path, site: &Site, customers: u64) -> Result<Self> {
        let declaration_path = dir.join("dataset.toml");
        std::fs::write(&declaration_path, DECLARATION)?;
        let declaration = Declaration::read(&declaration_path)?;
        let sharing = Self {
            dir,
            declaration_path,
            declaration,
            compute: site.compute.clone(),
            center: site.center.1.clone(),
            customers,
        };
        for p in 0..PROVIDERS.len() {
            sharing.write_table(p)?;
        }
        Ok(sharing)
    }

    fn table_path(&self, p: usize) -> std::path::PathBuf {
        self.dir.join(format!("{}.csv", PROVIDERS[p]))
    }

    /// Writes provider `p`'s table as CSV at the declared scales.
    fn write_table(&self, p: usize) -> Result<()> {
        let columns = &self.declaration.providers[p].columns;
        let mut text = String::from("id");
        for c in columns {
            text += &format!(",{}", c.name);
        }
        text.push('\n');
        for (id, values) in rows(p, self.customers) {
            text += &id;
            for (c, v) in columns.iter().zip(values) {
                text += &format!(",{}", fixed::format(v, c.scale));
            }
            text.push('\n');
        }
        std::fs::write(self.table_path(p), text)?;
        Ok(())
    }

    /// The arguments of `sotto COMMAND VERB` as `home`, with the ledger
    /// options every `share`, `model` or `gateway` call takes.
    pub fn args(&self, command: &str, verb: &str, home: &str, extra: &[OsString]) -> Vec<OsString> {
        let mut all: Vec<OsString> = vec![
            command.into(),
            verb.into(),
            "--home".into(),
            self.dir.join(home).into(),
            "--genesis".into(),
            self.dir.join("block0.bin").into(),
            "--target".into(),
            "b1".into(),
            "--declaration".into(),
            self.declaration_path.clone().into(),
        ];
        for c in &self.compute {
            all.extend(["--compute".into(), c.into()]);
        }
        all.extend_from_slice(extra);
        all
    }

    /// Runs `sotto COMMAND VERB` (`share ...` or `model ...`) as provider
    /// `home`.
    fn run(
        &self,
        r: &mut Runner,
        command: &str,
        verb: &str,
        home: &str,
        extra: &[OsString],
    ) -> Result<String> {
        let all = self.args(command, verb, home, extra);
        let parts: Vec<&dyn AsRef<std::ffi::OsStr>> = all
            .iter()
            .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
            .collect();
        r.sotto(&format!("{home} {command} {verb}"), &parts)
    }

    fn share(&self, r: &mut Runner, verb: &str, home: &str, extra: &[OsString]) -> Result<String> {
        self.run(r, "share", verb, home, extra)
    }

    /// Provider `p` publishes its table.
    pub fn publish(&self, r: &mut Runner, p: usize) -> Result<String> {
        let extra = [
            OsString::from("--center-connect"),
            self.center.clone().into(),
            "--table".into(),
            self.table_path(p).into(),
        ];
        self.share(r, "publish", PROVIDERS[p], &extra)
    }

    /// Provider `p` fuses its share.
    pub fn fuse(&self, r: &mut Runner, p: usize) -> Result<String> {
        let extra = [
            OsString::from("--platform-key"),
            self.dir.join("platform.key").into(),
        ];
        self.share(r, "fuse", PROVIDERS[p], &extra)
    }

    /// Runs `sotto model VERB --model FILE` as provider `p`.
    pub fn model(&self, r: &mut Runner, verb: &str, p: usize, file: &Path) -> Result<String> {
        let extra = [OsString::from("--model"), file.into()];
        self.run(r, "model", verb, PROVIDERS[p], &extra)
    }

    /// The status as provider `p` sees it.
    pub fn status(&self, r: &mut Runner, p: usize) -> Result<String> {
        self.share(r, "status", PROVIDERS[p], &[])
    }
}

/// Runs the demo in `dir`.
pub fn run(dir: &Path, quiet: bool) -> Result<()> {
    println!("sotto demo share: 3 providers share a dataset through the privacy ledger (software enclaves: NOT hardware-protected)");
    let mut r = Runner::new(quiet)?;
    let site = start_site_with(&mut r, dir, &MEMBERS)?;
    println!("  providers lender, telecom and insurer and the gateway registered with the center (identical code) and named as ledger clients");
    let sharing = Sharing::new(dir, &site, CUSTOMERS)?;
    let declaration = &sharing.declaration;
    for p in 0..2 {
        println!("  {}", sharing.publish(&mut r, p)?.trim());
    }
    match sharing.fuse(&mut r, 2) {
        Ok(out) => bail!("a fusion before every provider published succeeded: {out}"),
        Err(e) => {
            let reason = e.to_string();
            ensure!(
                reason.contains("fragments missing from insurer (nothing received)"),
                "the early fusion failed for another reason: {reason}"
            );
            println!("  insurer tried to fuse before it had published: refused, fragments missing from insurer");
        }
    }
    println!("  {}", sharing.publish(&mut r, 2)?.trim());
    match sharing.publish(&mut r, 0) {
        Ok(out) => bail!("a second publication of the same version was accepted: {out}"),
        Err(e) => {
            ensure!(
                e.to_string()
                    .contains("is already posted; a chunk is written once"),
                "the second publication failed for another reason: {e}"
            );
            println!("  lender published version 1 again: refused by the ledger, a chunk is written once");
        }
    }
    let status = sharing.status(&mut r, 1)?;
    ensure!(
        status.contains("every provider's fragments are posted"),
        "status after every publication: {status}"
    );
    println!("  status: every provider's fragments of credit-features v1 are posted (9 fragments)");
    for p in 0..PROVIDERS.len() {
        println!("  {}", sharing.fuse(&mut r, p)?.trim());
    }
    let model_path = dir.join("model.json");
    std::fs::write(&model_path, MODEL)?;
    println!(
        "  {}",
        sharing.model(&mut r, "register", 0, &model_path)?.trim()
    );
    println!(
        "  {}",
        sharing.model(&mut r, "check", 1, &model_path)?.trim()
    );
    let altered = dir.join("model-altered.json");
    std::fs::write(&altered, MODEL.replace("\"0.01\"", "\"0.02\""))?;
    match sharing.model(&mut r, "check", 2, &altered) {
        Ok(out) => bail!("an altered model passed the check: {out}"),
        Err(e) => {
            ensure!(
                e.to_string()
                    .contains("does not match its registration on the ledger"),
                "the altered model was refused for another reason: {e}"
            );
            println!("  a model file with one weight changed: refused, its digest is not the registered one");
        }
    }
    let unregistered = dir.join("model-v2.json");
    std::fs::write(
        &unregistered,
        MODEL.replace("\"version\": 1", "\"version\": 2"),
    )?;
    match sharing.model(&mut r, "check", 2, &unregistered) {
        Ok(out) => bail!("an unregistered model version passed the check: {out}"),
        Err(e) => {
            ensure!(
                e.to_string()
                    .contains("model credit-score version 2 is not registered"),
                "the unregistered model was refused for another reason: {e}"
            );
            println!("  a model version nobody registered: refused, the ledger has no registration for it");
        }
    }
    match sharing.model(&mut r, "register", 1, &model_path) {
        Ok(out) => bail!("a model version was registered twice: {out}"),
        Err(e) => ensure!(
            e.to_string().contains("is already registered"),
            "the second registration failed for another reason: {e}"
        ),
    }
    let tree_path = write_tree(dir)?;
    println!(
        "  {}",
        sharing.model(&mut r, "register", 1, &tree_path)?.trim()
    );
    let model = sotto_share::model::LinearModel::parse(&model_path, MODEL, declaration)?;
    let checked = check_shares(dir, declaration, &site.center.1, CUSTOMERS, &model)?;
    println!("  the three fused shares, unsealed by the demo, add up to the joint table of the three CSV files: {checked} customers x {} columns, exact", declaration.width());
    println!("  the credit-score model on the shares (each provider's w·s added up) equals the plaintext score for all {checked} customers");
    let inference = super::demo_infer::run(&mut r, dir, &site, &sharing, CUSTOMERS)?;
    super::demo_infer::measure(&mut r, dir, &inference.gateway.1)?;
    super::demo_infer::provider_faults(&mut r, dir, &site, &sharing, &inference)?;
    drop(inference);
    drop(site);
    let scanned = scan(dir)?;
    println!("  no customer id in any of the {scanned} files the orderers, endorsers, business nodes and providers' homes hold (raw, hex or base64)");
    println!("  checked: shares add up to the joint table; scores on shares and through the gateway (logistic and ONNX) equal the plaintext ones; a missing provider, a second publication, an altered model, no credentials, a made-up token, an unknown model, a user over its rate, a silent provider and a revoked provider refused; no id in clear at rest");
    Ok(())
}

/// Unseals every provider's fused share and compares their sum with the
/// joint table of the CSV files; returns the number of customers.
pub fn check_shares(
    dir: &Path,
    declaration: &Declaration,
    center: &str,
    customers: u64,
    model: &LinearModel,
) -> Result<usize> {
    let enclave = SoftwareEnclave::current(PlatformKey::read(&dir.join("platform.key"))?)?;
    let home = NodeHome::open(&dir.join("lender"))?;
    let tagger = super::psi::runtime()?
        .block_on(keys_from_center(&home, "center", center, declaration))?
        .1;
    let truth: BTreeMap<[u8; 32], Vec<u64>> = joint_rows(declaration, customers)?
        .into_iter()
        .map(|(id, row)| (tagger.tag(&declaration.dataset, &id), row))
        .collect();
    let width = declaration.width();
    let mut sum: BTreeMap<[u8; 32], Vec<u64>> = BTreeMap::new();
    let mut partials: BTreeMap<[u8; 32], u64> = BTreeMap::new();
    for provider in PROVIDERS {
        let path = fused_path(&dir.join(provider), declaration);
        let sealed = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let share = sotto_share::at_rest::unseal(&enclave, declaration, &sealed)?;
        for tag in truth.keys() {
            let partial = model.partial(&share, tag).unwrap_or(0);
            let acc = partials.entry(*tag).or_default();
            *acc = acc.wrapping_add(partial);
        }
        for (tag, row) in share.rows() {
            let acc = sum.entry(*tag).or_insert_with(|| vec![0; width]);
            for (a, v) in acc.iter_mut().zip(row) {
                *a = a.wrapping_add(*v);
            }
        }
    }
    ensure!(
        sum.len() == truth.len(),
        "the shares cover {} customers, the tables {}",
        sum.len(),
        truth.len()
    );
    for (tag, row) in &truth {
        ensure!(
            sum.get(tag) == Some(row),
            "customer {}: the shares add up to {:?}, the tables say {row:?}",
            hex::encode(&tag[..8]),
            sum.get(tag)
        );
        let on_shares = model.score(partials.get(tag).copied().unwrap_or(0));
        let in_clear = clear_score(declaration, row);
        ensure!(
            (on_shares - in_clear).abs() < 1e-9,
            "customer {}: the model scores {on_shares} on shares, {in_clear} in clear",
            hex::encode(&tag[..8])
        );
    }
    Ok(truth.len())
}

/// The joint table of the providers' CSV files by customer id, every
/// column at its declared scale and each provider's presence bit.
pub fn joint_rows(declaration: &Declaration, customers: u64) -> Result<BTreeMap<String, Vec<u64>>> {
    let width = declaration.width();
    let mut joint: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for p in 0..PROVIDERS.len() {
        let (offset, slot) = declaration.slot(p).context("slot")?;
        for (id, values) in rows(p, customers) {
            let row = joint.entry(id).or_insert_with(|| vec![0; width]);
            for (k, v) in values.iter().enumerate() {
                row[offset + k] = *v as u64;
            }
            row[offset + slot - 1] = 1;
        }
    }
    Ok(joint)
}

/// The demo model's score computed in floating point from a joint row in
/// clear (values at their declared scales).
pub fn clear_score(declaration: &Declaration, row: &[u64]) -> f64 {
    let value = |p: usize, c: usize| {
        let (offset, _) = declaration.slot(p).unwrap_or((0, 0));
        let scale = declaration.providers[p]
            .columns
            .get(c)
            .map_or(1.0, |c| c.scale as f64);
        row[offset + c] as i64 as f64 / scale
    };
    let z = -1.25 + 0.00002 * value(0, 0) - 0.3 * value(0, 1)
        + 0.01 * value(1, 0)
        + 0.0004 * value(2, 1)
        + 0.5 * value(2, 2);
    1.0 / (1.0 + (-z).exp())
}

/// Scans every file under the ledger nodes' and providers' homes for the
/// demo's customer ids; returns how many files it read.
fn scan(dir: &Path) -> Result<usize> {
    let nodes: Vec<&str> = ["o1", "o2", "o3", "e1", "e2", "e3", "b1", "b2", "c1", "c2"]
        .into_iter()
        .chain(MEMBERS)
        .collect();
    let files = files_of(dir, &nodes)?;
    for path in &files {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        for i in [1, 2, 4, 10, 150, 299] {
            let id = customer(i);
            if let Some(encoding) = sotto_node::leaks::leaked_encoding(&bytes, id.as_bytes()) {
                bail!("{} holds {id} in clear ({encoding})", path.display());
            }
        }
    }
    Ok(files.len())
}
