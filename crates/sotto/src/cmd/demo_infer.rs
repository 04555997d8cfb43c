//! The inference half of `sotto demo share`: every provider serves partial
//! results on its fused share, a gateway serves outside users over HTTPS,
//! and `sotto infer` — as users admitted by API token and by client
//! certificate — gets every customer's score, checked against the
//! plaintext score; an id nobody holds is answered as not found; a user
//! without credentials, a user over its rate, a provider that never
//! answers and a revoked provider are refused, each with its reason; each
//! answered query is found on the ledger by its request id.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use sotto_ledger::online::client::CallSpec;

use super::demo_ledger::Site;
use super::demo_share::{clear_score, joint_rows, tree_input, tree_model, Sharing, PROVIDERS};
use super::setup::{Runner, ServerProcess};

/// The inference processes of the demo.
pub struct Inference {
    /// The providers' `share serve` processes, held so that they stop
    /// when this is dropped.
    _providers: Vec<ServerProcess>,
    /// The providers' services as NAME@HOST:PORT.
    pub addresses: Vec<String>,
    /// The gateway and its address.
    pub gateway: (ServerProcess, String),
}

fn refs(args: &[OsString]) -> Vec<&dyn AsRef<std::ffi::OsStr>> {
    args.iter()
        .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
        .collect()
}

/// The `--model` options of the providers and the gateway: the logistic
/// model and the ONNX tree ensemble.
fn served_models(dir: &Path) -> Vec<OsString> {
    ["model.json", "credit-tree.json"]
        .iter()
        .flat_map(|m| [OsString::from("--model"), dir.join(m).into()])
        .collect()
}

/// Starts the gateway (its home `gateway`) with `providers` as
/// NAME@HOST:PORT.
fn start_gateway(
    r: &Runner,
    dir: &Path,
    site: &Site,
    sharing: &Sharing<'_>,
    providers: &[String],
    extra: &[&str],
) -> Result<(ServerProcess, String)> {
    let mut more: Vec<OsString> = vec![
        "--center-connect".into(),
        site.center.1.clone().into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--users".into(),
        dir.join("users.toml").into(),
    ];
    more.extend(served_models(dir));
    for p in providers {
        more.extend(["--provider".into(), p.into()]);
    }
    more.extend(extra.iter().map(Into::into));
    let args = sharing.args("gateway", "serve", "gateway", &more);
    ServerProcess::start(&r.exe, &args, &dir.join("gateway.log"), "gateway")
}

/// Starts every provider's inference service and the gateway; adds the
/// demo's users.
pub fn start(r: &mut Runner, dir: &Path, site: &Site, sharing: &Sharing<'_>) -> Result<Inference> {
    let mut processes = Vec::new();
    let mut addresses = Vec::new();
    for p in PROVIDERS {
        let extra = [
            OsString::from("--center-connect"),
            site.center.1.clone().into(),
            "--platform-key".into(),
            dir.join("platform.key").into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--gateway".into(),
            "gateway".into(),
        ];
        let extra = [&extra[..], &served_models(dir)].concat();
        let args = sharing.args("share", "serve", p, &extra);
        let (process, address) = ServerProcess::start(
            &r.exe,
            &args,
            &dir.join(format!("{p}-serve.log")),
            "provider",
        )?;
        processes.push(process);
        addresses.push(format!("{p}@{address}"));
    }
    let users = dir.join("users.toml");
    for (user, extra) in [
        ("new-lender", &["--rate", "100000", "--burst", "100000"][..]),
        ("slow-lender", &["--rate", "1", "--burst", "2"][..]),
    ] {
        let mut args: Vec<OsString> = ["gateway", "add-user", "--users"]
            .iter()
            .map(Into::into)
            .collect();
        args.extend([
            users.clone().into(),
            "--user".into(),
            user.into(),
            "--token-out".into(),
            dir.join(format!("{user}.token")).into(),
        ]);
        args.extend(extra.iter().map(Into::into));
        r.sotto(&format!("add user {user}"), &refs(&args))?;
    }
    let cert_user: Vec<OsString> = ["gateway", "add-user", "--users"]
        .iter()
        .map(Into::into)
        .chain([
            users.into(),
            "--user".into(),
            "bank-a".into(),
            "--certificate".into(),
        ])
        .collect();
    r.sotto("add user bank-a", &refs(&cert_user))?;
    let gateway = start_gateway(r, dir, site, sharing, &addresses, &[])?;
    Ok(Inference {
        _providers: processes,
        addresses,
        gateway,
    })
}

/// `sotto infer` against `gateway` for the logistic model with
/// `credentials` and `extra`.
fn infer(
    r: &mut Runner,
    gateway: &str,
    credentials: &[OsString],
    extra: &[OsString],
) -> Result<String> {
    infer_with(r, gateway, "credit-score", credentials, extra)
}

/// `sotto infer` against `gateway` for `model`.
fn infer_with(
    r: &mut Runner,
    gateway: &str,
    model: &str,
    credentials: &[OsString],
    extra: &[OsString],
) -> Result<String> {
    let mut args: Vec<OsString> = vec![
        "infer".into(),
        "--gateway".into(),
        gateway.into(),
        "--model".into(),
        model.into(),
    ];
    args.extend_from_slice(credentials);
    args.extend_from_slice(extra);
    r.sotto("infer", &refs(&args))
}

fn token(dir: &Path, user: &str) -> Vec<OsString> {
    vec![
        "--ca".into(),
        dir.join("consortium-ca").join("ca.pem").into(),
        "--token-file".into(),
        dir.join(format!("{user}.token")).into(),
    ]
}

fn ids_file(dir: &Path, name: &str, ids: &[String]) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, ids.join("\n"))?;
    Ok(path)
}

fn refused(result: Result<String>, expected: &str, what: &str) -> Result<()> {
    match result {
        Ok(out) => bail!("{what} was answered: {out}"),
        Err(e) => ensure!(
            e.to_string().contains(expected),
            "{what} failed for another reason: {e}"
        ),
    }
    Ok(())
}

/// Scores every customer and an unknown id through the gateway with
/// `model` and checks each against `clear` (the score computed from the
/// joint row in clear) within `tolerance`; returns the answer's request id
/// and how many ids it scored.
fn check_scores(
    r: &mut Runner,
    dir: &Path,
    gateway: &str,
    joint: &BTreeMap<String, Vec<u64>>,
    model: &str,
    clear: &dyn Fn(&[u64]) -> f64,
    tolerance: f64,
) -> Result<(String, usize)> {
    let mut ids: Vec<String> = joint.keys().cloned().collect();
    ids.push("nobody-00001".into());
    let file = ids_file(dir, "ids.txt", &ids)?;
    let extra = [OsString::from("--ids-file"), file.into()];
    let out = infer_with(r, gateway, model, &token(dir, "new-lender"), &extra)?;
    let answer: serde_json::Value = serde_json::from_str(&out)?;
    let scores = answer["scores"].as_array().context("no scores")?;
    ensure!(
        scores.len() == ids.len(),
        "{} scores for {} ids",
        scores.len(),
        ids.len()
    );
    for (id, item) in ids.iter().zip(scores) {
        ensure!(item["id"] == *id.as_str(), "answer out of order at {id}");
        match joint.get(id) {
            Some(row) => {
                let expected = clear(row);
                let got = item["score"]
                    .as_f64()
                    .with_context(|| format!("{id}: no score"))?;
                ensure!(
                    (got - expected).abs() <= tolerance,
                    "{id}: {model} scores {got} through the gateway, {expected} in clear"
                );
            }
            None => ensure!(
                item["found"] == false && item.get("score").is_none(),
                "{id} is held by nobody but was answered {item}"
            ),
        }
    }
    Ok((
        answer["request"].as_str().unwrap_or_default().to_owned(),
        ids.len(),
    ))
}

/// Runs the inference checks; returns once every one passed.
pub fn run(
    r: &mut Runner,
    dir: &Path,
    site: &Site,
    sharing: &Sharing<'_>,
    customers: u64,
) -> Result<Inference> {
    let inference = start(r, dir, site, sharing)?;
    let gateway = inference.gateway.1.clone();
    println!("  providers serve partial results on their shares to the gateway only; the gateway serves HTTPS + JSON to outside users");
    let declaration = &sharing.declaration;
    let joint = joint_rows(declaration, customers)?;
    let tree = tree_model();
    let (_, tree_scored) = check_scores(
        r,
        dir,
        &gateway,
        &joint,
        "credit-tree",
        &|row| f64::from(tree.probability(&tree_input(declaration, row))),
        1e-6,
    )?;
    println!("  new-lender scored {tree_scored} ids with the ONNX tree ensemble (tract, rows reconstructed inside the gateway's enclave only): every score equals the tree evaluated in clear");
    let (request, scored) = check_scores(
        r,
        dir,
        &gateway,
        &joint,
        "credit-score",
        &|row| clear_score(declaration, row),
        1e-9,
    )?;
    println!("  new-lender (API token) scored {scored} ids through the gateway in one request: every score equals the plaintext score; an id nobody holds is answered found = false");
    let by_cert = [OsString::from("--home"), dir.join("bank-a").into()];
    let ids = [OsString::from("--ids"), "cust-00001,cust-00002".into()];
    let out = infer(r, &gateway, &by_cert, &ids)?;
    ensure!(out.contains("\"found\": true"), "bank-a's answer: {out}");
    println!("  bank-a (client certificate from the consortium CA) scored two customers");
    let none = [
        OsString::from("--ca"),
        dir.join("consortium-ca").join("ca.pem").into(),
    ];
    refused(
        infer(r, &gateway, &none, &ids),
        "401 no_credentials",
        "a request without credentials",
    )?;
    println!("  a request without credentials: refused (401 no_credentials)");
    let forged = dir.join("forged.token");
    std::fs::write(&forged, "sotto_0000")?;
    let bad_token = [
        OsString::from("--ca"),
        dir.join("consortium-ca").join("ca.pem").into(),
        "--token-file".into(),
        forged.into(),
    ];
    refused(
        infer(r, &gateway, &bad_token, &ids),
        "401 bad_credentials",
        "a request with a made-up token",
    )?;
    let mut other_model = ids.to_vec();
    other_model.extend(["--model-version".into(), "2".into()]);
    refused(
        infer(r, &gateway, &token(dir, "new-lender"), &other_model),
        "404 unknown_model",
        "a request for an unserved model",
    )?;
    println!("  a made-up token: refused (401 bad_credentials); a model version nobody registered: refused (404 unknown_model)");
    let mut rushed = ids.to_vec();
    rushed.extend(["--repeat".into(), "5".into()]);
    refused(
        infer(r, &gateway, &token(dir, "slow-lender"), &rushed),
        "429 over_rate",
        "a user over its rate",
    )?;
    println!("  slow-lender (1 request per second, bursts of 2) sent 5 at once: refused from the third (429 over_rate)");
    audited(dir, site, &request, scored)?;
    println!("  the query is on the ledger under its request id: who, model, count, time, answer digest (no ids, no scores)");
    Ok(inference)
}

/// Checks that the ledger recorded query `request` (the gateway records
/// in the background, so this waits a little).
fn audited(dir: &Path, site: &Site, request: &str, scored: usize) -> Result<()> {
    let started = Instant::now();
    super::psi::runtime()?.block_on(async {
        let mut client = super::ledger_drills::client(dir, "lender", &site.compute)?;
        let spec = CallSpec {
            contract: "queries".into(),
            function: "get".into(),
            args: serde_json::json!({ "request": request })
                .to_string()
                .into_bytes(),
            targets: vec!["b1".into()],
        };
        loop {
            match client.query(&spec).await {
                Ok(bytes) => {
                    let got: serde_json::Value = serde_json::from_slice(&bytes)?;
                    let record = &got["record"];
                    ensure!(
                        record["user"] == "new-lender"
                            && record["model"] == "credit-score"
                            && record["count"] == scored,
                        "the ledger's record of the query: {got}"
                    );
                    return Ok(());
                }
                Err(e) if started.elapsed() < Duration::from_secs(20) => {
                    tracing::debug!("query not recorded yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => bail!("query {request} is not on the ledger after 20 s: {e}"),
            }
        }
    })
}

/// Measures single-id and 1,000-id requests through the gateway.
pub fn measure(r: &mut Runner, dir: &Path, gateway: &str) -> Result<()> {
    let single = [
        OsString::from("--ids"),
        "cust-00001".into(),
        "--repeat".into(),
        "200".into(),
    ];
    println!(
        "  {}",
        infer(r, gateway, &token(dir, "new-lender"), &single)?.trim()
    );
    let batch: Vec<String> = (0..1000).map(|i| format!("cust-{:05}", i % 300)).collect();
    let file = ids_file(dir, "batch.txt", &batch)?;
    let batched = [
        OsString::from("--ids-file"),
        file.into(),
        "--repeat".into(),
        "20".into(),
    ];
    println!(
        "  {}",
        infer(r, gateway, &token(dir, "new-lender"), &batched)?.trim()
    );
    Ok(())
}

/// A provider that never answers fails the request naming it; a revoked
/// provider too.
pub fn provider_faults(
    r: &mut Runner,
    dir: &Path,
    site: &Site,
    sharing: &Sharing<'_>,
    inference: &Inference,
) -> Result<()> {
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let mut providers = inference.addresses.clone();
    providers[1] = format!("telecom@{}", silent.local_addr()?);
    let (slow_gateway, address) = start_gateway(
        r,
        dir,
        site,
        sharing,
        &providers,
        &["--provider-timeout-ms", "500"],
    )?;
    let ids = [OsString::from("--ids"), "cust-00001".into()];
    refused(
        infer(r, &address, &token(dir, "new-lender"), &ids),
        "504 provider_timeout): provider telecom did not answer within 500 ms",
        "a request with a silent provider",
    )?;
    drop(slow_gateway);
    println!("  a gateway whose telecom never answers: the request fails after 500 ms naming telecom (504), no partial score");
    let revoke: Vec<OsString> = ["registry", "revoke", "--node", "insurer", "--home"]
        .iter()
        .map(Into::into)
        .chain([
            dir.join("center").into(),
            "--connect".into(),
            site.center.1.clone().into(),
            "--center".into(),
            "center".into(),
        ])
        .collect();
    r.sotto("revoke insurer", &refs(&revoke))?;
    let started = Instant::now();
    loop {
        match infer(r, &inference.gateway.1, &token(dir, "new-lender"), &ids) {
            Err(e)
                if e.to_string()
                    .contains("provider insurer is not a current member") =>
            {
                break
            }
            other if started.elapsed() > Duration::from_secs(15) => {
                bail!("15 s after insurer's revocation the gateway still answers: {other:?}")
            }
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    }
    println!("  insurer revoked at the center: the gateway refuses to score (503), naming insurer as not a current member");
    Ok(())
}
