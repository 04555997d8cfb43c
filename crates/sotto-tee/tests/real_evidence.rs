//! Verification of genuine SGX, TDX and SEV-SNP evidence, kept in this
//! repository (`tests/data/attestation`, with its origin and licence in the
//! README there), so every `cargo test` checks it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;

use sotto_tee::dcap::{parse_collateral, validity_window, verify_quote};
use sotto_tee::evidence::{Platform, TcbStatus};
use sotto_tee::snp::{parse_ca_chain, parse_report, verify_report};
use sotto_tee::TeeError;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/attestation")
}

fn read(dir: &std::path::Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A "now" one hour into the collateral's validity window.
fn now_for(collateral: &dcap_qvl::QuoteCollateralV3) -> u64 {
    let (from, until) = validity_window(collateral).expect("window");
    assert!(from + 3600 < until, "window {from}..{until}");
    from + 3600
}

fn dcap(
    dir: &std::path::Path,
    quote: &str,
    collateral: &str,
) -> (Vec<u8>, dcap_qvl::QuoteCollateralV3, u64) {
    let collateral = parse_collateral(&read(dir, collateral)).expect("collateral");
    let now = now_for(&collateral);
    (read(dir, quote), collateral, now)
}

#[test]
fn sgx_quote_verifies_with_its_known_status_and_advisories() {
    let dir = testdata();
    let (quote, collateral, now) = dcap(&dir, "sgx/sgx_quote", "sgx/sgx_quote_collateral.json");
    let v = verify_quote(&quote, &collateral, now).expect("verifies");
    assert_eq!(v.platform, Platform::Sgx);
    assert_eq!(v.tcb_status, TcbStatus::ConfigurationAndSWHardeningNeeded);
    for sa in ["INTEL-SA-00289", "INTEL-SA-00615"] {
        assert!(v.advisories.iter().any(|a| a == sa), "{:?}", v.advisories);
    }
    assert_eq!(v.measurement.len(), 32);
    assert_eq!(v.report_data.len(), 64);
    assert!(v.hardware_protected);
}

#[test]
fn tdx_quotes_verify_up_to_date_and_out_of_date() {
    let dir = testdata();
    let (quote, collateral, now) = dcap(&dir, "tdx/tdx_quote", "tdx/tdx_quote_collateral.json");
    let v = verify_quote(&quote, &collateral, now).expect("verifies");
    assert_eq!(v.platform, Platform::Tdx);
    assert_eq!(v.tcb_status, TcbStatus::UpToDate);
    assert_eq!(v.measurement.len(), 48);
    let (quote, collateral, now) = dcap(
        &dir,
        "tdx/tdx_quote_outdated",
        "tdx/tdx_quote_outdated_collateral.json",
    );
    let v = verify_quote(&quote, &collateral, now).expect("verifies");
    assert_eq!(v.tcb_status, TcbStatus::OutOfDate);
}

#[test]
fn collateral_outside_its_window_or_of_another_quote_is_refused() {
    let dir = testdata();
    let (quote, collateral, now) = dcap(&dir, "sgx/sgx_quote", "sgx/sgx_quote_collateral.json");
    let (_, until) = validity_window(&collateral).expect("window");
    assert!(verify_quote(&quote, &collateral, until + 86_400 * 400).is_err());
    let (_, tdx_collateral, _) = dcap(&dir, "tdx/tdx_quote", "tdx/tdx_quote_collateral.json");
    let err = verify_quote(&quote, &tdx_collateral, now).expect_err("foreign collateral");
    assert!(
        matches!(
            err,
            TeeError::Verification {
                platform: Platform::Sgx,
                ..
            }
        ),
        "{err}"
    );
    let (tdx, _, tdx_now) = dcap(&dir, "tdx/tdx_quote", "tdx/tdx_quote_collateral.json");
    assert!(verify_quote(&tdx, &collateral, tdx_now).is_err());
}

/// The unsigned framing fields of a quote before its PEM chain: the
/// signature data length after the report body, and for TDX (version 4)
/// the certification data type and size that wrap the QE report.
fn framing(quote: &[u8]) -> Vec<std::ops::Range<usize>> {
    let tdx = quote[4..8] == [0x81, 0, 0, 0];
    let signed_end = 48 + if tdx { 584 } else { 384 };
    let signature_length = signed_end..signed_end + 4;
    let wrapper = signed_end + 4 + 64 + 64;
    if tdx {
        vec![signature_length, wrapper..wrapper + 6]
    } else {
        Vec::from([signature_length])
    }
}

/// Flips one byte at a time through the signed parts of a quote — header,
/// report body, quote signature, attestation key, QE report, its signature,
/// QE authentication data — that is, every byte before the PEM certificate
/// chain except the framing fields (lengths and certification data types,
/// which are not signed; see `framing`). The chain itself is not signed by
/// the quote: it is checked certificate by certificate up to Intel's root,
/// built into the verifier.
fn assert_every_flip_refused(quote: &[u8], collateral: &dcap_qvl::QuoteCollateralV3, now: u64) {
    let pem = quote
        .windows(10)
        .position(|w| w == b"-----BEGIN")
        .expect("certification data holds a PEM chain");
    assert!(pem > 600, "signed part of {pem} bytes");
    let mut unsigned = framing(quote);
    unsigned.push(pem - 6..pem);
    let mut accepted = Vec::new();
    let mut flipped = 0;
    for i in (0..pem).filter(|i| !unsigned.iter().any(|r| r.contains(i))) {
        let mut bad = quote.to_vec();
        bad[i] ^= 0x01;
        flipped += 1;
        if verify_quote(&bad, collateral, now).is_ok() {
            accepted.push(i);
        }
    }
    assert!(flipped > 900, "{flipped} bytes flipped");
    assert!(
        accepted.is_empty(),
        "flips accepted at offsets {accepted:?}"
    );
}

#[test]
fn a_flipped_byte_anywhere_in_a_quote_is_refused() {
    let dir = testdata();
    let (quote, collateral, now) = dcap(&dir, "sgx/sgx_quote", "sgx/sgx_quote_collateral.json");
    assert_every_flip_refused(&quote, &collateral, now);
    let (quote, collateral, now) = dcap(&dir, "tdx/tdx_quote", "tdx/tdx_quote_collateral.json");
    assert_every_flip_refused(&quote, &collateral, now);
}

fn snp(dir: &std::path::Path) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    (
        read(dir, "sev-snp/report_milan.hex"),
        read(dir, "sev-snp/vcek_milan.der"),
        read(dir, "sev-snp/cert_chain_milan"),
    )
}

#[test]
fn sev_snp_report_verifies_against_vcek_and_milan_chain() {
    let dir = testdata();
    let (report, vcek, chain) = snp(&dir);
    assert!(parse_report(&report).is_ok());
    let v =
        verify_report(&report, &vcek, parse_ca_chain(&chain).expect("chain")).expect("verifies");
    assert_eq!(v.platform, Platform::SevSnp);
    assert_eq!(v.measurement.len(), 48);
    assert_eq!(v.tcb_status, TcbStatus::NotAssessed);
}

#[test]
fn sev_snp_flips_in_the_signed_report_vcek_or_chain_are_refused() {
    let dir = testdata();
    let (report_hex, vcek, chain) = snp(&dir);
    let raw = hex::decode(String::from_utf8(report_hex).unwrap().trim()).unwrap();
    let ca = parse_ca_chain(&chain).expect("chain");
    // The signed part of a report is its first 0x2a0 bytes.
    let mut accepted = Vec::new();
    for i in 0..0x2a0 {
        let mut bad = raw.clone();
        bad[i] ^= 0x01;
        if verify_report(&bad, &vcek, ca.clone()).is_ok() {
            accepted.push(i);
        }
    }
    assert!(accepted.is_empty(), "report flips accepted at {accepted:?}");
    // The signature itself.
    for i in [0x2a0, 0x2a0 + 40, 0x2a0 + 72, 0x2a0 + 100] {
        let mut bad = raw.clone();
        bad[i] ^= 0x01;
        assert!(
            verify_report(&bad, &vcek, ca.clone()).is_err(),
            "signature flip at {i}"
        );
    }
    // A VCEK with one byte changed (in its signed body) fails the chain.
    let mut bad_vcek = vcek.clone();
    let middle = bad_vcek.len() / 2;
    bad_vcek[middle] ^= 0x01;
    assert!(verify_report(&raw, &bad_vcek, ca.clone()).is_err());
    // A chain without both the ARK and the ASK is refused.
    assert!(parse_ca_chain(b"").is_err());
    let first_cert_only: Vec<u8> = String::from_utf8(chain.clone())
        .unwrap()
        .split_inclusive("-----END CERTIFICATE-----")
        .next()
        .unwrap()
        .as_bytes()
        .to_vec();
    assert!(parse_ca_chain(&first_cert_only).is_err());
}
