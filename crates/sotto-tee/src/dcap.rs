//! Intel SGX and TDX DCAP quotes, verified offline with `dcap-qvl` (pure
//! Rust) against collateral supplied as a file (PCK CRL, root CA CRL, TCB
//! info and QE identity with their issuer chains) and a caller-chosen "now"
//! that must fall inside the collateral's validity.

use dcap_qvl::quote::Report;
use dcap_qvl::tcb_info::{Tcb, TcbComponents, TcbInfo, TcbLevel};
use dcap_qvl::QuoteCollateralV3;

use crate::error::TeeError;
use crate::evidence::{Platform, TcbStatus, Verified};

/// What `dcap-qvl` says when the platform's TCB is older than every level
/// the TCB info lists. It says so at its TCB-matching step, before its
/// later checks (the TDX module's TCB level and identity, a TD 1.5's current
/// TCB, the QE's revocation, debug and migration attributes), so that error
/// alone proves nothing about them.
const BELOW_EVERY_TCB_LEVEL: &str = "No matching TCB level found";

/// Advisory recorded for a platform below every listed TCB level.
const BELOW_EVERY_LEVEL_ADVISORY: &str = "platform TCB below every level in the TCB info";

/// Verifies a quote whose platform TCB is below every listed level: again,
/// from the start, with one more level in the (already signature-checked)
/// TCB info that every platform meets and that is `OutOfDate`. Every check
/// the first pass skipped then runs, and the verdict is at best out of date.
fn verify_below_every_level(
    quote: &[u8],
    collateral: &QuoteCollateralV3,
    now_unix: u64,
    tweak: &dyn Fn(&mut TcbInfo),
) -> Result<dcap_qvl::verify::VerifiedReport, String> {
    dcap_qvl::verify::rustcrypto::dangerous_verify_with_tcb_override(
        quote,
        collateral,
        now_unix,
        |mut info| {
            let floor = floor_level(&info);
            info.tcb_levels.push(floor);
            tweak(&mut info);
            info
        },
    )
    .map_err(|e| format!("{e:#}"))
}

/// A TCB level met by every platform (every SVN 0), out of date, dated as
/// the oldest listed level.
fn floor_level(info: &TcbInfo) -> TcbLevel {
    let zeros = |n: usize| vec![TcbComponents { svn: 0 }; n];
    let tdx = info.version >= 3 && info.id == "TDX";
    let oldest = info
        .tcb_levels
        .iter()
        .map(|l| l.tcb_date.clone())
        .min()
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned());
    TcbLevel {
        tcb: Tcb {
            sgx_components: zeros(16),
            tdx_components: if tdx { zeros(16) } else { Vec::new() },
            pce_svn: 0,
        },
        tcb_date: oldest,
        tcb_status: dcap_qvl::tcb_info::TcbStatus::OutOfDate,
        advisory_ids: vec![BELOW_EVERY_LEVEL_ADVISORY.to_owned()],
    }
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
    verify_quote_with(quote, collateral, now_unix, &|_| {})
}

/// [`verify_quote`], with `tweak` applied to the TCB info of a second pass
/// for a platform below every listed level (tests change it to show that
/// the later checks run).
fn verify_quote_with(
    quote: &[u8],
    collateral: &QuoteCollateralV3,
    now_unix: u64,
    tweak: &dyn Fn(&mut TcbInfo),
) -> Result<Verified, TeeError> {
    check_quote_header(quote)?;
    let platform = claimed_platform(quote);
    let failed = |e: &dyn std::fmt::Display| TeeError::Verification {
        platform,
        reason: e.to_string(),
    };
    let report = match dcap_qvl::verify::rustcrypto::verify(quote, collateral, now_unix) {
        Ok(report) => report,
        Err(e) if format!("{e:#}").contains(BELOW_EVERY_TCB_LEVEL) => {
            verify_below_every_level(quote, collateral, now_unix, tweak).map_err(|e| failed(&e))?
        }
        Err(e) => return Err(failed(&format_args!("{e:#}"))),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(quote: &str, collateral: &str) -> (Vec<u8>, QuoteCollateralV3, u64) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/attestation");
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let collateral = parse_collateral(&read(collateral)).expect("collateral");
        let (from, _) = validity_window(&collateral).expect("window");
        (read(quote), collateral, from + 3600)
    }

    /// The outdated TDX sample's platform is below every level of its TCB
    /// info, so it is judged by the second pass.
    fn outdated() -> (Vec<u8>, QuoteCollateralV3, u64) {
        sample(
            "tdx/tdx_quote_outdated",
            "tdx/tdx_quote_outdated_collateral.json",
        )
    }

    /// The floor level fits the TCB info it is added to: TDX components for
    /// TDX (version 3) only, every SVN zero, dated as the oldest level.
    #[test]
    fn the_floor_level_has_tdx_components_only_for_tdx() {
        for (quote, collateral, tdx) in [
            ("sgx/sgx_quote", "sgx/sgx_quote_collateral.json", false),
            ("tdx/tdx_quote", "tdx/tdx_quote_collateral.json", true),
        ] {
            let (_, collateral, _) = sample(quote, collateral);
            let info: TcbInfo = serde_json::from_str(&collateral.tcb_info).expect("TCB info");
            let floor = floor_level(&info);
            assert_eq!(floor.tcb.tdx_components.len(), if tdx { 16 } else { 0 });
            assert_eq!(floor.tcb.sgx_components.len(), 16);
            assert!(floor.tcb.sgx_components.iter().all(|c| c.svn == 0));
            assert_eq!(floor.tcb.pce_svn, 0);
            let oldest = info.tcb_levels.iter().map(|l| &l.tcb_date).min();
            assert_eq!(Some(&floor.tcb_date), oldest);
        }
    }

    /// The header check refuses bytes shorter than a header by their
    /// length, and lets a full header of a known version and type through.
    #[test]
    fn the_quote_header_check_is_exact_at_its_length() {
        let mut header = vec![0u8; QUOTE_HEADER_LEN];
        header[0] = 4;
        check_quote_header(&header).expect("a full SGX v4 header");
        header[4] = 0x81;
        check_quote_header(&header).expect("a full TDX v4 header");
        for len in [0, 4, QUOTE_HEADER_LEN - 1] {
            let err = check_quote_header(&header[..len]).expect_err("short");
            assert!(
                matches!(&err, TeeError::Malformed { reason, .. }
                    if reason.starts_with(&format!("{len} bytes, shorter than a quote's 48-byte header"))),
                "{err}"
            );
        }
    }

    #[test]
    fn a_platform_below_every_level_is_judged_after_every_check() {
        let (quote, collateral, now) = outdated();
        let v = verify_quote(&quote, &collateral, now).expect("authentic, out of date");
        assert!(v.tcb_status >= TcbStatus::OutOfDate, "{:?}", v.tcb_status);
        assert!(
            v.advisories.iter().any(|a| a == BELOW_EVERY_LEVEL_ADVISORY),
            "{:?}",
            v.advisories
        );
        // The TDX module identity check runs in that pass: a module signer
        // other than the one the quote shows is refused, not reported out
        // of date.
        let err = verify_quote_with(&quote, &collateral, now, &|info| {
            if let Some(module) = info.tdx_module.as_mut() {
                module.mrsigner = "ff".repeat(48);
            }
            for identity in &mut info.tdx_module_identities {
                identity.mrsigner = "ff".repeat(48);
            }
        })
        .expect_err("module identity");
        assert!(
            matches!(&err, TeeError::Verification { platform: Platform::Tdx, reason } if reason.contains("TDX module")),
            "{err}"
        );
    }

    #[test]
    fn a_floor_level_that_would_be_revoked_is_refused_not_out_of_date() {
        let (quote, collateral, now) = outdated();
        let err = verify_quote_with(&quote, &collateral, now, &|info| {
            if let Some(floor) = info.tcb_levels.last_mut() {
                floor.tcb_status = dcap_qvl::tcb_info::TcbStatus::Revoked;
            }
        })
        .expect_err("revoked");
        assert!(
            matches!(&err, TeeError::Verification { reason, .. } if reason.contains("Revoked")),
            "{err}"
        );
    }
}
