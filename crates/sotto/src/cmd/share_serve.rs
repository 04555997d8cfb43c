//! `sotto share serve`: a provider's inference service. It unseals its
//! fused share inside its enclave, checks each model it is to serve
//! against the ledger's registry, follows the enclave group at the center,
//! and answers partial results `w · s_j` (sealed under the group's key) to
//! the gateways it names, over gRPC with mutual TLS (docs/share.md).

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use sotto_net::tls::TlsMaterial;
use sotto_node::NodeHome;
use sotto_share::online::group::follow;
use sotto_share::online::provider::{serve, ProviderService};
use sotto_tee::software::{PlatformKey, SoftwareEnclave};

use super::psi::{bind_and_announce, ctrl_c, runtime};
use super::share::{fused_path, open, LedgerArgs};

/// Arguments of `share serve`.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    ledger: LedgerArgs,
    /// The registration center's address (a pinned peer of this home).
    #[arg(long, value_name = "HOST:PORT")]
    center_connect: String,
    /// The software enclave's platform key that sealed the fused share
    /// (development only: NOT hardware-protected).
    #[arg(long, value_name = "FILE")]
    platform_key: PathBuf,
    /// Where to listen for inference enclaves (port 0: any free port; the
    /// address is printed as `listening on ...`).
    #[arg(long, value_name = "HOST:PORT")]
    listen: String,
    /// A model to answer for (JSON; checked against its registration on
    /// the ledger at start; repeat for more).
    #[arg(long = "model", value_name = "FILE", required = true)]
    models: Vec<PathBuf>,
    /// A gateway (inference enclave) allowed to ask, by node name; it must
    /// also be a current member of the enclave group (repeat for more).
    #[arg(long = "gateway", value_name = "NODE", required = true)]
    gateways: Vec<String>,
}

/// Runs `sotto share serve`.
pub fn run(a: &ServeArgs) -> Result<()> {
    let mut context = open(&a.ledger)?;
    let declaration = context.declaration.clone();
    let path = fused_path(context.home(), &declaration);
    let sealed = std::fs::read(&path).with_context(|| {
        format!(
            "{}: no fused share of {} version {} here; run `sotto share fuse` first",
            path.display(),
            declaration.dataset,
            declaration.version
        )
    })?;
    let enclave = SoftwareEnclave::current(PlatformKey::read(&a.platform_key)?)?;
    let share = sotto_share::at_rest::unseal(&enclave, &declaration, &sealed)
        .with_context(|| format!("{}: the fused share does not unseal", path.display()))?;
    let home = NodeHome::open(context.home())?;
    let center = context.client.config().center.name.clone();
    runtime()?.block_on(async {
        let mut models = HashMap::new();
        for file in &a.models {
            let (model, _) = super::model::verify(&mut context, file).await?;
            models.insert((model.name().to_owned(), model.version()), model);
        }
        let tls = TlsMaterial::load(&home)?;
        let group = follow(
            NodeHome::open(context.home())?,
            center,
            a.center_connect.clone(),
        )
        .await?;
        let service = ProviderService {
            me: context.me.clone(),
            declaration,
            share,
            models,
            gateways: a.gateways.clone(),
            group,
        };
        let listener = bind_and_announce(&a.listen).await?;
        serve(listener, &tls, service, ctrl_c()).await?;
        Ok(())
    })
}
