//! `sotto relay serve`: an untrusted forwarding relay between institutions.

use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};
use sotto_node::NodeName;
use sotto_psi::online::{serve_relay, RelayConfig};

use super::node::HomeArg;
use super::psi::{bind_and_announce, ctrl_c, runtime};

/// `sotto relay ...`
#[derive(Subcommand)]
pub enum RelayCommand {
    /// Forward PSI sessions to providers until Ctrl-C. Prints `listening on ADDRESS`.
    ///
    /// The relay sees only encrypted, signed elements; providers admit it
    /// with `psi serve --relay NAME`, and requesters use `psi run --via NAME`.
    Serve(RelayServeArgs),
}

/// Arguments of `sotto relay serve`.
#[derive(Args)]
pub struct RelayServeArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:7444")]
    listen: String,
    /// A provider and its address, NAME=HOST:PORT (repeat for several).
    #[arg(long = "route", value_name = "NAME=HOST:PORT", value_parser = parse_route, required = true)]
    routes: Vec<(NodeName, String)>,
}

fn parse_route(text: &str) -> Result<(NodeName, String), String> {
    let (name, address) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=HOST:PORT"))?;
    let name = name.parse::<NodeName>().map_err(|e| e.to_string())?;
    Ok((name, address.to_owned()))
}

/// Runs `sotto relay ...`.
pub fn run(command: RelayCommand) -> Result<()> {
    let RelayCommand::Serve(a) = command;
    let home = a.home.open()?;
    sotto_net::tls::TlsMaterial::load(&home)?.check_validity(time::OffsetDateTime::now_utc())?;
    let config = RelayConfig {
        home,
        routes: a.routes,
        hook: None,
        connect_timeout: Duration::from_secs(10),
    };
    runtime()?.block_on(async move {
        let listener = bind_and_announce(&a.listen).await?;
        serve_relay(listener, config, ctrl_c()).await?;
        anyhow::Ok(())
    })
}
