//! Evidence verifications per second for each platform: the shared test
//! data for SGX, TDX and SEV-SNP (skipped with a note where it is absent),
//! and the software backend.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use sotto_tee::dcap::{parse_collateral, validity_window, verify_quote};
use sotto_tee::enclave::Enclave;
use sotto_tee::snp::{parse_ca_chain, parse_report, verify_report};
use sotto_tee::software::{verify_evidence, PlatformKey, SoftwareEnclave};

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/attestation")
}

fn read(dir: &std::path::Path, file: &str) -> Option<Vec<u8>> {
    std::fs::read(dir.join(file)).ok()
}

fn bench_dcap(c: &mut Criterion, dir: &std::path::Path, name: &str, quote: &str, collateral: &str) {
    let (Some(quote), Some(collateral)) = (read(dir, quote), read(dir, collateral)) else {
        eprintln!("{name}: test data missing, skipped");
        return;
    };
    let Ok(collateral) = parse_collateral(&collateral) else {
        return;
    };
    let Ok((from, _)) = validity_window(&collateral) else {
        return;
    };
    c.bench_function(name, |b| {
        b.iter(|| verify_quote(&quote, &collateral, from + 3600))
    });
}

fn verification(c: &mut Criterion) {
    let dir = testdata();
    bench_dcap(
        c,
        &dir,
        "verify SGX quote",
        "sgx/sgx_quote",
        "sgx/sgx_quote_collateral.json",
    );
    bench_dcap(
        c,
        &dir,
        "verify TDX quote",
        "tdx/tdx_quote",
        "tdx/tdx_quote_collateral.json",
    );
    if let (Some(report), Some(vcek), Some(chain)) = (
        read(&dir, "sev-snp/report_milan.hex"),
        read(&dir, "sev-snp/vcek_milan.der"),
        read(&dir, "sev-snp/cert_chain_milan"),
    ) {
        if let (Ok(_), Ok(ca)) = (parse_report(&report), parse_ca_chain(&chain)) {
            c.bench_function("verify SEV-SNP report (chain and report)", |b| {
                b.iter(|| verify_report(&report, &vcek, ca.clone()))
            });
        }
    }
    let key = PlatformKey::generate(&mut rand_core::OsRng);
    let platform = key.public();
    let enclave = SoftwareEnclave::with_measurement([1; 32], key);
    if let Ok(evidence) = enclave.evidence(&[2; 64]) {
        c.bench_function("verify software evidence", |b| {
            b.iter(|| verify_evidence(&evidence, &[platform]))
        });
    }
}

criterion_group!(benches, verification);
criterion_main!(benches);
