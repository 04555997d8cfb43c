//! `sotto kms`: the root key management service and its operator commands
//! (create, serve, key pairs, public keys, rewrap, audit, restore).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rand::rngs::OsRng;
use sotto_crypto::identity::IdentityPublic;
use sotto_kms::agent::{Agent, SecretId};
use sotto_kms::audit;
use sotto_kms::client::KmsClient;
use sotto_kms::db::KmsDb;
use sotto_kms::lifecycle;
use sotto_kms::objects::ObjectLocation;
use sotto_kms::password::{OperatorPassword, UnsealLimits};
use sotto_kms::server::{prepare, ServeConfig};

use super::node::HomeArg;
use super::psi::{bind_and_announce, ctrl_c, runtime};
use sotto_node::clock::unix_now;

/// Root KMS commands.
#[derive(Subcommand)]
pub enum KmsCommand {
    /// Create the root KMS in a node home (which needs a consortium
    /// certificate to serve): its database, its signing key, and the first
    /// password-sealed bundle in the third environment (--backup).
    ///
    /// The operator password comes from a TTY prompt (asked twice) or
    /// --password-file, never from the command line.
    Init(InitArgs),
    /// Serve the root KMS over gRPC with mutual TLS. Prints `listening on
    /// ADDRESS` once ready; serves until Ctrl-C. Needs the operator password
    /// (checked at start) to seal the bundle after every key change.
    Serve(ServeArgs),
    /// Operator: create a key pair (HPKE X25519) for a participant.
    Keygen(KeygenArgs),
    /// Operator: add a new version of a key pair; new escrows use it, older
    /// versions still decrypt until retired.
    Rotate(RotateArgs),
    /// Operator: retire a key version; it decrypts nothing afterwards.
    Retire(RetireArgs),
    /// Operator: list every key pair version (public parts only).
    Keys(ConnectArgs),
    /// Fetch a public key as a statement signed by the KMS, in plaintext or
    /// inside an ephemeral X25519 + AES-GCM channel (--via-channel).
    Pubkey(PubkeyArgs),
    /// Participant: have the KMS re-seal escrowed secrets to the newest key
    /// versions (the plaintext never leaves the KMS) and replace the stored
    /// objects. Uses the participant's `sotto secrets init` configuration.
    Rewrap(RewrapArgs),
    /// The hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Rebuild a lost KMS in a node home from the sealed bundle in the third
    /// environment, with the operator password. A wrong password is refused
    /// and nothing is written.
    Restore(RestoreArgs),
}

/// Where the operator password comes from.
#[derive(Args)]
pub struct PasswordArg {
    /// Read the operator password from this file (first line) instead of
    /// asking on the TTY.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

/// Arguments of `kms init`.
#[derive(Args)]
pub struct InitArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The third environment, where the sealed bundle goes: a directory or
    /// s3://BUCKET/PREFIX (configured by AWS_* variables).
    #[arg(long, value_name = "LOCATION")]
    backup: String,
    #[command(flatten)]
    password: PasswordArg,
}

/// Arguments of `kms serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7447")]
    listen: String,
    #[command(flatten)]
    password: PasswordArg,
    /// Recoveries per second allowed to each participant (sustained).
    #[arg(long, default_value_t = 200)]
    recover_rate: u32,
    /// Recoveries each participant may make at once before the rate applies.
    #[arg(long, default_value_t = 1000)]
    recover_burst: u32,
    /// Seconds a reply channel lives: recovered secrets come back under keys
    /// drawn from an ephemeral key agreement that the agent and the KMS
    /// forget after this long (10 to 86400).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=86_400))]
    reply_channel_ttl: u64,
}

/// Where the KMS is.
#[derive(Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The KMS's address, HOST:PORT.
    #[arg(long)]
    connect: String,
    /// The KMS's node name (its certificate must be issued to it).
    #[arg(long, default_value = "kms")]
    kms: String,
}

/// Arguments of `kms keygen`.
#[derive(Args)]
pub struct KeygenArgs {
    #[command(flatten)]
    kms: ConnectArgs,
    /// The participant that will own the key pair.
    #[arg(long)]
    owner: String,
    /// What it is for (escrow, mirror, ...).
    #[arg(long, default_value = "escrow")]
    purpose: String,
}

/// Arguments of `kms rotate`.
#[derive(Args)]
pub struct RotateArgs {
    #[command(flatten)]
    kms: ConnectArgs,
    /// The key id, OWNER/PURPOSE.
    #[arg(long)]
    key: String,
}

/// Arguments of `kms retire`.
#[derive(Args)]
pub struct RetireArgs {
    #[command(flatten)]
    kms: ConnectArgs,
    /// The key id, OWNER/PURPOSE.
    #[arg(long)]
    key: String,
    /// The version to retire.
    #[arg(long = "key-version", value_name = "N")]
    key_version: u32,
}

/// Arguments of `kms pubkey`.
#[derive(Args)]
pub struct PubkeyArgs {
    #[command(flatten)]
    kms: ConnectArgs,
    /// The key id, OWNER/PURPOSE.
    #[arg(long)]
    key: String,
    /// A version (default: the newest active one).
    #[arg(long = "key-version", value_name = "N")]
    key_version: Option<u32>,
    /// Receive it inside an ephemeral X25519 + AES-GCM channel.
    #[arg(long)]
    via_channel: bool,
    /// The KMS signing key to check the statement with, hex (default: the
    /// one pinned by `sotto secrets init` in this home, else the one the
    /// KMS presents, printed so it can be compared out of band).
    #[arg(long, value_name = "HEX")]
    signing_key: Option<String>,
}

/// Arguments of `kms rewrap`.
#[derive(Args)]
pub struct RewrapArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Only these secrets (default: all of this participant's).
    #[arg(long = "id")]
    ids: Vec<SecretId>,
}

/// Audit log commands.
#[derive(Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain: online through the KMS (--connect, operator
    /// only), or from the home's database while the KMS is stopped.
    Verify(AuditArgs),
}

/// Arguments of `kms audit verify`.
#[derive(Args)]
pub struct AuditArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The KMS's address (omit to read the stopped KMS's database).
    #[arg(long)]
    connect: Option<String>,
    /// The KMS's node name.
    #[arg(long, default_value = "kms")]
    kms: String,
    /// Also print every entry (one JSON object per line).
    #[arg(long)]
    show: bool,
}

/// Arguments of `kms restore`.
#[derive(Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The third environment holding the sealed bundle: a directory or
    /// s3://BUCKET/PREFIX.
    #[arg(long, value_name = "LOCATION")]
    from: String,
    #[command(flatten)]
    password: PasswordArg,
    /// The most memory (MiB) the bundle's Argon2id header may ask for. The
    /// bundle comes from untrusted storage, so the default is four times
    /// the sealing cost; raise it only for a bundle you sealed with more.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(64..=4_194_304))]
    max_unseal_memory_mib: u32,
    /// The most Argon2id passes the bundle's header may ask for (default:
    /// four times the sealing cost).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(3..=1000))]
    max_unseal_passes: u32,
}

/// Reads the operator password from `file` or the TTY (`confirm`: twice).
pub fn read_password(file: Option<&Path>, confirm: bool) -> Result<OperatorPassword> {
    if let Some(path) = file {
        sotto_node::files::warn_if_exposed(path);
        let text = zeroize::Zeroizing::new(
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        );
        let line = text.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        return OperatorPassword::new(line.to_vec())
            .with_context(|| format!("password file {}", path.display()));
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!("no terminal to ask for the operator password on; pass --password-file FILE");
    }
    let first = zeroize::Zeroizing::new(rpassword::prompt_password("KMS operator password: ")?);
    if confirm {
        let again = zeroize::Zeroizing::new(rpassword::prompt_password("Repeat the password: ")?);
        if *first != *again {
            bail!("the two passwords differ; nothing was created");
        }
    }
    Ok(OperatorPassword::new(first.as_bytes().to_vec())?)
}

async fn connect(a: &ConnectArgs) -> Result<KmsClient> {
    let home = a.home.open()?;
    Ok(KmsClient::connect(&home, &a.kms, &a.connect).await?)
}

fn print_key(info: &sotto_kms::keys::KeyInfo) {
    println!(
        "{} v{} {:?} public {}",
        info.key_id, info.version, info.status, info.public_key
    );
}

async fn pinned_signer(a: &PubkeyArgs, client: &mut KmsClient) -> Result<IdentityPublic> {
    if let Some(text) = &a.signing_key {
        let bytes = hex::decode(text).context("--signing-key is not hex")?;
        return Ok(IdentityPublic::from_bytes(&bytes)?);
    }
    let home = a.kms.home.open()?;
    if let Ok(config) = Agent::config(&home) {
        let bytes = hex::decode(&config.signing_key).context("pinned signing key")?;
        return Ok(IdentityPublic::from_bytes(&bytes)?);
    }
    let key = client.signing_key().await?;
    println!("KMS signing key (as presented, not pinned): {key}");
    Ok(key)
}

async fn audit_verify(a: AuditArgs) -> Result<()> {
    let entries = match &a.connect {
        Some(address) => {
            let home = a.home.open()?;
            KmsClient::connect(&home, &a.kms, address)
                .await?
                .audit()
                .await?
        }
        None => KmsDb::open(&a.home.home)?.audit_entries()?,
    };
    if a.show {
        for entry in &entries {
            println!("{}", serde_json::to_string(entry)?);
        }
    }
    let count = audit::verify(&entries).map_err(|e| {
        anyhow::anyhow!(
            "audit log broken: {e}; the log was edited, or entries were removed or reordered"
        )
    })?;
    let head = entries.last().map(|e| e.hash.as_str()).unwrap_or("none");
    println!("audit log intact: {count} entries, head {head}");
    Ok(())
}

/// Rewraps every asked-for secret, going on past failures; fails at the end
/// naming every secret that could not be rewrapped.
async fn rewrap(a: RewrapArgs) -> Result<()> {
    let agent = Agent::open(&a.home.open()?).await?;
    let ids = if a.ids.is_empty() {
        agent.list().await?
    } else {
        a.ids
    };
    let mut failed = Vec::new();
    for id in &ids {
        match agent.rewrap(id).await {
            Ok(moved) if moved.is_empty() => {
                println!("{id}: already under the newest key versions");
            }
            Ok(moved) => println!("{id}: rewrapped to {}", moved.join(", ")),
            Err(e) => {
                eprintln!("{id}: NOT rewrapped: {e}");
                failed.push(id.to_string());
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} secrets could not be rewrapped and stay under their old key versions: {}",
            failed.len(),
            ids.len(),
            failed.join(", ")
        );
    }
    Ok(())
}

/// Runs a `kms` command.
pub fn run(command: KmsCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match command {
            KmsCommand::Init(a) => {
                let home = a.home.open()?;
                lifecycle::refuse_existing(home.dir())?;
                let password = read_password(a.password.password_file.as_deref(), true)?;
                let backup = ObjectLocation::create(&a.backup)?;
                let created =
                    lifecycle::init(home.dir(), &password, &backup, unix_now(), &mut OsRng).await?;
                println!(
                    "root KMS created in {}; signing key {}; sealed bundle generation {} in {backup}",
                    home.dir().display(),
                    created.signing_key,
                    created.generation
                );
            }
            KmsCommand::Serve(a) => {
                let password = read_password(a.password.password_file.as_deref(), false)?;
                let config = ServeConfig {
                    home: a.home.open()?,
                    password,
                    recover_rate: a.recover_rate,
                    recover_burst: a.recover_burst,
                    reply_channel_ttl: std::time::Duration::from_secs(a.reply_channel_ttl),
                };
                let kms = prepare(config).await?;
                let listener = bind_and_announce(&a.listen).await?;
                kms.serve(listener, ctrl_c()).await?;
            }
            KmsCommand::Keygen(a) => {
                print_key(&connect(&a.kms).await?.keygen(&a.owner, &a.purpose).await?);
            }
            KmsCommand::Rotate(a) => print_key(&connect(&a.kms).await?.rotate(&a.key).await?),
            KmsCommand::Retire(a) => {
                print_key(&connect(&a.kms).await?.retire(&a.key, a.key_version).await?);
            }
            KmsCommand::Keys(a) => {
                for info in connect(&a).await?.list_keys().await? {
                    print_key(&info);
                }
            }
            KmsCommand::Pubkey(a) => {
                let mut client = connect(&a.kms).await?;
                let signer = pinned_signer(&a, &mut client).await?;
                let statement = client
                    .public_key(&signer, &a.key, a.key_version, a.via_channel)
                    .await?;
                print_key(&statement.key);
                println!(
                    "signed by the KMS signing key{}",
                    if a.via_channel {
                        ", received inside an ephemeral X25519 + AES-GCM channel"
                    } else {
                        ""
                    }
                );
            }
            KmsCommand::Rewrap(a) => rewrap(a).await?,
            KmsCommand::Audit(AuditCommand::Verify(a)) => audit_verify(a).await?,
            KmsCommand::Restore(a) => {
                let home = a.home.open()?;
                let password = read_password(a.password.password_file.as_deref(), false)?;
                let from = ObjectLocation::parse(&a.from)?;
                let limits = UnsealLimits {
                    memory_kib: a.max_unseal_memory_mib.saturating_mul(1024),
                    passes: a.max_unseal_passes,
                    ..UnsealLimits::default()
                };
                let created = lifecycle::restore(
                    home.dir(),
                    &password,
                    &from,
                    limits,
                    unix_now(),
                    &mut OsRng,
                )
                .await?;
                println!(
                    "root KMS restored in {} from {from}: {} key pair versions, bundle generation {}, signing key {}",
                    home.dir().display(),
                    created.keys,
                    created.generation,
                    created.signing_key
                );
            }
        }
        anyhow::Ok(())
    })
}
