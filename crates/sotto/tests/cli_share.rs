//! Secret-shared data sharing and privacy inference through the real
//! binary: the demo (ledger, registration center, three providers and the
//! gateway as processes; shares published through the ledger, fused, and
//! checked to add up to the joint table; every customer scored through the
//! gateway's HTTPS API with a logistic model on shares and an ONNX tree
//! ensemble, each against the plaintext score; each refusal with its
//! reason), then what `sotto share` refuses before it contacts anyone.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{fails, ok};

#[test]
fn providers_share_a_dataset_through_the_ledger_and_the_shares_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    let out = ok(&[&"demo", &"share", &"--dir", &work]);
    for needle in [
        "lender published 200 rows of credit-features version 1",
        "telecom published 150 rows",
        "insurer published 240 rows",
        "insurer tried to fuse before it had published: refused, fragments missing from insurer",
        "lender published version 1 again: refused by the ledger, a chunk is written once",
        "every provider's fragments of credit-features v1 are posted",
        "lender fused its share of credit-features version 1: 290 customers x 8 columns",
        "the three fused shares, unsealed by the demo, add up to the joint table of the three CSV files: 290 customers x 8 columns, exact",
        "no customer id in any of the",
        "lender registered model credit-score version 1 (logistic, 5 features of credit-features)",
        "model credit-score version 1 matches its registration by lender",
        "a model file with one weight changed: refused, its digest is not the registered one",
        "a model version nobody registered: refused, the ledger has no registration for it",
        "the credit-score model on the shares (each provider's w·s added up) equals the plaintext score for all 290 customers",
        "telecom registered model credit-tree version 1 (onnx, 5 features of credit-features)",
        "new-lender scored 291 ids with the ONNX tree ensemble (tract, rows reconstructed inside the gateway's enclave only): every score equals the tree evaluated in clear",
        "new-lender (API token) scored 291 ids through the gateway in one request: every score equals the plaintext score; an id nobody holds is answered found = false",
        "bank-a (client certificate from the consortium CA) scored two customers",
        "a request without credentials: refused (401 no_credentials)",
        "a made-up token: refused (401 bad_credentials); a model version nobody registered: refused (404 unknown_model)",
        "sent 5 at once: refused from the third (429 over_rate)",
        "the query is on the ledger under its request id",
        "a gateway whose telecom never answers: the request fails after 500 ms naming telecom (504), no partial score",
        "insurer revoked at the center: the gateway refuses to score (503), naming insurer as not a current member",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    what_share_refuses_up_front(&work);
}

/// Runs `sotto share VERB` as `home` against the demo's (stopped) ledger.
fn share(work: &std::path::Path, verb: &str, home: &str, extra: &[&str]) -> String {
    let mut args: Vec<std::ffi::OsString> = vec![
        "share".into(),
        verb.into(),
        "--home".into(),
        work.join(home).into(),
        "--genesis".into(),
        work.join("block0.bin").into(),
        "--target".into(),
        "b1".into(),
        "--compute".into(),
        "c1@127.0.0.1:1".into(),
        "--declaration".into(),
        work.join("dataset.toml").into(),
    ];
    args.extend(extra.iter().map(Into::into));
    let refs: Vec<&dyn AsRef<std::ffi::OsStr>> = args
        .iter()
        .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
        .collect();
    fails(&refs)
}

fn what_share_refuses_up_front(work: &std::path::Path) {
    let table = work.join("bad.csv");
    std::fs::write(&table, "id,tenure_months\nc-1,12\nc-2,7000\n").unwrap();
    let err = share(
        work,
        "publish",
        "telecom",
        &[
            "--center-connect",
            "127.0.0.1:1",
            "--table",
            table.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("bad.csv:3:2") && err.contains("7000") && err.contains("[0, 600]"),
        "{err}"
    );
    let err = share(
        work,
        "publish",
        "bank-a",
        &[
            "--center-connect",
            "127.0.0.1:1",
            "--table",
            table.to_str().unwrap(),
        ],
    );
    assert!(
        err.contains("bank-a is not a provider of dataset credit-features version 1"),
        "{err}"
    );
    let platform = work.join("platform.key");
    let fused = work.join("lender/shares/credit-features-v1.fused");
    let before = std::fs::read(&fused).unwrap();
    let err = share(
        work,
        "fuse",
        "lender",
        &["--platform-key", platform.to_str().unwrap()],
    );
    assert!(
        err.contains("already holds this provider's fused share of credit-features version 1"),
        "{err}"
    );
    assert_eq!(std::fs::read(&fused).unwrap(), before, "never overwritten");
}
