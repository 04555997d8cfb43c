//! `sotto secrets`: the participant agent — escrow secrets to the root KMS
//! into untrusted storage, list and fetch them, recover them after a loss.
//! Plaintext goes in on standard input (or a file) and comes out on
//! standard output; the agent writes none to disk.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use rand::RngCore;
use sotto_kms::agent::{Agent, EscrowOptions, SecretId, MAX_SECRET_LEN};
use sotto_kms::escrow::SecretKind;
use sotto_kms::keys::KeyId;

use super::node::HomeArg;
use super::psi::runtime;

/// Largest secret accepted (secrets are keys, results, tokens: not bulk data).
const MAX_SECRET_BYTES: u64 = MAX_SECRET_LEN as u64;

/// Participant agent commands.
#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Configure the agent in this node home: where the KMS is (its signing
    /// key is fetched and pinned), and where escrowed secrets go.
    Init(InitArgs),
    /// Escrow a secret: sealed with HPKE to the KMS key pair(s), its kind,
    /// owner, id, key id and version bound; written to the store.
    Put(PutArgs),
    /// List this participant's escrowed secrets.
    List(ListArgs),
    /// Show an escrowed secret's envelope (kind, keys, size), without
    /// contacting the KMS and without the plaintext.
    Get(GetArgs),
    /// Recover a secret through the KMS and write it to standard output
    /// (or only its SHA-256 with --digest).
    Recover(RecoverArgs),
}

/// Arguments of `secrets init`.
#[derive(Args)]
pub struct InitArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The KMS's address, HOST:PORT.
    #[arg(long)]
    connect: String,
    /// The KMS's node name.
    #[arg(long, default_value = "kms")]
    kms: String,
    /// The second environment: a directory or s3://BUCKET/PREFIX (AWS_*
    /// variables configure endpoint, region and credentials).
    #[arg(long, value_name = "LOCATION")]
    store: String,
    /// Where mirror copies go (another directory, bucket or site).
    #[arg(long, value_name = "LOCATION")]
    mirror_store: Option<String>,
    /// Accept a KMS signing key different from the one already pinned.
    #[arg(long)]
    repin: bool,
}

/// Arguments of `secrets put`.
#[derive(Args)]
pub struct PutArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The secret's id (A-Z a-z 0-9 . _ -).
    #[arg(long)]
    id: SecretId,
    /// business-root-key, business-sub-key, intermediate-result,
    /// final-result, session, password, authorization-file, interaction-id
    /// or other.
    #[arg(long)]
    kind: SecretKind,
    /// Read the secret from this file (default: standard input).
    #[arg(long, value_name = "FILE", conflicts_with = "generate")]
    input: Option<PathBuf>,
    /// Generate a random 256-bit key as the secret (never shown).
    #[arg(long)]
    generate: bool,
    /// Key chain, innermost first (repeat for layered encryption; every
    /// key is needed to recover). Default: OWNER/escrow.
    #[arg(long = "key", value_name = "OWNER/PURPOSE")]
    keys: Vec<KeyId>,
    /// Also escrow a mirror copy to the mirror store.
    #[arg(long)]
    mirror: bool,
    /// The mirror copy's key chain (default: OWNER/mirror).
    #[arg(long = "mirror-key", value_name = "OWNER/PURPOSE", requires = "mirror")]
    mirror_keys: Vec<KeyId>,
    /// Replace an existing escrow of this id.
    #[arg(long)]
    replace: bool,
}

/// Arguments of `secrets list`.
#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    home: HomeArg,
}

/// Arguments of `secrets get`.
#[derive(Args)]
pub struct GetArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The secret's id.
    #[arg(long)]
    id: SecretId,
    /// Read the mirror copy.
    #[arg(long)]
    mirror: bool,
}

/// Arguments of `secrets recover`.
#[derive(Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The secret's id.
    #[arg(long)]
    id: SecretId,
    /// Recover from the mirror copy.
    #[arg(long)]
    mirror: bool,
    /// Print only the secret's SHA-256 (hex), not the secret.
    #[arg(long)]
    digest: bool,
}

fn read_secret(a: &PutArgs) -> Result<zeroize::Zeroizing<Vec<u8>>> {
    let mut secret = zeroize::Zeroizing::new(Vec::new());
    if a.generate {
        secret.resize(32, 0);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        return Ok(secret);
    }
    let (source, what): (Box<dyn Read>, String) = match &a.input {
        Some(path) => (
            Box::new(
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
            ),
            path.display().to_string(),
        ),
        None => (Box::new(std::io::stdin()), "standard input".into()),
    };
    source
        .take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut secret)
        .with_context(|| format!("reading the secret from {what}"))?;
    if secret.len() as u64 > MAX_SECRET_BYTES {
        bail!("{what}: the secret is over the {MAX_SECRET_BYTES}-byte limit of an escrowed secret (a recovery carries it whole); encrypt the data under a key and escrow the key instead");
    }
    if secret.is_empty() {
        bail!("{what}: the secret is empty");
    }
    Ok(secret)
}

/// Runs a `secrets` command.
pub fn run(command: SecretsCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match command {
            SecretsCommand::Init(a) => {
                let home = a.home.open()?;
                let config = Agent::setup(
                    &home,
                    &a.kms,
                    &a.connect,
                    &a.store,
                    a.mirror_store.as_deref(),
                    a.repin,
                )
                .await?;
                println!(
                    "agent configured: KMS {} at {}, signing key {} pinned; escrow store {}",
                    config.kms_name, config.kms_address, config.signing_key, config.store
                );
            }
            SecretsCommand::Put(a) => {
                let secret = read_secret(&a)?;
                let agent = Agent::open(&a.home.open()?).await?;
                let options = EscrowOptions {
                    keys: a.keys.clone(),
                    mirror: a.mirror.then(|| a.mirror_keys.clone()),
                    replace: a.replace,
                };
                let done = agent.put(&a.id, a.kind, &secret, &options).await?;
                print!(
                    "escrowed {} ({}, {} bytes) to {} under {}",
                    a.id,
                    a.kind,
                    secret.len(),
                    done.object,
                    done.keys.join(" then ")
                );
                match done.mirror_keys {
                    Some(keys) => println!("; mirror copy under {}", keys.join(" then ")),
                    None => println!(),
                }
            }
            SecretsCommand::List(a) => {
                for id in Agent::open(&a.home.open()?).await?.list().await? {
                    println!("{id}");
                }
            }
            SecretsCommand::Get(a) => {
                let stored = Agent::open(&a.home.open()?)
                    .await?
                    .get(&a.id, a.mirror)
                    .await?;
                let e = &stored.envelope;
                let keys: Vec<String> = e.layers.iter().map(ToString::to_string).collect();
                println!(
                    "{} of {}: {}, escrowed at {}, keys {}, {} ciphertext bytes",
                    e.header.secret_id,
                    e.header.owner,
                    e.header.kind,
                    stored.created,
                    keys.join(" then "),
                    e.ciphertext.len()
                );
            }
            SecretsCommand::Recover(a) => {
                let agent = Agent::open(&a.home.open()?).await?;
                let (_, secret) = agent.recover(&a.id, a.mirror).await?;
                if a.digest {
                    println!("{}", hex::encode(sotto_crypto::hash::sha256(&secret)));
                } else {
                    let mut out = std::io::stdout().lock();
                    out.write_all(&secret)?;
                    out.flush()?;
                }
            }
        }
        anyhow::Ok(())
    })
}
