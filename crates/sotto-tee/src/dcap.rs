//! Intel SGX and TDX DCAP quotes, verified offline with `dcap-qvl` (pure
//! Rust) against collateral supplied as a file (PCK CRL, root CA CRL, TCB
//! info and QE identity with their issuer chains) and a caller-chosen "now"
//! that must fall inside the collateral's validity.

use dcap_qvl::quote::Report;
use dcap_qvl::QuoteCollateralV3;

use crate::error::TeeError;
use crate::evidence::{Platform, TcbStatus, Verified};

/// What `dcap-qvl` says when the platform's TCB is older than every level
/// the TCB info lists. It checks that only after every signature (PCK
/// chain and CRLs, QE report, QE identity, quote), so such a quote is
/// authentic and its platform is out of date.
const BELOW_EVERY_TCB_LEVEL: &str = "No matching TCB level found";

/// An authentic quote whose platform TCB is below every listed level.
fn below_every_level(quote: &[u8], platform: Platform) -> Result<Verified, TeeError> {
    let parsed = dcap_qvl::quote::Quote::parse(quote).map_err(|e| TeeError::Malformed {
        what: "DCAP quote",
        reason: format!("{e:#}"),
    })?;
    let (measurement, report_data) = report_fields(&parsed.report);
    Ok(Verified {
        platform,
        measurement,
        report_data,
        tcb_status: TcbStatus::OutOfDate,
        advisories: vec!["platform TCB below every level in the TCB info".into()],
        hardware_protected: true,
    })
}

/// Measurement and report data of a quote's report body.
fn report_fields(report: &Report) -> (Vec<u8>, Vec<u8>) {
    match report {
        Report::SgxEnclave(r) => (r.mr_enclave.to_vec(), r.report_data.to_vec()),
        Report::TD10(r) => (r.mr_td.to_vec(), r.report_data.to_vec()),
        Report::TD15(r) => (r.base.mr_td.to_vec(), r.base.report_data.to_vec()),
        Report::TD15Ex(r) => (r.base.base.mr_td.to_vec(), r.base.base.report_data.to_vec()),
    }
}

/// Parses collateral in the JSON form `dcap-qvl` and PCCS tools write.
pub fn parse_collateral(json: &[u8]) -> Result<QuoteCollateralV3, TeeError> {
    serde_json::from_slice(json).map_err(|e| TeeError::Malformed {
        what: "DCAP collateral (JSON)",
        reason: e.to_string(),
    })
}

/// Refuses, before any verification, bytes that are not a DCAP quote at all
/// (a wrong file), so that the error says so instead of naming whichever
/// check of the verifier happens to fail first.
fn check_quote_header(quote: &[u8]) -> Result<(), TeeError> {
    let not_a_quote = |reason: String| TeeError::Malformed {
        what: "DCAP quote",
        reason: format!("{reason}; is this file a quote (and not, say, collateral or a report)?"),
    };
    if quote.len() < QUOTE_HEADER_LEN {
        return Err(not_a_quote(format!(
            "{} bytes, shorter than a quote's {QUOTE_HEADER_LEN}-byte header",
            quote.len()
        )));
    }
    let version = u16::from_le_bytes([quote[0], quote[1]]);
    if !(3..=5).contains(&version) {
        return Err(not_a_quote(format!(
            "header version {version}, where quotes have 3, 4 or 5"
        )));
    }
    let tee_type = u32::from_le_bytes([quote[4], quote[5], quote[6], quote[7]]);
    if tee_type != 0 && tee_type != 0x81 {
        return Err(not_a_quote(format!(
            "TEE type {tee_type:#x}, neither SGX (0) nor TDX (0x81)"
        )));
    }
    Ok(())
}

/// Length of a DCAP quote header.
const QUOTE_HEADER_LEN: usize = 48;

/// The platform a quote claims, read from its header (for errors before
/// verification).
pub fn claimed_platform(quote: &[u8]) -> Platform {
    // Bytes 4..8 of the quote header: TEE type, 0 for SGX, 0x81 for TDX.
    match quote.get(4..8) {
        Some([0x81, 0, 0, 0]) => Platform::Tdx,
        _ => Platform::Sgx,
    }
}

/// Verifies a quote: the PCK certificate chain to Intel's root, the CRLs,
/// the QE report and identity, the quote signature and the TCB level, all
/// as of `now_unix` (seconds).
pub fn verify_quote(
    quote: &[u8],
    collateral: &QuoteCollateralV3,
    now_unix: u64,
) -> Result<Verified, TeeError> {
    check_quote_header(quote)?;
    let platform = claimed_platform(quote);
    let report = match dcap_qvl::verify::rustcrypto::verify(quote, collateral, now_unix) {
        Ok(report) => report,
        Err(e) if format!("{e:#}").contains(BELOW_EVERY_TCB_LEVEL) => {
            return below_every_level(quote, platform)
        }
        Err(e) => {
            return Err(TeeError::Verification {
                platform,
                reason: format!("{e:#}"),
            })
        }
    };
    let tcb_status = report
        .status
        .parse::<TcbStatus>()
        .map_err(|reason| TeeError::Verification { platform, reason })?;
    let platform = if report.report.is_sgx() {
        Platform::Sgx
    } else {
        Platform::Tdx
    };
    let (measurement, report_data) = report_fields(&report.report);
    Ok(Verified {
        platform,
        measurement,
        report_data,
        tcb_status,
        advisories: report.advisory_ids,
        hardware_protected: true,
    })
}

/// The window in which `collateral` is valid: from the latest issue date to
/// the earliest next update of its TCB info and QE identity (Unix seconds).
pub fn validity_window(collateral: &QuoteCollateralV3) -> Result<(u64, u64), TeeError> {
    let mut from = 0u64;
    let mut until = u64::MAX;
    for (what, json) in [
        ("TCB info", &collateral.tcb_info),
        ("QE identity", &collateral.qe_identity),
    ] {
        let value: serde_json::Value =
            serde_json::from_str(json).map_err(|e| TeeError::Malformed {
                what: "DCAP collateral",
                reason: format!("{what}: {e}"),
            })?;
        let date = |field: &str| -> Result<u64, TeeError> {
            let text = value[field].as_str().unwrap_or_default();
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map(|t| t.unix_timestamp().max(0) as u64)
                .map_err(|e| TeeError::Malformed {
                    what: "DCAP collateral",
                    reason: format!("{what}: {field} {text:?}: {e}"),
                })
        };
        from = from.max(date("issueDate")?);
        until = until.min(date("nextUpdate")?);
    }
    Ok((from, until))
}
