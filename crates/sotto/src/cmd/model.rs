//! `sotto model`: the consortium's model registry on the ledger
//! (docs/share.md). A provider registers a model's name, version, digest,
//! kind, dataset and columns through the `models` contract (its policy
//! decides who must endorse); anyone allowed reads a registration, and
//! `check` refuses a model file whose digest is not the registered one.

use std::path::PathBuf;

use anyhow::{ensure, Result};
use clap::{Args, Subcommand};
use sotto_ledger::contracts::Registration;
use sotto_ledger::online::client::CallSpec;
use sotto_share::model::LinearModel;

use super::psi::runtime;
use super::share::{open, LedgerArgs};

/// `sotto model ...`.
#[derive(Subcommand)]
pub enum ModelCommand {
    /// Register a model (JSON, see docs/share.md) on the ledger: its name,
    /// version, digest, kind, dataset and feature columns, never its
    /// weights. A version is registered once.
    Register(ModelFileArgs),
    /// Check a model file against its registration: refused unless its
    /// digest is the one the ledger holds.
    Check(ModelFileArgs),
}

/// Arguments of `model register` and `model check`.
#[derive(Args)]
pub struct ModelFileArgs {
    #[command(flatten)]
    ledger: LedgerArgs,
    /// The model file (JSON).
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
}

/// Runs `sotto model ...`.
pub fn run(command: ModelCommand) -> Result<()> {
    match command {
        ModelCommand::Register(a) => register(&a),
        ModelCommand::Check(a) => check(&a),
    }
}

fn read(a: &ModelFileArgs, declaration: &sotto_share::Declaration) -> Result<LinearModel> {
    let text = std::fs::read_to_string(&a.model)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the model: {e}", a.model.display()))?;
    Ok(LinearModel::parse(&a.model, &text, declaration)?)
}

fn spec(target: &str, function: &str, args: &serde_json::Value) -> CallSpec {
    CallSpec {
        contract: "models".into(),
        function: function.into(),
        args: args.to_string().into_bytes(),
        targets: vec![target.to_owned()],
    }
}

fn register(a: &ModelFileArgs) -> Result<()> {
    let mut provider = open(&a.ledger)?;
    let model = read(a, &provider.declaration)?;
    let registration = Registration {
        name: model.name.clone(),
        version: model.version,
        digest: hex::encode(model.digest),
        kind: model.kind().to_owned(),
        dataset: model.dataset.clone(),
        features: model.features.clone(),
    };
    let call = spec(
        &provider.target,
        "register",
        &serde_json::to_value(&registration)?,
    );
    let committed = runtime()?.block_on(provider.client.invoke(&call))?;
    ensure!(
        committed.code.is_valid(),
        "the registration was not committed: {}",
        committed.code
    );
    println!(
        "{} registered model {} version {} ({}, {} features of {}), digest {}",
        provider.me,
        registration.name,
        registration.version,
        registration.kind,
        registration.features.len(),
        registration.dataset,
        registration.digest
    );
    Ok(())
}

fn check(a: &ModelFileArgs) -> Result<()> {
    let mut provider = open(&a.ledger)?;
    let model = read(a, &provider.declaration)?;
    let call = spec(
        &provider.target,
        "get",
        &serde_json::json!({ "name": model.name, "version": model.version }),
    );
    let answer: serde_json::Value =
        serde_json::from_slice(&runtime()?.block_on(provider.client.query(&call))?)?;
    let registered: Registration = serde_json::from_value(answer["registration"].clone())?;
    let digest = hex::encode(model.digest);
    ensure!(
        registered.digest == digest,
        "{}: model {} version {} does not match its registration on the ledger (registered digest {}, this file {}); refuse to run it",
        a.model.display(),
        model.name,
        model.version,
        registered.digest,
        digest
    );
    println!(
        "{}: model {} version {} matches its registration by {} (digest {digest})",
        a.model.display(),
        model.name,
        model.version,
        answer["registered_by"].as_str().unwrap_or_default()
    );
    Ok(())
}
