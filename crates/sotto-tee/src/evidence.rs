//! What verified evidence says, whatever the platform: the platform, the
//! code measurement, the 64 bytes of report data the enclave bound into it,
//! and the platform's TCB status with its advisories.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// A trusted-execution platform.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Platform {
    /// Intel SGX enclave (DCAP quote).
    Sgx,
    /// Intel TDX trust domain (DCAP quote).
    Tdx,
    /// AMD SEV-SNP guest (attestation report signed by the VCEK).
    SevSnp,
    /// The software backend: NOT hardware-protected.
    Software,
}

impl Platform {
    /// Whether results of this platform come from hardware protection.
    pub fn hardware_protected(self) -> bool {
        self != Platform::Software
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Platform::Sgx => "sgx",
            Platform::Tdx => "tdx",
            Platform::SevSnp => "sev-snp",
            Platform::Software => "software (not hardware-protected)",
        })
    }
}

impl FromStr for Platform {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sgx" => Ok(Platform::Sgx),
            "tdx" => Ok(Platform::Tdx),
            "sev-snp" | "snp" => Ok(Platform::SevSnp),
            "software" => Ok(Platform::Software),
            other => Err(format!(
                "unknown platform {other:?}; expected sgx, tdx, sev-snp or software"
            )),
        }
    }
}

/// TCB status, from best to worst (the order is what policies compare).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum TcbStatus {
    /// Fully patched.
    UpToDate,
    /// Patched, but software hardening is needed for some advisories.
    SWHardeningNeeded,
    /// Patched, but the platform configuration needs changes.
    ConfigurationNeeded,
    /// Both of the above.
    ConfigurationAndSWHardeningNeeded,
    /// Missing security updates.
    OutOfDate,
    /// Missing security updates, and configuration changes needed.
    OutOfDateConfigurationNeeded,
    /// The platform's key material is revoked.
    Revoked,
    /// Not assessed: the platform has no TCB status of this kind (SEV-SNP
    /// reports carry TCB versions, not a verdict; the software backend has
    /// none). Only a policy that accepts any status accepts it.
    NotAssessed,
}

impl fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl FromStr for TcbStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "UpToDate" => TcbStatus::UpToDate,
            "SWHardeningNeeded" => TcbStatus::SWHardeningNeeded,
            "ConfigurationNeeded" => TcbStatus::ConfigurationNeeded,
            "ConfigurationAndSWHardeningNeeded" => TcbStatus::ConfigurationAndSWHardeningNeeded,
            "OutOfDate" => TcbStatus::OutOfDate,
            "OutOfDateConfigurationNeeded" => TcbStatus::OutOfDateConfigurationNeeded,
            "Revoked" => TcbStatus::Revoked,
            "NotAssessed" => TcbStatus::NotAssessed,
            other => return Err(format!("unknown TCB status {other:?}")),
        })
    }
}

/// Evidence that verified.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// The platform.
    pub platform: Platform,
    /// The code measurement (MRENCLAVE, MRTD, the SNP launch measurement, or
    /// the software backend's executable hash), hex in JSON.
    #[serde(serialize_with = "as_hex")]
    pub measurement: Vec<u8>,
    /// The 64 bytes the enclave bound into the evidence.
    #[serde(serialize_with = "as_hex")]
    pub report_data: Vec<u8>,
    /// The TCB status.
    pub tcb_status: TcbStatus,
    /// Security advisories that apply (Intel SA ids).
    pub advisories: Vec<String>,
    /// False for the software backend.
    pub hardware_protected: bool,
}

fn as_hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_order_from_best_to_worst_and_parse() {
        assert!(TcbStatus::UpToDate < TcbStatus::SWHardeningNeeded);
        assert!(TcbStatus::ConfigurationAndSWHardeningNeeded < TcbStatus::OutOfDate);
        assert!(TcbStatus::OutOfDate < TcbStatus::Revoked);
        for s in [
            "UpToDate",
            "OutOfDate",
            "ConfigurationAndSWHardeningNeeded",
            "NotAssessed",
        ] {
            assert_eq!(
                s.parse::<TcbStatus>().map(|t| t.to_string()),
                Ok(s.to_owned())
            );
        }
        assert!("Fine".parse::<TcbStatus>().is_err());
        assert_eq!("sev-snp".parse::<Platform>(), Ok(Platform::SevSnp));
        assert!(!Platform::Software.hardware_protected());
        assert!(Platform::Software
            .to_string()
            .contains("not hardware-protected"));
    }
}
