//! AMD SEV-SNP attestation reports, verified with the `sev` crate (pure-Rust
//! crypto): the ARK is self-signed, the ARK signs the ASK, the ASK signs the
//! VCEK, and the VCEK signs the report. On top of the crate's checks, the
//! VCEK must be the one of the reporting chip (its hwID extension equals the
//! report's chip id) and must certify the TCB the report states.

use sev::certs::snp::{ca, Certificate, Chain, Verifiable};
use sev::firmware::guest::AttestationReport;
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::error::TeeError;
use crate::evidence::{Platform, TcbStatus, Verified};

/// AMD's OID arc for VCEK extensions.
const HWID_OID: &str = "1.3.6.1.4.1.3704.1.4";
const BOOTLOADER_SPL_OID: &str = "1.3.6.1.4.1.3704.1.3.1";
const TEE_SPL_OID: &str = "1.3.6.1.4.1.3704.1.3.2";
const SNP_SPL_OID: &str = "1.3.6.1.4.1.3704.1.3.3";
const MICROCODE_SPL_OID: &str = "1.3.6.1.4.1.3704.1.3.8";

fn failed(reason: String) -> TeeError {
    TeeError::Verification {
        platform: Platform::SevSnp,
        reason,
    }
}

/// The raw report from raw bytes or hex text (one line, as AMD tools print
/// it).
fn report_raw_bytes(bytes: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).ok().map(str::trim);
    match text.and_then(|t| hex::decode(t).ok()) {
        Some(decoded) => decoded,
        None => bytes.to_vec(),
    }
}

/// Parses a report: raw bytes, or hex text (one line) as AMD tools print it.
pub fn parse_report(bytes: &[u8]) -> Result<AttestationReport, TeeError> {
    let raw = report_raw_bytes(bytes);
    AttestationReport::from_bytes(&raw).map_err(|e| TeeError::Malformed {
        what: "SEV-SNP attestation report",
        reason: format!("{e} ({} bytes)", raw.len()),
    })
}

/// The ARK and ASK from a PEM chain file (ASK first, then ARK, as AMD's KDS
/// serves it; either order is accepted).
pub fn parse_ca_chain(pem: &[u8]) -> Result<ca::Chain, TeeError> {
    let malformed = |reason: String| TeeError::Malformed {
        what: "AMD ARK/ASK chain (PEM)",
        reason,
    };
    let mut certs = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| malformed(e.to_string()))?;
        let cert = Certificate::from_der(&block.contents).map_err(|e| malformed(e.to_string()))?;
        let (_, parsed) =
            X509Certificate::from_der(&block.contents).map_err(|e| malformed(e.to_string()))?;
        let self_signed = parsed.subject() == parsed.issuer();
        certs.push((self_signed, cert));
    }
    let ark = certs.iter().find(|(s, _)| *s).map(|(_, c)| c.clone());
    let ask = certs.iter().find(|(s, _)| !*s).map(|(_, c)| c.clone());
    let self_signed = certs.iter().filter(|(s, _)| *s).count();
    match (ark, ask, certs.len()) {
        (Some(ark), Some(ask), 2) => Ok(ca::Chain { ark, ask }),
        (_, _, n) => Err(malformed(format!(
            "expected one self-signed ARK and one ASK it issued; found {n} certificate(s), {self_signed} of them self-signed and {} not",
            n - self_signed
        ))),
    }
}

/// Length of an SEV-SNP attestation report.
pub const REPORT_LEN: usize = 1184;

/// Verifies a report (raw bytes, or hex text) against the VCEK (DER) and the
/// ARK/ASK chain.
pub fn verify_report(
    report_bytes: &[u8],
    vcek_der: &[u8],
    ca_chain: ca::Chain,
) -> Result<Verified, TeeError> {
    let raw = report_raw_bytes(report_bytes);
    let report = parse_report(&raw)?;
    // The crate checks the signature over its own re-encoding of the parsed
    // report, which drops reserved fields; require that re-encoding to be
    // the very bytes given, so no byte outside the signature escapes it.
    let mut canonical = Vec::with_capacity(REPORT_LEN);
    report
        .write_bytes(&mut canonical)
        .map_err(|e| failed(format!("cannot re-encode the report: {e}")))?;
    if canonical.get(..0x2a0) != raw.get(..0x2a0) {
        return Err(failed(
            "the report's signed part has non-zero reserved fields or is not in canonical form"
                .into(),
        ));
    }
    let vek = Certificate::from_der(vcek_der).map_err(|e| TeeError::Malformed {
        what: "VCEK certificate (DER)",
        reason: e.to_string(),
    })?;
    let chain = Chain { ca: ca_chain, vek };
    (&chain, &report)
        .verify()
        .map_err(|e| failed(format!("{e}")))?;
    check_vcek_binds_report(vcek_der, &report)?;
    Ok(Verified {
        platform: Platform::SevSnp,
        measurement: report.measurement.to_vec(),
        report_data: report.report_data.to_vec(),
        tcb_status: TcbStatus::NotAssessed,
        advisories: Vec::new(),
        hardware_protected: true,
    })
}

/// The VCEK must belong to the reporting chip and certify its TCB.
fn check_vcek_binds_report(vcek_der: &[u8], report: &AttestationReport) -> Result<(), TeeError> {
    let (_, cert) =
        X509Certificate::from_der(vcek_der).map_err(|e| failed(format!("VCEK: {e}")))?;
    let mut hwid = None;
    let mut spl = [None::<u64>; 4];
    for ext in cert.extensions() {
        let oid = ext.oid.to_id_string();
        let slot = match oid.as_str() {
            HWID_OID => {
                hwid = Some(der_octets(ext.value));
                continue;
            }
            BOOTLOADER_SPL_OID => 0,
            TEE_SPL_OID => 1,
            SNP_SPL_OID => 2,
            MICROCODE_SPL_OID => 3,
            _ => continue,
        };
        spl[slot] = der_integer(ext.value);
    }
    if hwid.as_deref() != Some(&report.chip_id[..]) {
        return Err(failed(
            "the VCEK is not the reporting chip's (its hwID differs from the report's chip id)"
                .into(),
        ));
    }
    let tcb = &report.reported_tcb;
    let stated = [tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode].map(u64::from);
    let names = ["bootloader", "TEE", "SNP firmware", "microcode"];
    for ((certified, reported), name) in spl.iter().zip(stated).zip(names) {
        if *certified != Some(reported) {
            return Err(failed(format!(
                "the VCEK certifies {name} SPL {certified:?} but the report states {reported}"
            )));
        }
    }
    Ok(())
}

/// The contents of an extension that is a DER OCTET STRING, or the raw value.
fn der_octets(value: &[u8]) -> Vec<u8> {
    match value {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() => rest.to_vec(),
        _ => value.to_vec(),
    }
}

/// A small DER INTEGER.
fn der_integer(value: &[u8]) -> Option<u64> {
    match value {
        [0x02, len, rest @ ..] if usize::from(*len) == rest.len() && rest.len() <= 8 => {
            Some(rest.iter().fold(0u64, |acc, b| acc << 8 | u64::from(*b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn genuine() -> (AttestationReport, Vec<u8>) {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/attestation/sev-snp");
        let read = |f: &str| std::fs::read(dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let report = parse_report(&read("report_milan.hex")).expect("report");
        (report, read("vcek_milan.der"))
    }

    fn reason(result: Result<(), TeeError>) -> String {
        match result {
            Err(TeeError::Verification { reason, .. }) => reason,
            other => panic!("expected a verification failure, got {other:?}"),
        }
    }

    /// The binding check on its own (a real chip's VCEK cannot sign a
    /// report of another chip or TCB, so the signature check would refuse
    /// such a report first): another chip id, or any TCB component other
    /// than the one the VCEK certifies, is refused by name.
    #[test]
    fn the_vcek_must_be_the_reporting_chips_at_its_tcb() {
        let (report, vcek) = genuine();
        check_vcek_binds_report(&vcek, &report).expect("the genuine pair");
        let mut other_chip = report;
        other_chip.chip_id[7] ^= 1;
        assert!(reason(check_vcek_binds_report(&vcek, &other_chip))
            .starts_with("the VCEK is not the reporting chip's"));
        type Change = fn(&mut AttestationReport);
        let changes: [(Change, &str); 4] = [
            (|r| r.reported_tcb.bootloader ^= 1, "bootloader"),
            (|r| r.reported_tcb.tee ^= 1, "TEE"),
            (|r| r.reported_tcb.snp ^= 1, "SNP firmware"),
            (|r| r.reported_tcb.microcode ^= 1, "microcode"),
        ];
        for (change, name) in changes {
            let (mut report, _) = genuine();
            change(&mut report);
            let reason = reason(check_vcek_binds_report(&vcek, &report));
            assert!(
                reason.starts_with(&format!("the VCEK certifies {name} SPL Some(")),
                "{reason}"
            );
        }
    }

    #[test]
    fn der_values_are_read_only_when_their_length_matches() {
        assert_eq!(der_octets(&[0x04, 2, 0xaa, 0xbb]), vec![0xaa, 0xbb]);
        assert_eq!(
            der_octets(&[0x04, 3, 0xaa, 0xbb]),
            vec![0x04, 3, 0xaa, 0xbb]
        );
        assert_eq!(
            der_octets(&[0x04, 1, 0xaa, 0xbb]),
            vec![0x04, 1, 0xaa, 0xbb]
        );
        assert_eq!(der_integer(&[0x02, 1, 0x7f]), Some(0x7f));
        assert_eq!(der_integer(&[0x02, 2, 0x01, 0x02]), Some(0x0102));
        assert_eq!(
            der_integer(&[0x02, 8, 1, 2, 3, 4, 5, 6, 7, 8]),
            Some(0x0102_0304_0506_0708)
        );
        assert_eq!(der_integer(&[0x02, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9]), None);
        assert_eq!(der_integer(&[0x02, 3, 0x01, 0x02]), None);
        assert_eq!(der_integer(&[0x02, 1, 0x01, 0x02]), None);
        assert_eq!(der_integer(&[0x04, 1, 0x01]), None);
    }
}
