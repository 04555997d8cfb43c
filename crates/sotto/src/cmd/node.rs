//! `sotto init`, `sotto identity`, `sotto peer`: the node home and its peers.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use rand::rngs::OsRng;
use sotto_node::files::{write_atomic, Visibility};
use sotto_node::{NodeHome, NodeName, OutputRules, MIN_BLS_KEYS};

/// The node home, from --home or $SOTTO_HOME.
#[derive(Args, Clone)]
pub struct HomeArg {
    /// Node home directory.
    #[arg(long, env = "SOTTO_HOME", value_name = "DIR")]
    pub home: PathBuf,
}

impl HomeArg {
    /// Opens the home.
    pub fn open(&self) -> Result<NodeHome> {
        Ok(NodeHome::open(&self.home)?)
    }
}

/// `--force` for commands that write files.
#[derive(Args, Clone, Copy)]
pub struct ForceArg {
    /// Replace output files that already exist. Inputs of the same command,
    /// files in node homes and CA directories are never overwritten.
    #[arg(long)]
    pub force: bool,
}

impl ForceArg {
    /// The rules outputs are checked against.
    pub fn rules(self) -> OutputRules {
        OutputRules::new(self.force)
    }
}

/// Arguments of `sotto init`.
#[derive(Args)]
pub struct InitArgs {
    #[command(flatten)]
    home: HomeArg,
    /// The node's name in the consortium (a-z, 0-9, '-', '_', '.').
    #[arg(long)]
    name: NodeName,
    /// Number of BLS signing keys (element i is signed by key i mod k).
    #[arg(long, default_value_t = MIN_BLS_KEYS as u8, value_parser = clap::value_parser!(u8).range(2..=16))]
    bls_keys: u8,
}

/// `sotto identity ...`
#[derive(Subcommand)]
pub enum IdentityCommand {
    /// Write this node's signed public profile (JSON) for its peers to pin.
    Export {
        #[command(flatten)]
        home: HomeArg,
        /// Write to this file instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        force: ForceArg,
    },
}

/// `sotto peer ...`
#[derive(Subcommand)]
pub enum PeerCommand {
    /// Verify a peer's profile (signature and proofs of possession) and pin it.
    Add {
        #[command(flatten)]
        home: HomeArg,
        /// The profile file written by the peer's `sotto identity export`.
        profile: PathBuf,
    },
    /// List the pinned peers.
    List {
        #[command(flatten)]
        home: HomeArg,
    },
}

/// Runs `sotto init`.
pub fn init(args: InitArgs) -> Result<()> {
    let home = NodeHome::init(
        &args.home.home,
        args.name,
        usize::from(args.bls_keys),
        &mut OsRng,
    )?;
    let profile = home.profile();
    println!(
        "created node {} in {}\nidentity key {}\n{} BLS keys; export the profile with `sotto identity export --home {}`",
        profile.name,
        home.dir().display(),
        profile.identity,
        profile.bls_keys.len(),
        home.dir().display()
    );
    Ok(())
}

/// Runs `sotto identity ...`.
pub fn identity(command: IdentityCommand) -> Result<()> {
    match command {
        IdentityCommand::Export { home, out, force } => {
            if let Some(path) = &out {
                force.rules().check(path)?;
            }
            let json = home.open()?.profile().to_json();
            match out {
                Some(path) => {
                    write_atomic(&path, json.as_bytes(), Visibility::Public)?;
                    eprintln!("profile written to {}", path.display());
                }
                None => std::io::stdout()
                    .write_all(json.as_bytes())
                    .context("writing the profile")?,
            }
            Ok(())
        }
    }
}

/// Runs `sotto peer ...`.
pub fn peer(command: PeerCommand) -> Result<()> {
    match command {
        PeerCommand::Add { home, profile } => {
            let pinned = home.open()?.pin_peer(&profile)?;
            println!(
                "pinned {} (identity {}, {} BLS keys, fingerprint {})",
                pinned.name,
                pinned.identity,
                pinned.bls_keys.len(),
                hex::encode(&pinned.fingerprint()[..8])
            );
            Ok(())
        }
        PeerCommand::List { home } => {
            for p in home.open()?.peers()? {
                println!("{}\t{}\t{} BLS keys", p.name, p.identity, p.bls_keys.len());
            }
            Ok(())
        }
    }
}
