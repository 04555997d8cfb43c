//! `sotto infer`: an outside user of the inference gateway. Sends customer
//! ids and a model name over HTTPS (trusting only the consortium CA;
//! authenticated by an API token or this home's client certificate) and
//! prints the gateway's JSON answer; with `--repeat`, measures latency and
//! throughput over one connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use sotto_net::https::https_client_config;
use sotto_net::tls::TlsMaterial;
use sotto_node::NodeHome;

use super::psi::runtime;

/// Arguments of `sotto infer`.
#[derive(Args)]
pub struct InferArgs {
    /// The gateway's address.
    #[arg(long, value_name = "HOST:PORT")]
    gateway: SocketAddr,
    /// The gateway's name in its certificate.
    #[arg(long, default_value = "gateway")]
    gateway_name: String,
    /// The consortium CA certificate (PEM) the gateway's certificate must
    /// chain to.
    #[arg(long, value_name = "FILE", required_unless_present = "home")]
    ca: Option<PathBuf>,
    /// A file holding this user's API token.
    #[arg(long, value_name = "FILE", conflicts_with = "home")]
    token_file: Option<PathBuf>,
    /// Authenticate with this node home's client certificate (its CA is
    /// trusted too).
    #[arg(long, env = "SOTTO_HOME", value_name = "DIR")]
    home: Option<PathBuf>,
    /// The model's name.
    #[arg(long)]
    model: String,
    /// The model's version (the latest the gateway serves if absent).
    #[arg(long)]
    model_version: Option<u64>,
    /// Customer ids, comma separated.
    #[arg(long, value_delimiter = ',', required_unless_present = "ids_file")]
    ids: Vec<String>,
    /// A file of customer ids, one per line.
    #[arg(long, value_name = "FILE", conflicts_with = "ids")]
    ids_file: Option<PathBuf>,
    /// Send the same request this many times over one connection and
    /// report the latency (p50, p99) and scores per second instead of the
    /// answer.
    #[arg(long, value_name = "N")]
    repeat: Option<usize>,
}

fn ids(a: &InferArgs) -> Result<Vec<String>> {
    let Some(path) = &a.ids_file else {
        return Ok(a.ids.clone());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the ids", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn client(a: &InferArgs) -> Result<reqwest::Client> {
    let material = match &a.home {
        Some(dir) => Some(TlsMaterial::load(&NodeHome::open(dir)?)?),
        None => None,
    };
    let ca = match (&a.ca, &material) {
        (Some(path), _) => std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the CA certificate", path.display()))?,
        (None, Some(m)) => m.ca_pem().to_owned(),
        (None, None) => bail!("give --ca FILE (the consortium CA certificate) or --home"),
    };
    let tls = https_client_config(&ca, material.as_ref())?;
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .resolve(&a.gateway_name, a.gateway)
        .timeout(Duration::from_secs(30))
        .build()?)
}

/// Sends one request; the answer's JSON, or the gateway's refusal in words.
async fn send(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    body: &[u8],
) -> Result<serde_json::Value> {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {}", sotto_net::tls::describe_transport(&e)))?;
    let status = response.status();
    let bytes = response.bytes().await?;
    let answer: serde_json::Value = serde_json::from_slice(&bytes)
        .with_context(|| format!("the gateway answered {status} with a body that is not JSON"))?;
    if !status.is_success() {
        bail!(
            "the gateway refused ({} {}): {}",
            status.as_u16(),
            answer["error"]["code"].as_str().unwrap_or("?"),
            answer["error"]["message"].as_str().unwrap_or("?")
        );
    }
    Ok(answer)
}

/// Runs `sotto infer`.
pub fn run(a: &InferArgs) -> Result<()> {
    let ids = ids(a)?;
    let token = match &a.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("{}: cannot read the token", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let body =
        serde_json::json!({ "model": a.model, "version": a.model_version, "ids": ids }).to_string();
    let url = format!("https://{}:{}/v1/score", a.gateway_name, a.gateway.port());
    runtime()?.block_on(async {
        let client = client(a)?;
        let Some(repeat) = a.repeat else {
            let answer = send(&client, &url, token.as_deref(), body.as_bytes()).await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
            return Ok(());
        };
        ensure!(repeat > 0, "--repeat counts at least 1 request");
        let mut latencies = Vec::with_capacity(repeat);
        let started = Instant::now();
        for _ in 0..repeat {
            let one = Instant::now();
            send(&client, &url, token.as_deref(), body.as_bytes()).await?;
            latencies.push(one.elapsed());
        }
        let total = started.elapsed();
        latencies.sort();
        let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
        println!(
            "{repeat} requests of {} ids: p50 {:.2} ms, p99 {:.2} ms, {:.0} scores/s",
            ids.len(),
            at(0.5).as_secs_f64() * 1e3,
            at(0.99).as_secs_f64() * 1e3,
            (repeat * ids.len()) as f64 / total.as_secs_f64()
        );
        Ok(())
    })
}
