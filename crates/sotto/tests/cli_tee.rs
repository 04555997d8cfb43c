//! `sotto tee` through the real binary: software evidence in development
//! mode only, the measurement allowlist, report-data binding, and verdicts
//! on genuine SGX evidence from the shared test data.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

mod common;

use common::{fails, ok, sotto};

fn policy(dir: &std::path::Path, body: &str) -> PathBuf {
    let path = dir.join(format!("policy-{}.toml", body.len()));
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn software_evidence_is_accepted_only_in_dev_mode_and_for_the_listed_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("platform.key");
    let out = ok(&[&"tee", &"platform-key", &"--out", &key]);
    let public = out.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(fails(&[&"tee", &"platform-key", &"--out", &key]).contains("refusing to overwrite"));
    let measurement = ok(&[&"tee", &"measure"]).trim().to_owned();
    assert_eq!(measurement.len(), 64);
    let data = "ab".repeat(64);
    let evidence = dir.path().join("evidence.bin");
    ok(&[
        &"tee",
        &"evidence",
        &"--platform-key",
        &key,
        &"--report-data",
        &data,
        &"--out",
        &evidence,
    ]);
    let good = policy(
        dir.path(),
        &format!("platforms = [\"sgx\"]\nmeasurements = [\"{measurement}\"]\nallow_software = true\nsoftware_platform_keys = [\"{public}\"]\n"),
    );
    let verify = |policy: &PathBuf, extra: &[&str]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"tee",
            &"verify",
            &evidence,
            &"--kind",
            &"software",
            &"--policy",
            policy,
        ];
        for e in extra {
            args.push(e);
        }
        sotto(&args)
    };
    let accepted = verify(&good, &["--dev", "--expect-report-data", &data]);
    assert!(
        accepted.status.success(),
        "{}",
        String::from_utf8_lossy(&accepted.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&accepted.stdout).unwrap();
    assert_eq!(json["evidence"]["hardware_protected"], false);
    assert_eq!(json["evidence"]["measurement"], measurement.as_str());
    assert!(String::from_utf8_lossy(&accepted.stderr).contains("NOT hardware-protected"));

    let refused = verify(&good, &[]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("only in development mode"));

    let stale = verify(&good, &["--dev", "--expect-report-data", &"cd".repeat(64)]);
    assert!(String::from_utf8_lossy(&stale.stderr).contains("report data differs"));

    let other_code = policy(
        dir.path(),
        &format!("platforms = [\"sgx\"]\nmeasurements = [\"{}\"]\nallow_software = true\nsoftware_platform_keys = [\"{public}\"]\n", "00".repeat(32)),
    );
    let refused = verify(&other_code, &["--dev"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains(&measurement) && err.contains("allowlist"),
        "{err}"
    );

    let mut bytes = std::fs::read(&evidence).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&evidence, bytes).unwrap();
    let forged = verify(&good, &["--dev"]);
    assert!(String::from_utf8_lossy(&forged.stderr).contains("does not verify"));
}

#[test]
fn genuine_sgx_quote_gets_a_verdict_from_the_policy() {
    let data =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sotto-tee/tests/data/attestation");
    let dir = tempfile::tempdir().unwrap();
    let quote = data.join("sgx/sgx_quote");
    let collateral = data.join("sgx/sgx_quote_collateral.json");
    let parsed = sotto_tee::dcap::parse_collateral(&std::fs::read(&collateral).unwrap()).unwrap();
    let now = (sotto_tee::dcap::validity_window(&parsed).unwrap().0 + 3600).to_string();
    let strict = policy(
        dir.path(),
        &format!(
            "platforms = [\"sgx\"]\nmeasurements = [\"{}\"]\n",
            "11".repeat(32)
        ),
    );
    let out = sotto(&[
        &"tee",
        &"verify",
        &quote,
        &"--kind",
        &"dcap",
        &"--collateral",
        &collateral,
        &"--policy",
        &strict,
        &"--now",
        &now,
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ConfigurationAndSWHardeningNeeded") && err.contains("INTEL-SA-00615"),
        "{err}"
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let measurement = json["evidence"]["measurement"].as_str().unwrap().to_owned();
    let lenient = policy(
        dir.path(),
        &format!("platforms = [\"sgx\"]\nmeasurements = [\"{measurement}\"]\nmin_tcb = \"ConfigurationAndSWHardeningNeeded\"\n"),
    );
    ok(&[
        &"tee",
        &"verify",
        &quote,
        &"--kind",
        &"dcap",
        &"--collateral",
        &collateral,
        &"--policy",
        &lenient,
        &"--now",
        &now,
    ]);
    // A year after the collateral expired, the same quote is refused.
    let late = (now.parse::<u64>().unwrap() + 400 * 86_400).to_string();
    let err = fails(&[
        &"tee",
        &"verify",
        &quote,
        &"--kind",
        &"dcap",
        &"--collateral",
        &collateral,
        &"--policy",
        &lenient,
        &"--now",
        &late,
    ]);
    assert!(err.contains("does not verify"), "{err}");
}
