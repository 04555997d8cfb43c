//! `sotto registry` (the TEE registration center) and `sotto node` (a
//! node's registration, membership and group key).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use sotto_node::NodeName;
use sotto_tee::online::center::{prepare, CenterConfig};
use sotto_tee::online::node::CenterClient;
use sotto_tee::policy::Policy;
use sotto_tee::registry::Membership;
use sotto_tee::software::{PlatformKey, SoftwareEnclave};

use super::node::{ForceArg, HomeArg};
use super::psi::{bind_and_announce, ctrl_c, runtime};

/// Registration center commands.
#[derive(Subcommand)]
pub enum RegistryCommand {
    /// Run the registration center: admits nodes whose evidence satisfies
    /// the policy, binds the center's fresh nonce and the node's keys, and
    /// shows the same code as the group's members; streams the membership,
    /// hands out versioned group keys sealed to each member (HPKE).
    ///
    /// Prints `listening on ADDRESS` once ready; serves until Ctrl-C. State
    /// lives in the home's `tee-registry.redb` (group keys sealed at rest).
    Serve(ServeArgs),
    /// Revoke a member (run with the center's own home); the group key
    /// rotates, and the member never gets a newer one.
    Revoke(RevokeArgs),
}

/// Arguments of `registry serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7445")]
    listen: String,
    /// The admission policy (TOML; see docs/tee.md).
    #[arg(long, value_name = "TOML")]
    policy: PathBuf,
    /// Development mode: the policy may accept software evidence (NOT
    /// hardware-protected).
    #[arg(long)]
    dev: bool,
    /// Rotate the group key every this many seconds.
    #[arg(long, value_name = "SECONDS")]
    rotate_every: Option<u64>,
}

/// Where the center is.
#[derive(Args)]
pub struct CenterArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The center's address, HOST:PORT.
    #[arg(long)]
    connect: String,
    /// The center's node name (a pinned peer).
    #[arg(long)]
    center: NodeName,
}

/// Arguments of `registry revoke`.
#[derive(Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    center: CenterArgs,
    /// The member to revoke.
    #[arg(long)]
    node: String,
}

/// Node commands.
#[derive(Subcommand)]
pub enum NodeCommand {
    /// Register with the center, with evidence from this node's enclave
    /// (the software backend, NOT hardware-protected, with --platform-key).
    Register(RegisterArgs),
    /// Show the center's signed membership (--watch N: the next N updates).
    Members(MembersArgs),
    /// Fetch the current group key (prints its version and fingerprint,
    /// never the key; with --seal-to, stores it sealed by the enclave).
    GroupKey(GroupKeyArgs),
    /// Leave the group (the group key rotates).
    Leave(CenterArgs),
    /// Answer other members' mutual authentication (checked against the
    /// center's current membership). Prints `listening on ADDRESS`; serves
    /// until Ctrl-C.
    AuthServe(AuthServeArgs),
    /// Mutually authenticate with another member: both sides prove the
    /// identity key the center's signed membership lists for them.
    Auth(AuthArgs),
}

/// Arguments of `node auth-serve`.
#[derive(Args)]
pub struct AuthServeArgs {
    #[command(flatten)]
    center: CenterArgs,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7446")]
    listen: String,
}

/// Arguments of `node auth`.
#[derive(Args)]
pub struct AuthArgs {
    #[command(flatten)]
    center: CenterArgs,
    /// The member to authenticate.
    #[arg(long)]
    peer: NodeName,
    /// Its `node auth-serve` address, HOST:PORT.
    #[arg(long)]
    peer_connect: String,
}

/// Arguments of `node register`.
#[derive(Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    center: CenterArgs,
    /// Software platform key (development; NOT hardware-protected).
    #[arg(long, value_name = "FILE")]
    platform_key: PathBuf,
}

/// Arguments of `node members`.
#[derive(Args)]
pub struct MembersArgs {
    #[command(flatten)]
    center: CenterArgs,
    /// Print the membership now and after each of the next N-1 changes.
    #[arg(long, value_name = "N")]
    watch: Option<usize>,
}

/// Arguments of `node group-key`.
#[derive(Args)]
pub struct GroupKeyArgs {
    #[command(flatten)]
    center: CenterArgs,
    /// Store the key sealed by the software enclave under this platform key.
    #[arg(long, value_name = "FILE")]
    platform_key: Option<PathBuf>,
    /// Where to store the sealed key.
    #[arg(long, value_name = "FILE", requires = "platform_key")]
    seal_to: Option<PathBuf>,
    #[command(flatten)]
    force: ForceArg,
}

fn show(m: &Membership) {
    println!(
        "membership v{} ({} members, group key v{}, measurement {}):",
        m.version,
        m.members.len(),
        m.group_key_version,
        m.measurement.as_deref().unwrap_or("none yet")
    );
    for (name, identity, _) in &m.members {
        println!("  {name}  identity {identity}");
    }
}

async fn connect(c: &CenterArgs) -> Result<(sotto_node::NodeHome, CenterClient)> {
    let home = c.home.open()?;
    let client = CenterClient::connect(&home, c.center.clone(), &c.connect).await?;
    Ok((home, client))
}

/// Runs a `registry` command.
pub fn run_registry(command: RegistryCommand) -> Result<()> {
    match command {
        RegistryCommand::Serve(a) => {
            let config = CenterConfig {
                home: a.home.open()?,
                policy: Policy::read(&a.policy)?,
                dev: a.dev,
                rotate_every: a.rotate_every.map(Duration::from_secs),
            };
            if a.dev {
                tracing::warn!(
                    "development mode: software evidence (NOT hardware-protected) may be accepted"
                );
            }
            runtime()?.block_on(async move {
                let center = prepare(config)?;
                let listener = bind_and_announce(&a.listen).await?;
                center.serve(listener, ctrl_c()).await?;
                anyhow::Ok(())
            })
        }
        RegistryCommand::Revoke(a) => runtime()?.block_on(async move {
            let (_, mut client) = connect(&a.center).await?;
            let m = client.revoke(&a.node).await?;
            println!("revoked {}; group key now v{}", a.node, m.group_key_version);
            anyhow::Ok(())
        }),
    }
}

/// Runs a `node` command.
pub fn run_node(command: NodeCommand) -> Result<()> {
    runtime()?.block_on(async move {
        match command {
            NodeCommand::Register(a) => {
                let (home, mut client) = connect(&a.center).await?;
                let enclave = SoftwareEnclave::current(PlatformKey::read(&a.platform_key)?)?;
                let m = client.register(&home, &enclave).await?;
                println!(
                    "registered with {} (software enclave, NOT hardware-protected)",
                    a.center.center
                );
                show(&m);
            }
            NodeCommand::Members(a) => {
                let (_, mut client) = connect(&a.center).await?;
                match a.watch {
                    Some(n) => client.watch(n, show).await?,
                    None => show(&client.members().await?),
                }
            }
            NodeCommand::GroupKey(a) => {
                if let (Some(platform_key), Some(path)) = (&a.platform_key, &a.seal_to) {
                    a.force.rules().with_input(platform_key).check(path)?;
                }
                let (home, mut client) = connect(&a.center).await?;
                let (version, key) = client.group_key(&home).await?;
                let fingerprint = hex::encode(&sotto_crypto::hash::sha256(&key)[..8]);
                println!("group key v{version}, fingerprint {fingerprint}");
                if let (Some(platform_key), Some(path)) = (&a.platform_key, &a.seal_to) {
                    let enclave = SoftwareEnclave::current(PlatformKey::read(platform_key)?)?;
                    let sealed =
                        sotto_tee::enclave::Enclave::seal(&enclave, &key, &version.to_be_bytes())?;
                    sotto_node::files::write_atomic(
                        path,
                        &sealed,
                        sotto_node::files::Visibility::Private,
                    )?;
                    println!("sealed to this binary's measurement in {}", path.display());
                }
            }
            NodeCommand::AuthServe(a) => {
                let (home, client) = connect(&a.center).await?;
                let listener = bind_and_announce(&a.listen).await?;
                sotto_tee::online::peer::serve(listener, home, client, ctrl_c()).await?;
            }
            NodeCommand::Auth(a) => {
                let (home, mut client) = connect(&a.center).await?;
                let peer = sotto_tee::online::peer::authenticate(
                    &home,
                    &mut client,
                    &a.peer,
                    &a.peer_connect,
                )
                .await?;
                println!(
                    "mutually authenticated with {peer} (both listed in the center's membership)"
                );
            }
            NodeCommand::Leave(a) => {
                let (_, mut client) = connect(&a).await?;
                let m = client.leave().await?;
                println!("left; group key now v{}", m.group_key_version);
            }
        }
        anyhow::Ok(())
    })
}
