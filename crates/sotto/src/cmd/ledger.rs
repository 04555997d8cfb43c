//! `sotto ledger ...`: the privacy ledger's roles as processes and its
//! client. `genesis` checks a consortium file and writes block 0; the
//! `serve` commands run an orderer, an endorser, a compute enclave or a
//! business node; `invoke`, `query`, `block` and `status` are the client.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use prost::Message;
use sotto_ledger::block::Block;
use sotto_ledger::online::client::{CallSpec, LedgerClient};
use sotto_ledger::online::read_genesis;
use sotto_ledger::tx::{Body, Transaction};
use sotto_ledger::LedgerConfig;
use sotto_tee::enclave::Enclave;
use sotto_tee::software::{PlatformKey, SoftwareEnclave};

use super::node::{ForceArg, HomeArg};
use super::psi::{bind_and_announce, ctrl_c, runtime};

/// Ledger commands.
#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Check a consortium's genesis file (TOML) and write block 0.
    Genesis(GenesisArgs),
    /// Run an orderer: one member of the Raft ordering group of block 0's
    /// orderers (Raft log and chain in redb in its home; only the elected
    /// leader takes broadcasts and cuts blocks, every orderer delivers the
    /// committed chain).
    #[command(subcommand)]
    Orderer(ServeOnly),
    /// Run an endorser.
    #[command(subcommand)]
    Endorser(CenterServeOnly),
    /// Run a compute enclave (registered with the center first).
    #[command(subcommand)]
    Compute(ComputeServeOnly),
    /// Run a business node: follows the orderers, validates every block,
    /// keeps the chain and world state in redb, serves commit events and
    /// loads. Its mode comes from block 0: ciphertext (values sealed under
    /// the data-encryption key) or plaintext (the values of transactions
    /// naming it kept in clear, opened with its identity key, and handed to
    /// compute enclaves only over a member-signed load channel).
    #[command(subcommand)]
    Peer(ServeOnly),
    /// Run a contract function, endorse, order and wait for its commit code.
    Invoke(CallArgs),
    /// Run a contract function and print its answer; nothing is ordered.
    Query(CallArgs),
    /// Print a block from the ordering service as JSON.
    Block(BlockArgs),
    /// Print a business node's height, commit hash and mode.
    Status(StatusArgs),
}

/// `serve` of a role configured by its home and block 0.
#[derive(Subcommand)]
pub enum ServeOnly {
    /// Serve until Ctrl-C.
    Serve(ServeArgs),
}

/// `serve` of a role that follows the registration center.
#[derive(Subcommand)]
pub enum CenterServeOnly {
    /// Serve until Ctrl-C.
    Serve(CenterServeArgs),
}

/// `serve` of a compute enclave.
#[derive(Subcommand)]
pub enum ComputeServeOnly {
    /// Serve until Ctrl-C.
    Serve(ComputeServeArgs),
}

/// Arguments of `ledger genesis`.
#[derive(Args)]
pub struct GenesisArgs {
    /// The consortium's genesis file (TOML; see docs/ledger.md).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Where to write block 0 (never over the genesis file).
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    #[command(flatten)]
    force: ForceArg,
}

/// Arguments every ledger node has.
#[derive(Args)]
pub struct NodeArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Block 0 of the ledger (from `sotto ledger genesis`).
    #[arg(long, value_name = "FILE")]
    genesis: PathBuf,
}

/// Arguments of a `serve` command.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Address to listen on (default: this node's address in block 0).
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
}

/// Arguments of a `serve` command that follows the registration center.
#[derive(Args)]
pub struct CenterServeArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// The registration center's address (its key is block 0's and must be
    /// a pinned peer of this home).
    #[arg(long, value_name = "HOST:PORT")]
    center_connect: String,
}

/// Arguments of `ledger compute serve`.
#[derive(Args)]
pub struct ComputeServeArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,
    /// The registration center's address.
    #[arg(long, value_name = "HOST:PORT")]
    center_connect: String,
    /// The software enclave's platform key (development only: NOT
    /// hardware-protected).
    #[arg(long, value_name = "FILE")]
    platform_key: PathBuf,
}

/// Arguments of `ledger invoke` and `ledger query`.
#[derive(Args)]
pub struct CallArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// A compute node, NAME@HOST:PORT (repeat for more; tried in turn).
    #[arg(long = "compute", value_name = "NAME@HOST:PORT", required = true)]
    compute: Vec<String>,
    /// The contract: `kv` (a private key-value registry) or `credit`
    /// (credit records across institutions), as block 0 names them.
    #[arg(long)]
    contract: String,
    /// The function: for `kv`, put {key, value}, get {key}, delete {key};
    /// for `credit`, loan and repay {customer, loan, amount} and exposure
    /// {customer}.
    #[arg(long)]
    function: String,
    /// Its arguments as JSON, e.g. '{"customer":"c-1","loan":"l-1","amount":100}'.
    #[arg(long, default_value = "{}")]
    args: String,
    /// The business node that keeps the writes and serves reads (repeat for
    /// more targets).
    #[arg(long = "target", value_name = "NODE", required = true)]
    targets: Vec<String>,
}

/// Arguments of `ledger block`.
#[derive(Args)]
pub struct BlockArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The block number.
    #[arg(long)]
    number: u64,
}

/// Arguments of `ledger status`.
#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// The business node to ask (height, commit hash, mode, membership
    /// version, keys), or an orderer (its Raft role, term and leader, and
    /// its chain's height).
    #[arg(long, value_name = "NODE")]
    node_name: String,
}

/// Runs a ledger command.
pub fn run(command: LedgerCommand) -> Result<()> {
    match command {
        LedgerCommand::Genesis(a) => genesis(&a),
        LedgerCommand::Orderer(ServeOnly::Serve(a)) => serve_role(a, Role::Orderer),
        LedgerCommand::Peer(ServeOnly::Serve(a)) => serve_role(a, Role::Business),
        LedgerCommand::Endorser(CenterServeOnly::Serve(a)) => {
            let (home, block, _) = open(&a.serve.node)?;
            let (config, _) = block.open_genesis("block 0")?;
            let listen = listen_address(
                a.serve.listen.as_deref(),
                config
                    .endorser(home.name().as_str())
                    .and_then(|(_, e)| e.address.clone()),
            )?;
            runtime()?.block_on(async {
                let listener = bind_and_announce(&listen).await?;
                sotto_ledger::online::endorser::serve(
                    listener,
                    home,
                    block,
                    a.center_connect,
                    ctrl_c(),
                )
                .await?;
                Ok(())
            })
        }
        LedgerCommand::Compute(ComputeServeOnly::Serve(a)) => {
            let (home, block, _) = open(&a.node)?;
            let enclave = SoftwareEnclave::current(PlatformKey::read(&a.platform_key)?)?;
            let measurement = enclave.measurement();
            runtime()?.block_on(async {
                let listener = bind_and_announce(&a.listen).await?;
                sotto_ledger::online::compute::serve(
                    listener,
                    home,
                    block,
                    a.center_connect,
                    measurement,
                    ctrl_c(),
                )
                .await?;
                Ok(())
            })
        }
        LedgerCommand::Invoke(a) => call(a, true),
        LedgerCommand::Query(a) => call(a, false),
        LedgerCommand::Block(a) => show_block(&a),
        LedgerCommand::Status(a) => status(&a),
    }
}

fn genesis(a: &GenesisArgs) -> Result<()> {
    a.force.rules().with_input(&a.config).check(&a.output)?;
    let text = std::fs::read_to_string(&a.config)
        .with_context(|| format!("cannot read {}", a.config.display()))?;
    let config = LedgerConfig::parse(&a.config.display().to_string(), &text)?;
    let block = Block::genesis(&config, &text);
    let (_, tip) = block.open_genesis(&a.config.display().to_string())?;
    sotto_node::files::write_atomic(
        &a.output,
        &block.encode_to_vec(),
        sotto_node::files::Visibility::Public,
    )?;
    println!(
        "block 0 of ledger {} written to {}: ledger id {}, {} orderers, {} endorsers, {} business nodes, {} clients, {} contracts",
        config.name,
        a.output.display(),
        hex::encode(tip.ledger),
        config.orderers.len(),
        config.endorsers.len(),
        config.business.len(),
        config.clients.len(),
        config.contracts.len()
    );
    Ok(())
}

fn open(node: &NodeArgs) -> Result<(sotto_node::NodeHome, Block, LedgerConfig)> {
    let home = node.home.open()?;
    let (block, config, _) = read_genesis(&node.genesis)?;
    Ok((home, block, config))
}

fn listen_address(given: Option<&str>, from_genesis: Option<String>) -> Result<String> {
    match (given, from_genesis) {
        (Some(a), _) => Ok(a.to_owned()),
        (None, Some(a)) => Ok(a),
        (None, None) => bail!("give --listen HOST:PORT (block 0 names no address for this node)"),
    }
}

enum Role {
    Orderer,
    Business,
}

fn serve_role(a: ServeArgs, role: Role) -> Result<()> {
    let (home, block, config) = open(&a.node)?;
    let me = home.name().to_string();
    let address = match role {
        Role::Orderer => config.orderer(&me).and_then(|o| o.address.clone()),
        Role::Business => config
            .business_node(&me)
            .and_then(|b| b.member.address.clone()),
    };
    let listen = listen_address(a.listen.as_deref(), address)?;
    match role {
        Role::Orderer => runtime()?.block_on(async {
            let listener = bind_and_announce(&listen).await?;
            sotto_ledger::online::orderer::serve(listener, home, block, ctrl_c()).await?;
            Ok(())
        }),
        Role::Business => {
            // Store replay and tamper check before the address is announced.
            let prepared = sotto_ledger::online::business::prepare(home, &block)?;
            runtime()?.block_on(async {
                let listener = bind_and_announce(&listen).await?;
                prepared.serve(listener, ctrl_c()).await?;
                Ok(())
            })
        }
    }
}

/// Compute nodes given as NAME@HOST:PORT.
pub(crate) fn compute_nodes(specs: &[String]) -> Result<Vec<(String, String)>> {
    specs
        .iter()
        .map(|s| match s.split_once('@') {
            Some((name, address)) if !name.is_empty() && !address.is_empty() => {
                Ok((name.to_owned(), address.to_owned()))
            }
            _ => bail!("--compute {s:?}: write NAME@HOST:PORT, e.g. compute-1@127.0.0.1:7300"),
        })
        .collect()
}

fn call(a: CallArgs, order: bool) -> Result<()> {
    let (home, block, _) = open(&a.node)?;
    serde_json::from_str::<serde_json::Value>(&a.args)
        .with_context(|| format!("--args is not JSON: {}", a.args))?;
    let mut client = LedgerClient::new(home, &block, compute_nodes(&a.compute)?)?;
    let spec = CallSpec {
        contract: a.contract,
        function: a.function,
        args: a.args.into_bytes(),
        targets: a.targets,
    };
    runtime()?.block_on(async {
        if order {
            let committed = client.invoke(&spec).await?;
            println!(
                "{} in block {}: {} {}",
                committed.tx_id,
                committed.block,
                committed.code,
                String::from_utf8_lossy(&committed.response)
            );
            if !committed.code.is_valid() {
                bail!(
                    "transaction {} was not applied: {}",
                    committed.tx_id,
                    committed.code
                );
            }
        } else {
            println!("{}", String::from_utf8_lossy(&client.query(&spec).await?));
        }
        Ok(())
    })
}

fn show_block(a: &BlockArgs) -> Result<()> {
    let (home, block, _) = open(&a.node)?;
    let client = LedgerClient::new(home, &block, vec![(String::new(), String::new())])?;
    let found = runtime()?.block_on(client.block(a.number))?;
    let header = found.header.clone().unwrap_or_default();
    let transactions: Vec<serde_json::Value> = found
        .transactions
        .iter()
        .map(|tx| match Transaction::decode(tx.as_slice()).ok().and_then(|t| t.body) {
            Some(Body::Invoke(invoke)) => {
                let packet = sotto_ledger::packet::Packet::decode(invoke.packet.as_slice()).unwrap_or_default();
                serde_json::json!({
                    "kind": "invoke",
                    "tx_id": hex::encode(&packet.tx_id),
                    "client": packet.client,
                    "contract": packet.contract,
                    "member": packet.member,
                    "reads": packet.reads.len(),
                    "writes": packet.writes.len(),
                    "targets": packet.targets,
                    "endorsers": invoke.endorsements.iter().map(|e| e.endorser.clone()).collect::<Vec<_>>(),
                })
            }
            Some(Body::Membership(_)) => serde_json::json!({ "kind": "membership" }),
            None => serde_json::json!({ "kind": "undecodable", "bytes": tx.len() }),
        })
        .collect();
    let out = serde_json::json!({
        "number": header.number,
        "previous": hex::encode(&header.previous),
        "data_hash": hex::encode(&header.data_hash),
        "time_ms": header.time_ms,
        "orderer": header.orderer,
        "transactions": transactions,
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

fn status(a: &StatusArgs) -> Result<()> {
    let (home, block, _) = open(&a.node)?;
    let client = LedgerClient::new(home, &block, vec![(String::new(), String::new())])?;
    if client.config().orderer(&a.node_name).is_some() {
        let status = runtime()?.block_on(client.orderer_status(&a.node_name))?;
        let leader = if status.leader.is_empty() {
            "none elected".to_owned()
        } else {
            status.leader
        };
        println!(
            "{}: orderer, Raft {} in term {}, leader {leader}, height {}",
            a.node_name, status.role, status.term, status.height
        );
        return Ok(());
    }
    let status = runtime()?.block_on(client.status(&a.node_name))?;
    println!(
        "{}: height {}, commit hash {}, {} mode, membership v{}, {} keys",
        a.node_name,
        status.height,
        hex::encode(&status.commit_hash),
        status.mode,
        status.membership_version,
        status.keys
    );
    Ok(())
}
