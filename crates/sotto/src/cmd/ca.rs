//! `sotto ca ...`: the consortium certificate authority.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use sotto_net::ca::ConsortiumCa;
use time::{Duration, OffsetDateTime};

use super::node::HomeArg;

/// `sotto ca ...`
#[derive(Subcommand)]
pub enum CaCommand {
    /// Create a consortium CA (its private key never leaves DIR).
    Init(CaInitArgs),
    /// Issue a node's TLS certificate, bound to its name and identity key, into its home.
    Issue(CaIssueArgs),
}

/// Arguments of `sotto ca init`.
#[derive(Args)]
pub struct CaInitArgs {
    /// Directory for the CA key (mode 0600) and certificate.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The CA's common name.
    #[arg(long, default_value = "sotto consortium CA")]
    name: String,
    /// Validity of the CA certificate, in days.
    #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(i64).range(1..=36500))]
    valid_days: i64,
}

/// Arguments of `sotto ca issue`.
#[derive(Args)]
pub struct CaIssueArgs {
    /// The CA directory.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    #[command(flatten)]
    home: HomeArg,
    /// Validity of the node certificate, in days (0 issues an already expired
    /// certificate, for testing refusal).
    #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(i64).range(0..=3650))]
    valid_days: i64,
}

/// Runs `sotto ca ...`.
pub fn run(command: CaCommand) -> Result<()> {
    let now = OffsetDateTime::now_utc();
    match command {
        CaCommand::Init(a) => {
            let ca = ConsortiumCa::init(&a.dir, &a.name, now, a.valid_days)?;
            println!(
                "consortium CA {:?} created in {}",
                a.name,
                ca.dir().display()
            );
        }
        CaCommand::Issue(a) => {
            let ca = ConsortiumCa::open(&a.dir)?;
            let home = a.home.open()?;
            let (not_before, not_after) = if a.valid_days == 0 {
                (now - Duration::days(2), now - Duration::days(1))
            } else {
                (
                    now - Duration::minutes(5),
                    now + Duration::days(a.valid_days),
                )
            };
            ca.enroll(&home, not_before, not_after)?;
            println!(
                "issued a TLS certificate for {} (identity {}), valid until {}, into {}",
                home.name(),
                home.identity().public(),
                not_after.date(),
                home.dir().join("tls").display()
            );
        }
    }
    Ok(())
}
