//! `sotto demo ledger`: the privacy ledger with every role a process on
//! loopback. Two banks record loans and repayments through the credit
//! contract; every exposure query is checked against the plaintext truth;
//! a business node is killed, misses blocks, and catches up; b1 keeps its
//! records sealed, b2 (plaintext mode) in clear and serves them over load
//! channels; transactions with faulty endorsements or a forged TEE
//! signature are ordered and get their codes at both nodes; a revoked
//! compute enclave's packets are refused by the endorsers, and one it made
//! before its revocation is marked ENCLAVE_NOT_MEMBER.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, ensure, Context, Result};
use sotto_node::NodeHome;

use super::ledger_drills;
use super::setup::{Runner, ServerProcess};

const CUSTOMERS: [&str; 3] = ["customer-0001", "customer-0002", "customer-0003"];

const NODES: [&str; 13] = [
    "center", "o1", "o2", "o3", "e1", "e2", "e3", "b1", "b2", "c1", "c2", "bank-a", "bank-b",
];

/// The orderers, one Raft group.
const ORDERERS: [&str; 3] = ["o1", "o2", "o3"];

/// Ports for the addresses block 0 fixes are picked below Linux's
/// ephemeral range (32768-60999): a port from that range may meanwhile
/// become the local end of one of the demo's own outgoing connections
/// (a Raft peer dialling out) before its server binds it.
const FIXED_PORTS: std::ops::Range<u16> = 20_000..32_000;

fn free_address() -> Result<String> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(FIXED_PORTS);
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return Ok(listener.local_addr()?.to_string());
        }
    }
    bail!(
        "no free port on 127.0.0.1 between {} and {}",
        FIXED_PORTS.start,
        FIXED_PORTS.end
    )
}

fn args(items: &[&dyn AsRef<std::ffi::OsStr>]) -> Vec<OsString> {
    items.iter().map(|a| a.as_ref().to_owned()).collect()
}

fn refs(items: &[OsString]) -> Vec<&dyn AsRef<std::ffi::OsStr>> {
    items
        .iter()
        .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
        .collect()
}

/// The genesis text for the demo's homes and addresses; `providers` are
/// data-sharing providers (clients calling the `fragments` contract).
fn genesis_text(
    dir: &Path,
    addresses: &BTreeMap<&str, String>,
    providers: &[&str],
) -> Result<String> {
    let identity = |name: &str| -> Result<String> {
        Ok(hex::encode(
            NodeHome::open(&dir.join(name))?
                .identity()
                .public()
                .to_bytes(),
        ))
    };
    let ca = sotto_net::tls::TlsMaterial::load(&NodeHome::open(&dir.join("b1"))?)?.ca_sha256()?;
    let mut text = format!(
        "format = 1\nname = \"credit-demo\"\ncreated = {}\nca_sha256 = \"{}\"\n\n[center]\nname = \"center\"\nidentity = \"{}\"\n\n[blocks]\nmax_transactions = 200\ntimeout_ms = 20\n",
        sotto_node::clock::unix_now(),
        hex::encode(ca),
        identity("center")?
    );
    let node = |section: &str, name: &str, org: &str, extra: &str| -> Result<String> {
        let address = addresses
            .get(name)
            .map(|a| format!("address = \"{a}\"\n"))
            .unwrap_or_default();
        Ok(format!(
            "\n[[{section}]]\nname = \"{name}\"\norg = \"{org}\"\nidentity = \"{}\"\n{address}{extra}",
            identity(name)?
        ))
    };
    for name in ORDERERS {
        text += &node("orderer", name, "ops", "")?;
    }
    for (name, org) in [("e1", "ops"), ("e2", "audit"), ("e3", "risk")] {
        text += &node("endorser", name, org, "")?;
    }
    text += &node("business", "b1", "consortium", "mode = \"ciphertext\"\n")?;
    text += &node("business", "b2", "bank-b", "mode = \"plaintext\"\n")?;
    text += &node("client", "bank-a", "bank-a", "")?;
    text += &node("client", "bank-b", "bank-b", "")?;
    text += "\n[[contract]]\nname = \"credit\"\nversion = 1\npolicy = \"OutOf(2, 'e1', 'e2', 'e3')\"\ncallers = [\"bank-a\", \"bank-b\"]\n";
    text += "\n[[contract]]\nname = \"kv\"\nversion = 1\npolicy = \"OutOf(2, 'e1', 'e2', 'e3')\"\ncallers = [\"bank-a\", \"bank-b\"]\n";
    for name in providers {
        text += &node("client", name, name, "")?;
    }
    if !providers.is_empty() {
        let callers = providers
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(", ");
        for contract in ["fragments", "models", "queries"] {
            text += &format!("\n[[contract]]\nname = \"{contract}\"\nversion = 1\npolicy = \"OutOf(2, 'e1', 'e2', 'e3')\"\ncallers = [{callers}]\n");
        }
    }
    Ok(text)
}

/// Creates the CA and every certified home; endorsers, compute nodes and
/// providers pin the registration center.
fn homes(r: &mut Runner, dir: &Path, providers: &[&str]) -> Result<()> {
    let p = |name: &str| dir.join(name);
    r.sotto("ca init", &[&"ca", &"init", &"--dir", &p("consortium-ca")])?;
    for name in NODES.iter().chain(providers) {
        r.sotto(
            &format!("{name} init"),
            &[&"init", &"--home", &p(name), &"--name", &name],
        )?;
        r.sotto(
            &format!("{name} cert"),
            &[
                &"ca",
                &"issue",
                &"--dir",
                &p("consortium-ca"),
                &"--home",
                &p(name),
            ],
        )?;
    }
    let center_profile = p("center.profile.json");
    r.sotto(
        "center export",
        &[
            &"identity",
            &"export",
            &"--home",
            &p("center"),
            &"--out",
            &center_profile,
        ],
    )?;
    for name in ["e1", "e2", "e3", "c1", "c2"].iter().chain(providers) {
        r.sotto(
            &format!("{name} pins center"),
            &[&"peer", &"add", &"--home", &p(name), &center_profile],
        )?;
    }
    Ok(())
}

/// Starts the registration center and registers c1, c2 and the providers;
/// returns the center process and its address.
fn center(r: &mut Runner, dir: &Path, providers: &[&str]) -> Result<(ServerProcess, String)> {
    let p = |name: &str| dir.join(name);
    let key_out = r.sotto(
        "platform key",
        &[&"tee", &"platform-key", &"--out", &p("platform.key")],
    )?;
    let platform = key_out
        .trim()
        .rsplit(' ')
        .next()
        .unwrap_or_default()
        .to_owned();
    let ours = r.sotto("measure", &[&"tee", &"measure"])?.trim().to_owned();
    std::fs::write(
        p("policy.toml"),
        format!(
            "platforms = [\"sgx\", \"tdx\", \"sev-snp\"]\nmeasurements = [\"{ours}\"]\nallow_software = true\nsoftware_platform_keys = [\"{platform}\"]\n"
        ),
    )?;
    let serve = args(&[
        &"registry",
        &"serve",
        &"--listen",
        &"127.0.0.1:0",
        &"--dev",
        &"--home",
        &p("center"),
        &"--policy",
        &p("policy.toml"),
    ]);
    let (process, address) =
        ServerProcess::start(&r.exe, &serve, &p("center.log"), "registration center")?;
    for name in ["c1", "c2"].iter().chain(providers) {
        let register = args(&[
            &"node",
            &"register",
            &"--platform-key",
            &p("platform.key"),
            &"--home",
            &p(name),
            &"--connect",
            &address,
            &"--center",
            &"center",
        ]);
        r.sotto(&format!("{name} register"), &refs(&register))?;
    }
    Ok((process, address))
}

pub fn start(
    r: &Runner,
    dir: &Path,
    what: &str,
    role: &[&str],
    home: &str,
    extra: &[OsString],
) -> Result<(ServerProcess, String)> {
    let mut all: Vec<OsString> = vec!["ledger".into()];
    all.extend(role.iter().map(Into::into));
    all.extend([
        "serve".into(),
        "--home".into(),
        dir.join(home).into(),
        "--genesis".into(),
        dir.join("block0.bin").into(),
    ]);
    all.extend(extra.iter().cloned());
    ServerProcess::start(&r.exe, &all, &dir.join(format!("{home}.log")), what)
}

/// One bank's call through `sotto ledger invoke` or `query`.
struct Bank<'a> {
    dir: &'a Path,
    compute: Vec<String>,
    /// The business nodes named; the first serves the reads.
    targets: [&'static str; 2],
}

impl Bank<'_> {
    fn call(
        &self,
        r: &mut Runner,
        bank: &str,
        verb: &str,
        function: &str,
        json: &str,
    ) -> Result<String> {
        let mut all = args(&[
            &"ledger",
            &verb,
            &"--home",
            &self.dir.join(bank),
            &"--genesis",
            &self.dir.join("block0.bin"),
            &"--contract",
            &"credit",
            &"--function",
            &function,
            &"--args",
            &json,
            &"--target",
            &self.targets[0],
            &"--target",
            &self.targets[1],
        ]);
        for c in &self.compute {
            all.extend(["--compute".into(), c.into()]);
        }
        r.sotto(&format!("{bank} {function}"), &refs(&all))
    }
}

/// Every file under the homes of `nodes`.
pub(crate) fn files_of(dir: &Path, nodes: &[&str]) -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    let mut pending: Vec<std::path::PathBuf> = nodes.iter().map(|n| dir.join(n)).collect();
    while let Some(path) = pending.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path)? {
                pending.push(entry?.path());
            }
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// Scans every file the orderers, the endorsers and the ciphertext-mode
/// business node wrote for the demo's customer and loan ids; returns how
/// many files it read.
fn scan_for_records(dir: &Path, loans: &[(&str, &str, &str, u64)]) -> Result<usize> {
    let files = files_of(dir, &["o1", "o2", "o3", "e1", "e2", "e3", "b1"])?;
    for file in &files {
        let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
        for (_, customer, loan, _) in loans {
            for record in [customer, loan] {
                if let Some(encoding) =
                    sotto_node::leaks::leaked_encoding(&bytes, record.as_bytes())
                {
                    bail!("{} holds {record} in clear ({encoding})", file.display());
                }
            }
        }
    }
    Ok(files.len())
}

/// Every process of a running ledger, stopped when dropped.
pub struct Site {
    /// The registration center and its address.
    pub center: (ServerProcess, String),
    /// The orderers by name (one may be stopped by the demo).
    pub orderers: Vec<(String, Option<ServerProcess>)>,
    /// The endorsers e1-e3.
    pub endorsers: Vec<ServerProcess>,
    /// Business node b1.
    pub b1: ServerProcess,
    /// Business node b2 (stopped and restarted by the demo).
    pub b2: Option<ServerProcess>,
    /// The compute enclaves c1 and c2.
    pub compute_processes: Vec<ServerProcess>,
    /// The compute enclaves as NAME@HOST:PORT.
    pub compute: Vec<String>,
}

/// Sets up the consortium in `dir` (CA, homes, registration center with c1
/// and c2 admitted, block 0) and starts every role; returns once the
/// compute group's membership is on the chain.
pub fn start_site(r: &mut Runner, dir: &Path) -> Result<Site> {
    start_site_with(r, dir, &[])
}

/// [`start_site`] with data-sharing providers: each a client of the ledger
/// (calling the `fragments` contract) and a registered enclave member.
pub fn start_site_with(r: &mut Runner, dir: &Path, providers: &[&str]) -> Result<Site> {
    let p = |name: &str| dir.join(name);
    homes(r, dir, providers)?;
    let (center_process, center_address) = center(r, dir, providers)?;
    println!("  registration center up; compute enclaves c1 and c2 admitted (identical code)");
    let mut addresses = BTreeMap::new();
    for name in ["o1", "o2", "o3", "e1", "e2", "e3", "b1", "b2"] {
        addresses.insert(name, free_address()?);
    }
    std::fs::write(p("genesis.toml"), genesis_text(dir, &addresses, providers)?)?;
    let out = r.sotto(
        "genesis",
        &[
            &"ledger",
            &"genesis",
            &"--config",
            &p("genesis.toml"),
            &"--output",
            &p("block0.bin"),
        ],
    )?;
    println!("  {}", out.trim());
    let center_arg = [
        OsString::from("--center-connect"),
        center_address.clone().into(),
    ];
    let orderers = ORDERERS
        .iter()
        .map(|o| {
            Ok((
                (*o).to_owned(),
                Some(start(r, dir, "orderer", &["orderer"], o, &[])?.0),
            ))
        })
        .collect::<Result<_>>()?;
    let endorsers: Vec<_> = ["e1", "e2", "e3"]
        .iter()
        .map(|e| start(r, dir, "endorser", &["endorser"], e, &center_arg))
        .collect::<Result<_>>()?;
    let b1 = start(r, dir, "business node", &["peer"], "b1", &[])?;
    let b2 = Some(start(r, dir, "business node", &["peer"], "b2", &[])?);
    let mut compute = Vec::new();
    let mut compute_processes = Vec::new();
    for name in ["c1", "c2"] {
        let extra = [
            OsString::from("--listen"),
            "127.0.0.1:0".into(),
            "--center-connect".into(),
            center_address.clone().into(),
            "--platform-key".into(),
            p("platform.key").into(),
        ];
        let mut all: Vec<OsString> = ["ledger", "compute", "serve", "--home"]
            .iter()
            .map(Into::into)
            .collect();
        all.push(p(name).into());
        all.extend(["--genesis".into(), p("block0.bin").into()]);
        all.extend(extra);
        let (process, address) =
            ServerProcess::start(&r.exe, &all, &p(&format!("{name}.log")), "compute enclave")?;
        compute.push(format!("{name}@{address}"));
        compute_processes.push(process);
    }
    println!("  orderers o1-o3 (one Raft group), endorsers e1-e3 (policy 2 of 3), business nodes b1 and b2, compute c1 and c2 up");
    wait_for_status(
        r,
        dir,
        "b1",
        "the compute group's membership on the chain",
        |out| !out.contains("membership v0"),
    )?;
    println!("  the endorsers put the center's signed membership on the chain");
    Ok(Site {
        center: (center_process, center_address),
        orderers,
        endorsers: endorsers.into_iter().map(|e| e.0).collect(),
        b1: b1.0,
        b2: b2.map(|b| b.0),
        compute_processes,
        compute,
    })
}

/// Asks `node` for its status (`sotto ledger status`, as bank-a) until
/// `done` holds for the answer or 10 seconds passed; returns the answer.
fn wait_for_status(
    r: &mut Runner,
    dir: &Path,
    node: &str,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> Result<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = r.sotto(
            &format!("status {node}"),
            &[
                &"ledger",
                &"status",
                &"--home",
                &dir.join("bank-a"),
                &"--genesis",
                &dir.join("block0.bin"),
                &"--node-name",
                &node,
            ],
        )?;
        if done(&out) {
            return Ok(out);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "waited 10 s for {what}; {node} says: {}",
            out.trim()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Finds the Raft leader of the orderers, kills its process, and waits
/// until the others elect a new one; returns the killed orderer's name.
fn kill_leader(r: &mut Runner, dir: &Path, site: &mut Site) -> Result<String> {
    let status = wait_for_status(r, dir, "o1", "an ordering leader", |out| {
        !out.contains("leader none elected")
    })?;
    let leader = status_field(&status, ", leader ").to_owned();
    let slot = site
        .orderers
        .iter_mut()
        .find(|(name, _)| *name == leader)
        .with_context(|| format!("o1 names an unknown leader: {}", status.trim()))?;
    drop(slot.1.take());
    let survivor = ORDERERS
        .iter()
        .find(|o| **o != leader)
        .context("no other orderer")?;
    let elected = wait_for_status(r, dir, survivor, "a new ordering leader", |out| {
        !out.contains(&format!(", leader {leader},")) && !out.contains("leader none elected")
    })?;
    println!(
        "  killed the ordering leader {leader} mid-stream; {}",
        elected.trim()
    );
    Ok(leader)
}

/// Restarts a stopped orderer and waits until its chain reaches the
/// others' height (it catches up through Raft replication).
fn restart_orderer(r: &mut Runner, dir: &Path, site: &mut Site, name: &str) -> Result<()> {
    let height = |out: &str| -> u64 { status_field(out, "height ").parse().unwrap_or(0) };
    let survivor = ORDERERS
        .iter()
        .find(|o| **o != name)
        .context("no other orderer")?;
    let target = height(&wait_for_status(
        r,
        dir,
        survivor,
        "an orderer's height",
        |_| true,
    )?);
    let process = start(r, dir, "orderer", &["orderer"], name, &[])?.0;
    if let Some(slot) = site.orderers.iter_mut().find(|(n, _)| n == name) {
        slot.1 = Some(process);
    }
    let caught_up = wait_for_status(r, dir, name, "the restarted orderer catching up", |out| {
        height(out) >= target
    })?;
    println!(
        "  {name} restarted and caught up through Raft: {}",
        caught_up.trim()
    );
    Ok(())
}

/// A relay replays the first loan's transaction, as stored in its block, to
/// the ordering service (under bank-b's certificate, which may submit):
/// every business node must mark the copy DUPLICATE_TXID, so the loan
/// counts once (the exposures are checked against the truth afterwards).
fn replay_transaction(dir: &Path, committed: &str) -> Result<()> {
    use prost::Message;
    use sotto_ledger::tx::{Body, Transaction};
    let (tx_hex, rest) = committed
        .trim()
        .split_once(" in block ")
        .with_context(|| format!("no transaction id in {committed:?}"))?;
    let number: u64 = rest
        .split(':')
        .next()
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no block number in {committed:?}"))?;
    let tx_id = sotto_crypto::ids::TxId::from_str(tx_hex.trim())?;
    let block0 =
        sotto_ledger::block::Block::decode(std::fs::read(dir.join("block0.bin"))?.as_slice())?;
    let client = sotto_ledger::online::client::LedgerClient::new(
        NodeHome::open(&dir.join("bank-b"))?,
        &block0,
        vec![(String::new(), String::new())],
    )?;
    super::psi::runtime()?.block_on(async {
        let stored = client.block(number).await?;
        let original = stored
            .transactions
            .iter()
            .find(|tx| {
                let packet = match Transaction::decode(tx.as_slice()).ok().and_then(|t| t.body) {
                    Some(Body::Invoke(invoke)) => invoke.packet,
                    _ => return false,
                };
                sotto_ledger::packet::Packet::decode(packet.as_slice())
                    .is_ok_and(|p| p.tx_id == tx_id.as_bytes())
            })
            .with_context(|| format!("{tx_id} is not in block {number}"))?;
        client.broadcast(vec![original.clone()]).await?;
        for node in ["b1", "b2"] {
            let (at, code) = client
                .code_of(node, &tx_id, number + 1, std::time::Duration::from_secs(10))
                .await?;
            ensure!(
                code == sotto_ledger::ValidationCode::DuplicateTxid,
                "{node} gave the replayed {tx_id} in block {at} {code}, not DUPLICATE_TXID"
            );
        }
        println!("  the first loan's transaction replayed to the ordering service: DUPLICATE_TXID at b1 and b2");
        Ok(())
    })
}

/// The field after `label` in a `ledger status` line, up to the next
/// comma (empty if the line has no such field).
fn status_field<'a>(status: &'a str, label: &str) -> &'a str {
    status
        .split(label)
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_default()
        .trim()
}

/// The commit hash in a `ledger status` line.
fn commit_hash(status: &str) -> String {
    status_field(status, ", commit hash ").to_owned()
}

/// The membership version in a `ledger status` line.
fn membership_version(status: &str) -> u64 {
    status_field(status, "membership v").parse().unwrap_or(0)
}

/// Asks every customer's exposure (as bank-b) and compares it with the truth.
fn check_exposures(r: &mut Runner, banks: &Bank<'_>, truth: &BTreeMap<String, u64>) -> Result<()> {
    for (customer, expected) in truth {
        let json = format!("{{\"customer\":\"{customer}\"}}");
        let out = banks.call(r, "bank-b", "query", "exposure", &json)?;
        let answer: serde_json::Value =
            serde_json::from_str(out.trim()).with_context(|| format!("query answer {out}"))?;
        ensure!(
            answer["total"].as_u64() == Some(*expected),
            "exposure of {customer} read from {}: ledger says {}, the truth is {expected}",
            banks.targets[0],
            answer["total"]
        );
    }
    Ok(())
}

/// Runs the demo in `dir`.
pub fn run(dir: &Path, quiet: bool) -> Result<()> {
    println!("sotto demo ledger: every role a separate process on loopback (software enclaves: NOT hardware-protected)");
    let p = |name: &str| dir.join(name);
    let mut r = Runner::new(quiet)?;
    let mut site = start_site(&mut r, dir)?;
    let center_address = site.center.1.clone();
    let compute = site.compute.clone();
    // Writes are kept by both business nodes: sealed at b1, in clear at
    // b2 (bank-b's own node, plaintext mode); b1 serves these calls' reads.
    let banks = Bank {
        dir,
        compute: compute.clone(),
        targets: ["b1", "b2"],
    };
    // The plaintext truth, kept by the demo only.
    let mut truth: BTreeMap<String, u64> = BTreeMap::new();
    let loans: [(&str, &str, &str, u64); 6] = [
        ("bank-a", CUSTOMERS[0], "loan-a-0001", 120_000),
        ("bank-b", CUSTOMERS[0], "loan-b-0001", 80_000),
        ("bank-a", CUSTOMERS[1], "loan-a-0002", 5_000),
        ("bank-b", CUSTOMERS[2], "loan-b-0002", 42_000),
        ("bank-a", CUSTOMERS[2], "loan-a-0003", 10_000),
        ("bank-b", CUSTOMERS[1], "loan-b-0003", 7_500),
    ];
    let mut killed = None;
    let mut first_loan = String::new();
    for (i, (bank, customer, loan, amount)) in loans.into_iter().enumerate() {
        if i == 3 {
            killed = Some(kill_leader(&mut r, dir, &mut site)?);
        }
        let json =
            format!("{{\"customer\":\"{customer}\",\"loan\":\"{loan}\",\"amount\":{amount}}}");
        let out = banks.call(&mut r, bank, "invoke", "loan", &json)?;
        ensure!(
            out.contains("VALID (0)"),
            "{bank}'s loan {loan} was not committed: {out}"
        );
        *truth.entry(customer.to_owned()).or_default() += amount;
        if i == 0 {
            first_loan = out;
        }
    }
    println!("  6 loans recorded by two banks, each VALID at b1 (3 before the leader was killed, 3 after)");
    if let Some(leader) = killed {
        restart_orderer(&mut r, dir, &mut site, &leader)?;
    }
    replay_transaction(dir, &first_loan)?;
    // b2 goes down and misses blocks.
    drop(site.b2.take());
    for (bank, customer, loan, amount) in [
        ("bank-a", CUSTOMERS[0], "loan-a-0001", 20_000),
        ("bank-b", CUSTOMERS[2], "loan-b-0002", 2_000),
    ] {
        let json =
            format!("{{\"customer\":\"{customer}\",\"loan\":\"{loan}\",\"amount\":{amount}}}");
        let out = banks.call(&mut r, bank, "invoke", "repay", &json)?;
        ensure!(
            out.contains("VALID (0)"),
            "{bank}'s repayment on {loan} was not committed: {out}"
        );
        *truth.entry(customer.to_owned()).or_default() -= amount;
    }
    let over = banks.call(
        &mut r,
        "bank-a",
        "invoke",
        "repay",
        &format!(
            "{{\"customer\":\"{}\",\"loan\":\"loan-a-0002\",\"amount\":999999}}",
            CUSTOMERS[1]
        ),
    );
    match over {
        Ok(out) => bail!("an over-repayment was accepted: {out}"),
        Err(e) => ensure!(
            e.to_string().contains("exceeds the outstanding"),
            "over-repayment refused for another reason: {e}"
        ),
    }
    println!("  b2 stopped; 2 repayments committed meanwhile; an over-repayment refused inside the enclave");
    site.b2 = Some(start(&r, dir, "business node", &["peer"], "b2", &[])?.0);
    let b1_state = commit_hash(&wait_for_status(&mut r, dir, "b1", "b1's status", |_| {
        true
    })?);
    wait_for_status(&mut r, dir, "b2", "b2 caught up with b1", |out| {
        commit_hash(out) == b1_state
    })?;
    println!(
        "  b2 restarted, replayed its store, caught up: same commit hash as b1 ({}…)",
        &b1_state[..16.min(b1_state.len())]
    );
    check_exposures(&mut r, &banks, &truth)?;
    println!("  every customer's total exposure matches the plaintext truth: {truth:?}");
    let from_b2 = Bank {
        dir,
        compute: compute.clone(),
        targets: ["b2", "b1"],
    };
    check_exposures(&mut r, &from_b2, &truth)?;
    println!("  the same answers with b2 serving the reads: its records in clear reach the enclave only over a load channel the enclave's member key opened");
    let c2_packet = super::psi::runtime()?.block_on(async {
        let mut bank_a = ledger_drills::client(dir, "bank-a", &compute)?;
        ledger_drills::endorsement_faults(&mut bank_a).await?;
        ledger_drills::read_conflict(&mut bank_a).await?;
        ledger_drills::caller_checks(dir, &compute).await?;
        let mut through_c2 = ledger_drills::client(dir, "bank-a", &compute[1..])?;
        ledger_drills::prepare_loan(&mut through_c2, 9).await
    })?;
    let revoke = args(&[
        &"registry",
        &"revoke",
        &"--node",
        &"c2",
        &"--home",
        &p("center"),
        &"--connect",
        &center_address,
        &"--center",
        &"center",
    ]);
    let before = membership_version(&wait_for_status(&mut r, dir, "b1", "b1's status", |_| {
        true
    })?);
    r.sotto("revoke c2", &refs(&revoke))?;
    wait_for_status(&mut r, dir, "b1", "c2's revocation on the chain", |out| {
        membership_version(out) > before
    })?;
    super::psi::runtime()?.block_on(async {
        let through_c1 = ledger_drills::client(dir, "bank-a", &compute[..1])?;
        ledger_drills::submit_after_revocation(&through_c1, &c2_packet).await
    })?;
    let only_c2 = Bank {
        dir,
        compute: vec![compute[1].clone()],
        targets: ["b1", "b2"],
    };
    match only_c2.call(
        &mut r,
        "bank-a",
        "invoke",
        "loan",
        "{\"customer\":\"customer-9999\",\"loan\":\"loan-a-9999\",\"amount\":1}",
    ) {
        Ok(out) => bail!("a revoked enclave's packet was committed: {out}"),
        Err(e) => {
            let reason = e.to_string();
            ensure!(
                reason.contains("not a current member"),
                "the revoked enclave was refused for another reason: {reason}"
            );
            let line = reason
                .lines()
                .find(|l| l.contains("not a current member"))
                .unwrap_or_default();
            println!(
                "  c2 revoked at the center; its request refused: {}",
                line.trim()
            );
        }
    }
    let ok = banks.call(
        &mut r,
        "bank-a",
        "query",
        "exposure",
        "{\"customer\":\"customer-9999\"}",
    );
    ensure!(
        ok.is_ok(),
        "c1 stopped answering after c2's revocation: {ok:?}"
    );
    drop(site);
    let scanned = scan_for_records(dir, &loans)?;
    println!("  no customer or loan id in any of the {scanned} files the orderers, endorsers and the ciphertext-mode node b1 wrote (raw, hex or base64)");
    let in_clear = files_of(dir, &["b2"])?
        .into_iter()
        .filter(|f| {
            std::fs::read(f).is_ok_and(|bytes| {
                sotto_node::leaks::leaked_encoding(&bytes, loans[0].1.as_bytes()).is_some()
            })
        })
        .count();
    ensure!(
        in_clear > 0,
        "b2 runs in plaintext mode but holds none of its records in clear"
    );
    println!(
        "  b2 (plaintext mode, bank-b's own node) holds the records it was named for in clear, as its mode says: {} found in {in_clear} file(s)",
        loans[0].1
    );
    println!("  checked: answers match the plaintext truth (nothing lost or doubled across the leader's death), a restarted node caught up, endorsement and TEE signature faults got their codes at both nodes, a revoked enclave refused, no record in clear at rest outside the plaintext-mode node");
    Ok(())
}
