//! `sotto model`: the consortium's model registry on the ledger
//! (docs/share.md). A provider registers a model's name, version, digest,
//! kind, dataset and columns through the `models` contract (its policy
//! decides who must endorse); anyone allowed reads a registration, and
//! `check` refuses a model file whose digest is not the registered one.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Result};
use clap::{Args, Subcommand};
use sotto_ledger::contracts::Registration;
use sotto_ledger::online::client::CallSpec;
use sotto_share::model::Model;

use super::psi::runtime;
use super::share::{open, LedgerArgs, Provider};

/// `sotto model ...`.
#[derive(Subcommand)]
pub enum ModelCommand {
    /// Register a model (JSON: a linear or logistic model, or an ONNX
    /// model's descriptor; see docs/share.md) on the ledger: its name,
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
    /// The model file (JSON; an ONNX descriptor names its .onnx file,
    /// read from beside it).
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

/// Reads a model file (linear, logistic or an ONNX descriptor) against
/// `declaration`.
pub(crate) fn read(path: &Path, declaration: &sotto_share::Declaration) -> Result<Model> {
    Ok(Model::read(path, declaration)?)
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
    let model = read(&a.model, &provider.declaration)?;
    let registration = Registration {
        name: model.name().to_owned(),
        version: model.version(),
        digest: hex::encode(model.digest()),
        kind: model.kind().to_owned(),
        dataset: model.dataset().to_owned(),
        features: model.features().to_vec(),
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

/// Reads the model file at `path` and checks it against its registration
/// on the ledger; returns it and who registered it.
pub(crate) async fn verify(provider: &mut Provider, path: &Path) -> Result<(Model, String)> {
    let model = read(path, &provider.declaration)?;
    let call = spec(
        &provider.target,
        "get",
        &serde_json::json!({ "name": model.name(), "version": model.version() }),
    );
    let answer: serde_json::Value = serde_json::from_slice(&provider.client.query(&call).await?)?;
    let registered: Registration = serde_json::from_value(answer["registration"].clone())?;
    let digest = hex::encode(model.digest());
    ensure!(
        registered.digest == digest,
        "{}: model {} version {} does not match its registration on the ledger (registered digest {}, this file {}); refuse to run it",
        path.display(),
        model.name(),
        model.version(),
        registered.digest,
        digest
    );
    let by = answer["registered_by"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((model, by))
}

fn check(a: &ModelFileArgs) -> Result<()> {
    let mut provider = open(&a.ledger)?;
    let (model, by) = runtime()?.block_on(verify(&mut provider, &a.model))?;
    println!(
        "{}: model {} version {} matches its registration by {by} (digest {})",
        a.model.display(),
        model.name(),
        model.version(),
        hex::encode(model.digest())
    );
    Ok(())
}
