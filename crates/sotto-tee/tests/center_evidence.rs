//! The registration center itself, over gRPC with mutual TLS, given forged,
//! tampered and mislabelled evidence of every kind: each is refused by the
//! center's own dispatch to its verifier, with the reason named, and only
//! evidence that verifies and binds the center's nonce is admitted.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use rand_core::OsRng;
use sotto_net::ca::ConsortiumCa;
use sotto_node::NodeHome;
use sotto_tee::enclave::Enclave;
use sotto_tee::online::center::{serve, CenterConfig};
use sotto_tee::online::node::{CenterClient, EvidenceBundle};
use sotto_tee::online::OnlineError;
use sotto_tee::policy::Policy;
use sotto_tee::software::{PlatformKey, SoftwareEnclave};

fn data(file: &str) -> Vec<u8> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/attestation");
    std::fs::read(dir.join(file)).unwrap()
}

/// A center (software evidence allowed under --dev, one trusted platform
/// key, measurement 01..01) and a node that pins it; returns the node's
/// home, the center's address and the trusted platform key.
async fn center(dir: &Path) -> (NodeHome, String, PlatformKey) {
    let now = time::OffsetDateTime::now_utc();
    let ca = ConsortiumCa::init(&dir.join("ca"), "test", now, 30).unwrap();
    let mut homes = Vec::new();
    for name in ["center", "node-1"] {
        let home = NodeHome::init(&dir.join(name), name.parse().unwrap(), 2, &mut OsRng).unwrap();
        ca.enroll(&home, now, now + time::Duration::days(1))
            .unwrap();
        std::fs::write(dir.join(format!("{name}.json")), home.profile().to_json()).unwrap();
        homes.push(home);
    }
    homes[1].pin_peer(&dir.join("center.json")).unwrap();
    let platform = PlatformKey::generate(&mut OsRng);
    let policy = Policy::parse(
        Path::new("policy.toml"),
        &format!(
            "platforms = [\"sgx\", \"tdx\", \"sev-snp\"]\nmeasurements = [\"{}\"]\nallow_software = true\nsoftware_platform_keys = [\"{}\"]\naccept_not_assessed = true\n",
            hex::encode([1; 32]),
            platform.public()
        ),
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let node = homes.pop().unwrap();
    let config = CenterConfig {
        home: homes.pop().unwrap(),
        policy,
        dev: true,
        rotate_every: None,
    };
    tokio::spawn(serve(listener, config, std::future::pending()));
    (node, address, platform)
}

/// Registers with `bundle` (made for the center's report data) and returns
/// the center's reason for refusing it.
async fn refusal(
    home: &NodeHome,
    address: &str,
    make: impl FnOnce(&[u8; 64]) -> EvidenceBundle,
) -> String {
    let mut client = CenterClient::connect(home, "center".parse().unwrap(), address)
        .await
        .unwrap();
    match client.register_with(home, |d| Ok(make(d))).await {
        Err(OnlineError::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn software(enclave: &SoftwareEnclave, data: &[u8; 64]) -> EvidenceBundle {
    EvidenceBundle {
        kind: "software".into(),
        evidence: enclave.evidence(data).unwrap(),
        ..EvidenceBundle::default()
    }
}

fn snp(report: Vec<u8>) -> EvidenceBundle {
    EvidenceBundle {
        kind: "sev-snp".into(),
        evidence: report,
        vcek: data("sev-snp/vcek_milan.der"),
        ark_ask: data("sev-snp/cert_chain_milan"),
        ..EvidenceBundle::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_center_refuses_forged_tampered_and_mislabelled_evidence_of_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let (home, address, trusted) = center(dir.path()).await;
    let forger = SoftwareEnclave::with_measurement([1; 32], PlatformKey::generate(&mut OsRng));
    let honest = SoftwareEnclave::with_measurement([1; 32], trusted);

    // Software evidence signed by a platform key the policy does not trust.
    let reason = refusal(&home, &address, |d| software(&forger, d)).await;
    assert!(
        reason.contains("evidence from node-1 does not verify"),
        "{reason}"
    );
    // Software evidence from the trusted key, one byte changed.
    let reason = refusal(&home, &address, |d| {
        let mut bundle = software(&honest, d);
        bundle.evidence[40] ^= 1;
        bundle
    })
    .await;
    assert!(
        reason.contains("evidence from node-1 does not verify"),
        "{reason}"
    );
    // Software evidence presented as a DCAP quote.
    let reason = refusal(&home, &address, |d| EvidenceBundle {
        kind: "dcap".into(),
        collateral: data("sgx/sgx_quote_collateral.json"),
        ..software(&honest, d)
    })
    .await;
    assert!(reason.contains("is this file a quote"), "{reason}");
    // A genuine SGX quote presented as an SEV-SNP report.
    let reason = refusal(&home, &address, |_| snp(data("sgx/sgx_quote"))).await;
    assert!(
        reason.contains("evidence from node-1 does not verify") && reason.contains("SEV-SNP"),
        "{reason}"
    );
    // A genuine SEV-SNP report with one byte of its signed part changed.
    let reason = refusal(&home, &address, |_| {
        let mut report = hex::decode(
            String::from_utf8(data("sev-snp/report_milan.hex"))
                .unwrap()
                .trim(),
        )
        .unwrap();
        report[0x50] ^= 1;
        snp(report)
    })
    .await;
    assert!(
        reason.contains("evidence from node-1 does not verify"),
        "{reason}"
    );
    // A genuine SEV-SNP report verifies, but it binds someone else's data,
    // not this center's nonce and this node's keys.
    let reason = refusal(&home, &address, |_| snp(data("sev-snp/report_milan.hex"))).await;
    assert!(
        reason.contains("does not bind its identity key, HPKE key and the center's nonce"),
        "{reason}"
    );
    // A kind the center has no verifier for.
    let reason = refusal(&home, &address, |d| EvidenceBundle {
        kind: "tpm".into(),
        ..software(&honest, d)
    })
    .await;
    assert!(reason.contains("unknown evidence kind \"tpm\""), "{reason}");
    // And the honest software evidence is admitted.
    let mut client = CenterClient::connect(&home, "center".parse().unwrap(), &address)
        .await
        .unwrap();
    let membership = client.register(&home, &honest).await.unwrap();
    assert_eq!(membership.members.len(), 1);
    // The group key the member now holds is nowhere in the center's files
    // (sealed at rest), in any encoding.
    let (_, key) = client.group_key(&home).await.unwrap();
    let mut scanned = 0;
    for entry in std::fs::read_dir(dir.path().join("center")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(
                sotto_node::leaks::leaked_encoding(&bytes, &key),
                None,
                "{}",
                path.display()
            );
            scanned += 1;
        }
    }
    assert!(scanned >= 3, "the database, keys and config were scanned");
}
