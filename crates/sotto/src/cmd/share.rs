//! `sotto share`: secret-shared data sharing through the ledger
//! (docs/share.md). A provider is a ledger client and a member of the
//! registration center's enclave group (software enclave: NOT
//! hardware-protected). `publish` splits its table into shares inside its
//! enclave and posts every chunk through the `fragments` contract; `fuse`
//! fetches the chunks addressed to it once every provider's are posted and
//! keeps its fused share sealed by its enclave; `status` shows which
//! fragments of a dataset version are posted; `serve` (in `share_serve`)
//! answers the gateways' inference requests on the fused share.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use base64::Engine as _;
use clap::{Args, Subcommand};
use prost::Message;
use rand::rngs::OsRng;
use rand::SeedableRng;
use sotto_agg::table::{ClientTable, ColumnMap};
use sotto_crypto::hpke::HpkePublicKey;
use sotto_crypto::kdf::hkdf_key;
use sotto_ledger::online::client::{CallSpec, LedgerClient};
use sotto_ledger::online::read_genesis;
use sotto_node::files::{write_atomic, Visibility};
use sotto_node::NodeHome;
use sotto_share::{open_chunk, seal_fragment, split, Declaration, Fuser, IdTagger, SealedChunk};
use sotto_tee::online::node::{hpke_key, CenterClient};
use sotto_tee::software::{PlatformKey, SoftwareEnclave};

use super::node::HomeArg;
use super::psi::runtime;

/// `sotto share ...`.
#[derive(Subcommand)]
pub enum ShareCommand {
    /// Split this provider's table into one additive share per provider
    /// (inside its enclave), seal each to its provider's enclave key, and
    /// post every chunk through the ledger's `fragments` contract.
    Publish(PublishArgs),
    /// Once every provider's fragments of the dataset version are posted,
    /// fetch those addressed to this provider, add them per customer into
    /// its fused share, and keep it sealed by its enclave in its home.
    Fuse(FuseArgs),
    /// Show which providers' fragments of a dataset version are posted.
    Status(StatusArgs),
    /// Answer inference enclaves (gateways) of the group with partial
    /// results `w · s_j` of registered linear models on this provider's
    /// fused share, sealed under the group's key.
    Serve(super::share_serve::ServeArgs),
}

/// Where the ledger and the registration center are.
#[derive(Args)]
pub struct LedgerArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Block 0 of the ledger.
    #[arg(long, value_name = "FILE")]
    genesis: PathBuf,
    /// A compute enclave to run the contract (NAME@HOST:PORT; repeat for
    /// more).
    #[arg(long = "compute", value_name = "NAME@HOST:PORT", required = true)]
    compute: Vec<String>,
    /// The business node that keeps the chunks and serves them.
    #[arg(long, value_name = "NODE")]
    target: String,
    /// The dataset declaration every provider agreed on (TOML, see
    /// docs/share.md).
    #[arg(long, value_name = "FILE")]
    declaration: PathBuf,
}

/// Arguments of `share publish`.
#[derive(Args)]
pub struct PublishArgs {
    #[command(flatten)]
    ledger: LedgerArgs,
    /// The registration center's address (block 0 names the center; it
    /// must be a pinned peer of this home).
    #[arg(long, value_name = "HOST:PORT")]
    center_connect: String,
    /// This provider's table: CSV with a header, an id column and the
    /// declared columns.
    #[arg(long, value_name = "FILE")]
    table: PathBuf,
    /// The id column's header.
    #[arg(long, default_value = "id")]
    id_column: String,
    /// A declared column read from a header of another name
    /// (DECLARED=HEADER; repeat).
    #[arg(long = "column", value_name = "DECLARED=HEADER")]
    columns: Vec<String>,
    /// Rows per chunk.
    #[arg(long, default_value_t = sotto_share::fragment::DEFAULT_CHUNK_ROWS)]
    chunk_rows: usize,
}

/// Arguments of `share fuse`.
#[derive(Args)]
pub struct FuseArgs {
    #[command(flatten)]
    ledger: LedgerArgs,
    /// The software enclave's platform key (development only: NOT
    /// hardware-protected); the fused share is sealed with it.
    #[arg(long, value_name = "FILE")]
    platform_key: PathBuf,
}

/// Arguments of `share status`.
#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    ledger: LedgerArgs,
}

/// Runs `sotto share ...`.
pub fn run(command: ShareCommand) -> Result<()> {
    match command {
        ShareCommand::Publish(a) => publish(&a),
        ShareCommand::Fuse(a) => fuse(&a),
        ShareCommand::Status(a) => status(&a),
        ShareCommand::Serve(a) => super::share_serve::run(&a),
    }
}

/// This process's peak resident memory, in words.
pub(crate) fn peak_rss() -> String {
    sotto_node::process::peak_rss_bytes(None).map_or_else(
        || "peak RSS not known here".to_owned(),
        |b| format!("peak RSS {} MiB", b >> 20),
    )
}

/// Where a provider keeps its fused share of a dataset version.
pub fn fused_path(home: &Path, declaration: &Declaration) -> PathBuf {
    home.join("shares").join(format!(
        "{}-v{}.fused",
        declaration.dataset, declaration.version
    ))
}

pub(crate) struct Provider {
    home: PathBuf,
    pub(crate) me: String,
    pub(crate) declaration: Declaration,
    pub(crate) client: LedgerClient,
    pub(crate) target: String,
    block: sotto_ledger::block::Block,
    compute: Vec<(String, String)>,
}

impl Provider {
    /// The provider's home directory.
    pub(crate) fn home(&self) -> &Path {
        &self.home
    }

    /// The ledger's block 0.
    pub(crate) fn block(&self) -> &sotto_ledger::block::Block {
        &self.block
    }

    /// The compute enclaves (name, address).
    pub(crate) fn compute(&self) -> &[(String, String)] {
        &self.compute
    }
}

/// Opens the ledger context of a provider of the declared dataset.
pub(crate) fn open(a: &LedgerArgs) -> Result<Provider> {
    open_as(a, true)
}

/// Opens the ledger context of this home; unless `provider`, the home need
/// not be one of the declaration's providers (a gateway).
pub(crate) fn open_as(a: &LedgerArgs, provider: bool) -> Result<Provider> {
    let declaration = Declaration::read(&a.declaration)?;
    let home = a.home.open()?;
    let me = home.name().to_string();
    ensure!(
        !provider || declaration.index_of(&me).is_some(),
        "{me} is not a provider of dataset {} version {} ({}); the declaration names {}",
        declaration.dataset,
        declaration.version,
        a.declaration.display(),
        declaration
            .providers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let (block, _, _) = read_genesis(&a.genesis)?;
    let compute = super::ledger::compute_nodes(&a.compute)?;
    Ok(Provider {
        home: home.dir().to_owned(),
        client: LedgerClient::new(home, &block, compute.clone())?,
        me,
        declaration,
        target: a.target.clone(),
        block,
        compute,
    })
}

fn call(context: &Provider, function: &str, args: &serde_json::Value) -> CallSpec {
    CallSpec {
        contract: "fragments".into(),
        function: function.into(),
        args: args.to_string().into_bytes(),
        targets: vec![context.target.clone()],
    }
}

/// The recipients' enclave keys (from the center's membership) and the tag
/// key (from group key version 1), as this provider's enclave gets them.
pub async fn keys_from_center(
    home: &NodeHome,
    center: &str,
    address: &str,
    declaration: &Declaration,
) -> Result<(Vec<HpkePublicKey>, IdTagger)> {
    let mut center_client = CenterClient::connect(home, center.parse()?, address).await?;
    let membership = center_client.members().await?;
    let keys = declaration
        .providers
        .iter()
        .map(|p| {
            let (_, _, hpke) = membership
                .members
                .iter()
                .find(|(name, _, _)| *name == p.name)
                .with_context(|| {
                    format!(
                        "provider {} is not a member of the enclave group; it registers with the center first (`sotto node register`)",
                        p.name
                    )
                })?;
            Ok(HpkePublicKey::from_bytes(&hex::decode(hpke)?)?)
        })
        .collect::<Result<Vec<_>>>()?;
    let (_, group_key) = center_client.group_key_version(home, 1).await?;
    let tag_key = hkdf_key(None, &group_key, b"sotto/share/tag-key/v1");
    Ok((keys, IdTagger::new(tag_key)))
}

fn publish(a: &PublishArgs) -> Result<()> {
    let context = open(&a.ledger)?;
    let declaration = context.declaration.clone();
    let me = context.me.clone();
    let index = declaration.index_of(&me).unwrap_or_default();
    let columns = &declaration.providers[index].columns;
    let renames = a
        .columns
        .iter()
        .map(|c| {
            c.split_once('=')
                .map(|(d, h)| (d.trim().to_owned(), h.trim().to_owned()))
                .with_context(|| format!("--column {c:?}: write DECLARED=HEADER"))
        })
        .collect::<Result<Vec<_>>>()?;
    let table = ClientTable::read(
        &a.table,
        &ColumnMap::new(&a.id_column, columns, &renames),
        columns,
    )?;
    let home = NodeHome::open(&context.home)?;
    let center = context.client.config().center.name.to_string();
    runtime()?.block_on(async {
        let (recipients, tagger) =
            keys_from_center(&home, &center, &a.center_connect, &declaration).await?;
        // Shares come from a ChaCha stream seeded by the OS, not from one
        // system call per value.
        let mut rng = rand_chacha::ChaCha20Rng::from_rng(OsRng)?;
        let fragments = split(&declaration, &me, table.iter(), &tagger, &mut rng)?;
        // One fragment per recipient, posted side by side (chunks of
        // different fragments never touch the same state); the chunks of
        // one fragment in order, each waiting for its commit.
        let mut posting = tokio::task::JoinSet::new();
        for (j, rows) in fragments.iter().enumerate() {
            let recipient = declaration.providers[j].name.clone();
            let chunks = seal_fragment(
                &declaration,
                &me,
                &recipient,
                &recipients[j],
                rows,
                a.chunk_rows,
                &mut rng,
            )?;
            let client = LedgerClient::new(
                NodeHome::open(&context.home)?,
                &context.block,
                context.compute.clone(),
            )?;
            posting.spawn(post_fragment(client, context.target.clone(), recipient, chunks));
        }
        let mut posted = 0;
        while let Some(done) = posting.join_next().await {
            posted += done??;
        }
        println!(
            "{me} published {} rows of {} version {}: one share for each of {} providers, {posted} chunks, each sealed to its provider's enclave key ({})",
            table.rows(),
            declaration.dataset,
            declaration.version,
            declaration.providers.len(),
            peak_rss()
        );
        Ok(())
    })
}

/// Posts one fragment's chunks in order through `client`; returns how many.
async fn post_fragment(
    mut client: LedgerClient,
    target: String,
    recipient: String,
    chunks: Vec<SealedChunk>,
) -> Result<usize> {
    let count = chunks.len();
    for chunk in chunks {
        let encoded = base64::engine::general_purpose::STANDARD.encode(chunk.encode_to_vec());
        let spec = CallSpec {
            contract: "fragments".into(),
            function: "put".into(),
            args: serde_json::json!({ "chunk": encoded })
                .to_string()
                .into_bytes(),
            targets: vec![target.clone()],
        };
        let committed = client.invoke(&spec).await?;
        ensure!(
            committed.code.is_valid(),
            "a chunk for {recipient} was not committed: {}",
            committed.code
        );
    }
    Ok(count)
}

/// What fetching a fragment's chunks needs to know.
struct Fetch {
    dataset: String,
    version: u64,
    target: String,
}

impl Fetch {
    /// Fetches chunks 0..count from `sender` to this provider, in order.
    async fn chunks(
        self,
        mut client: LedgerClient,
        sender: String,
        count: u64,
    ) -> Result<Vec<SealedChunk>> {
        let mut chunks = Vec::new();
        for index in 0..count {
            let args = serde_json::json!({
                "dataset": self.dataset,
                "version": self.version,
                "sender": sender,
                "index": index,
            });
            let spec = CallSpec {
                contract: "fragments".into(),
                function: "get".into(),
                args: args.to_string().into_bytes(),
                targets: vec![self.target.clone()],
            };
            let answer: serde_json::Value = serde_json::from_slice(&client.query(&spec).await?)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(answer["chunk"].as_str().unwrap_or_default())
                .context("the fragments contract answered a chunk that is not base64")?;
            chunks.push(SealedChunk::decode(bytes.as_slice())?);
        }
        Ok(chunks)
    }
}

/// The posted and total chunk counts of every fragment, from the contract.
async fn posted(context: &mut Provider) -> Result<Vec<(String, String, u64, u64)>> {
    let declaration = &context.declaration;
    let providers: Vec<&str> = declaration
        .providers
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    let args = serde_json::json!({
        "dataset": declaration.dataset.as_str(),
        "version": declaration.version,
        "providers": providers,
    });
    let spec = call(context, "status", &args);
    let answer: serde_json::Value = serde_json::from_slice(&context.client.query(&spec).await?)?;
    let list = answer["fragments"]
        .as_array()
        .context("the fragments contract answered no list")?;
    Ok(list
        .iter()
        .map(|f| {
            (
                f["sender"].as_str().unwrap_or_default().to_owned(),
                f["recipient"].as_str().unwrap_or_default().to_owned(),
                f["posted"].as_u64().unwrap_or(0),
                f["count"].as_u64().unwrap_or(0),
            )
        })
        .collect())
}

fn fuse(a: &FuseArgs) -> Result<()> {
    let mut context = open(&a.ledger)?;
    let declaration = context.declaration.clone();
    let out = fused_path(&context.home, &declaration);
    ensure!(
        !out.exists(),
        "{} already holds this provider's fused share of {} version {}; a version is fused once",
        out.display(),
        declaration.dataset,
        declaration.version
    );
    let enclave = SoftwareEnclave::current(PlatformKey::read(&a.platform_key)?)?;
    let home = NodeHome::open(&context.home)?;
    let key = hpke_key(&home)?;
    let me = context.me.clone();
    let share = runtime()?.block_on(async {
        let mine: Vec<(String, u64)> = posted(&mut context)
            .await?
            .into_iter()
            .filter(|(_, recipient, _, _)| *recipient == me)
            .map(|(sender, _, posted, _)| (sender, posted))
            .collect();
        // The chunks of each sender fetched side by side, one client each;
        // only those posted (in order), so that the fuser names a fragment
        // still incomplete with how many of its chunks arrived.
        let mut fetching = tokio::task::JoinSet::new();
        for (sender, count) in mine {
            let client = LedgerClient::new(
                NodeHome::open(&context.home)?,
                &context.block,
                context.compute.clone(),
            )?;
            let fetch = Fetch {
                dataset: declaration.dataset.to_string(),
                version: declaration.version,
                target: context.target.clone(),
            };
            fetching.spawn(fetch.chunks(client, sender, count));
        }
        let mut fuser = Fuser::new(&declaration);
        while let Some(fetched) = fetching.join_next().await {
            for chunk in fetched?? {
                fuser.add(open_chunk(&declaration, &me, &key, &chunk)?)?;
            }
        }
        Ok::<_, anyhow::Error>(fuser.finish()?)
    })?;
    let sealed = sotto_share::at_rest::seal(&enclave, &declaration, &share)?;
    if let Some(dir) = out.parent() {
        sotto_node::files::create_private_dir(dir)?;
    }
    write_atomic(&out, &sealed, Visibility::Private)?;
    println!(
        "{me} fused its share of {} version {}: {} customers x {} columns from {} providers, sealed by its enclave in {} ({})",
        declaration.dataset,
        declaration.version,
        share.len(),
        share.width,
        declaration.providers.len(),
        out.display(),
        peak_rss()
    );
    Ok(())
}

fn status(a: &StatusArgs) -> Result<()> {
    let mut context = open(&a.ledger)?;
    let fragments = runtime()?.block_on(posted(&mut context))?;
    let declaration = &context.declaration;
    println!("{} version {}:", declaration.dataset, declaration.version);
    let mut complete = true;
    for (sender, recipient, posted, count) in &fragments {
        let done = *count > 0 && posted == count;
        complete &= done;
        println!(
            "  {sender} -> {recipient}: {posted} of {} chunks{}",
            if *count == 0 {
                "?".to_owned()
            } else {
                count.to_string()
            },
            if done { "" } else { " (incomplete)" }
        );
    }
    println!(
        "  {}",
        if complete {
            "every provider's fragments are posted: each provider may fuse"
        } else {
            "not complete: no provider can fuse yet"
        }
    );
    Ok(())
}
