//! `sotto gateway`: the inference gateway outside users reach (the third
//! TEE node of docs/share.md). `serve` checks its models against the
//! ledger, follows the enclave group, answers HTTPS + JSON scoring requests
//! (docs/gateway-openapi.json) from users admitted by API token or client
//! certificate, each within its rate, by asking every provider for its
//! sealed partial results; and records every answered query on the ledger
//! (`queries` contract) in batches. `add-user` issues a user's API token.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Subcommand};
use sotto_ledger::online::client::{CallSpec, LedgerClient};
use sotto_net::tls::TlsMaterial;
use sotto_node::files::{write_atomic, Visibility};
use sotto_node::NodeHome;
use sotto_share::model::Model;
use sotto_share::online::gateway::{AuditRecord, Gateway, ProviderLink, RowModel};
use sotto_share::online::group::{follow, tagger};
use sotto_share::online::http::{serve, HttpState};
use sotto_share::online::users::{User, Users};
use sotto_tee::online::node::CenterClient;
use tokio::sync::mpsc;

use super::psi::{bind_and_announce, ctrl_c, runtime};
use super::share::{open_as, LedgerArgs};

/// Audit records waiting for the ledger before queries are refused.
const AUDIT_BACKLOG: usize = 100_000;
/// The most records one ledger transaction carries.
const AUDIT_BATCH: usize = sotto_ledger::contracts::MAX_QUERY_RECORDS;

/// `sotto gateway ...`.
#[derive(Subcommand)]
pub enum GatewayCommand {
    /// Serve outside users over HTTPS + JSON: score customer ids with a
    /// registered linear model on the providers' shares; record every
    /// query on the ledger.
    Serve(ServeArgs),
    /// Add a user to a users file: a fresh API token (written once to
    /// --token-out; only its hash is kept) or admission by a client
    /// certificate from the consortium CA.
    AddUser(AddUserArgs),
}

/// Arguments of `gateway serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    ledger: LedgerArgs,
    /// The registration center's address (a pinned peer of this home).
    #[arg(long, value_name = "HOST:PORT")]
    center_connect: String,
    /// Where to listen for outside users (HTTPS; port 0: any free port,
    /// printed as `listening on ...`).
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,
    /// A provider's inference service (NAME@HOST:PORT); every provider of
    /// the declaration, once each.
    #[arg(long = "provider", value_name = "NAME@HOST:PORT", required = true)]
    providers: Vec<String>,
    /// A model to serve (JSON; checked against its registration on the
    /// ledger at start; repeat for more).
    #[arg(long = "model", value_name = "FILE", required = true)]
    models: Vec<PathBuf>,
    /// The users file (see `gateway add-user`).
    #[arg(long, value_name = "FILE")]
    users: PathBuf,
    /// Requests per second per user, unless the users file says otherwise.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Requests a user may make at once, unless the users file says
    /// otherwise.
    #[arg(long, default_value_t = 200)]
    burst: u32,
    /// How long a provider may take to answer before the request fails
    /// naming it.
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    provider_timeout_ms: u64,
}

/// Arguments of `gateway add-user`.
#[derive(Args)]
pub struct AddUserArgs {
    /// The users file (created when absent; rewritten atomically).
    #[arg(long, value_name = "FILE")]
    users: PathBuf,
    /// The user's name (recorded on the ledger with each query).
    #[arg(long)]
    user: String,
    /// Where to write the new API token (must not exist; mode 0600).
    #[arg(long, value_name = "FILE", conflicts_with = "certificate")]
    token_out: Option<PathBuf>,
    /// Admit the user by a client certificate naming it instead of a token.
    #[arg(long)]
    certificate: bool,
    /// Requests per second for this user (the gateway's --rate if absent).
    #[arg(long)]
    rate: Option<u32>,
    /// Requests at once for this user (the gateway's --burst if absent).
    #[arg(long)]
    burst: Option<u32>,
}

/// Runs `sotto gateway ...`.
pub fn run(command: GatewayCommand) -> Result<()> {
    match command {
        GatewayCommand::Serve(a) => serve_gateway(&a),
        GatewayCommand::AddUser(a) => add_user(&a),
    }
}

fn read_users(path: &std::path::Path) -> Result<Users> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the users file", path.display()))?;
    Ok(Users::parse(path, &text)?)
}

fn add_user(a: &AddUserArgs) -> Result<()> {
    let mut users = if a.users.exists() {
        read_users(&a.users)?
    } else {
        Users::empty()
    };
    let user = User {
        name: a.user.clone(),
        token_sha256: None,
        certificate: a.certificate,
        rate: a.rate,
        burst: a.burst,
    };
    if a.certificate {
        users.add(user).map_err(anyhow::Error::msg)?;
        write_atomic(
            &a.users,
            users.to_text().map_err(anyhow::Error::msg)?.as_bytes(),
            Visibility::Private,
        )?;
        println!(
            "{} admits {} by a client certificate from the consortium CA naming it",
            a.users.display(),
            a.user
        );
        return Ok(());
    }
    let Some(out) = &a.token_out else {
        bail!("give --token-out FILE for the new token, or --certificate");
    };
    ensure!(
        !out.exists(),
        "{} exists; a token file is never overwritten (pick another path)",
        out.display()
    );
    let token = users
        .add_token_user(user, &mut rand::rngs::OsRng)
        .map_err(anyhow::Error::msg)?;
    write_atomic(out, token.as_bytes(), Visibility::Private)?;
    write_atomic(
        &a.users,
        users.to_text().map_err(anyhow::Error::msg)?.as_bytes(),
        Visibility::Private,
    )?;
    println!(
        "{} admits {} by API token; the token is in {} (only its SHA-256 is kept)",
        a.users.display(),
        a.user,
        out.display()
    );
    Ok(())
}

/// An ONNX model run by tract, inside this (inference) enclave.
struct Tract(sotto_onnx::OnnxModel);

impl RowModel for Tract {
    fn probability(&self, row: &[f32]) -> Result<f32, String> {
        self.0.probability(row).map_err(|e| e.to_string())
    }
}

/// The provider links in declaration order, each named once.
fn provider_links(
    tls: &TlsMaterial,
    declaration: &sotto_share::Declaration,
    given: &[String],
    timeout: Duration,
) -> Result<Vec<ProviderLink>> {
    let given = super::ledger::compute_nodes(given)?;
    declaration
        .providers
        .iter()
        .map(|p| {
            let matching: Vec<_> = given.iter().filter(|(n, _)| *n == p.name).collect();
            match matching.as_slice() {
                [(name, address)] => {
                    ProviderLink::new(tls, name, address, timeout).map_err(anyhow::Error::msg)
                }
                [] => bail!("--provider: no address for provider {} (give NAME@HOST:PORT for every provider of the declaration)", p.name),
                _ => bail!("--provider: provider {} is given twice", p.name),
            }
        })
        .collect()
}

/// Records audit records on the ledger in batches, retrying a batch until
/// it commits; runs until the channel closes.
async fn record_queries(
    mut client: LedgerClient,
    target: String,
    mut records: mpsc::Receiver<AuditRecord>,
) {
    while let Some(first) = records.recv().await {
        let mut batch = vec![first];
        while batch.len() < AUDIT_BATCH {
            match records.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let spec = CallSpec {
            contract: "queries".into(),
            function: "record".into(),
            args: serde_json::json!({ "records": batch })
                .to_string()
                .into_bytes(),
            targets: vec![target.clone()],
        };
        loop {
            match client.invoke(&spec).await {
                Ok(c) if c.code.is_valid() => break,
                Ok(c) => {
                    tracing::error!(
                        "audit records refused by the ledger: {}; dropped {} records",
                        c.code,
                        batch.len()
                    );
                    break;
                }
                Err(e) => {
                    tracing::warn!(
                        "recording {} queries on the ledger: {e}; retrying",
                        batch.len()
                    );
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn serve_gateway(a: &ServeArgs) -> Result<()> {
    let mut context = open_as(&a.ledger, false)?;
    let users = read_users(&a.users)?;
    let home = NodeHome::open(context.home())?;
    let tls = TlsMaterial::load(&home)?;
    let https = tls.https_server_config()?;
    let timeout = Duration::from_millis(a.provider_timeout_ms);
    let center = context.client.config().center.name.clone();
    runtime()?.block_on(async {
        let mut models: HashMap<String, Vec<_>> = HashMap::new();
        let mut runners: HashMap<(String, u64), Arc<dyn RowModel>> = HashMap::new();
        for file in &a.models {
            let (model, _) = super::model::verify(&mut context, file).await?;
            if let Model::Onnx(spec) = &model {
                let loaded = sotto_onnx::OnnxModel::load(&spec.bytes, spec.columns.len())
                    .with_context(|| format!("{}: model {}", spec.file.display(), spec.name))?;
                runners.insert((spec.name.clone(), spec.version), Arc::new(Tract(loaded)));
            }
            models
                .entry(model.name().to_owned())
                .or_default()
                .push(model);
        }
        let mut center_client =
            CenterClient::connect(&home, center.clone(), &a.center_connect).await?;
        let tagger = tagger(&home, &mut center_client).await?;
        let group = follow(
            NodeHome::open(context.home())?,
            center,
            a.center_connect.clone(),
        )
        .await?;
        let (audit, records) = mpsc::channel(AUDIT_BACKLOG);
        let recorder = LedgerClient::new(
            NodeHome::open(context.home())?,
            context.block(),
            context.compute().to_vec(),
        )?;
        tokio::spawn(record_queries(recorder, context.target.clone(), records));
        let gateway = Gateway {
            me: context.me.clone(),
            providers: provider_links(&tls, &context.declaration, &a.providers, timeout)?,
            declaration: context.declaration.clone(),
            models,
            runners,
            tagger,
            group,
            timeout,
            audit,
        };
        let state = Arc::new(HttpState::new(gateway, users, a.rate, a.burst));
        let listener = bind_and_announce(&a.listen).await?;
        serve(listener, https, state, ctrl_c()).await;
        Ok(())
    })
}
