//! Attestation policy: which platforms, which code measurements and which
//! TCB levels a verifier accepts, and whether it accepts the software
//! backend (never outside development mode).

use std::path::Path;

use serde::Deserialize;
use sotto_crypto::identity::IdentityPublic;

use crate::error::TeeError;
use crate::evidence::{Platform, TcbStatus, Verified};

/// A parsed policy.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Accepted hardware platforms.
    pub platforms: Vec<Platform>,
    /// Accepted measurements (exact match).
    pub measurements: Vec<Vec<u8>>,
    /// Worst accepted TCB status.
    pub min_tcb: TcbStatus,
    /// Accept evidence whose platform has no TCB verdict (SEV-SNP).
    pub accept_not_assessed: bool,
    /// Accept the software backend (only with development mode).
    pub allow_software: bool,
    /// Platform keys trusted for software evidence.
    pub software_platform_keys: Vec<IdentityPublic>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    platforms: Vec<String>,
    measurements: Vec<String>,
    #[serde(default = "default_min_tcb")]
    min_tcb: String,
    #[serde(default)]
    accept_not_assessed: bool,
    #[serde(default)]
    allow_software: bool,
    #[serde(default)]
    software_platform_keys: Vec<String>,
}

fn default_min_tcb() -> String {
    "UpToDate".into()
}

/// The verdict of a policy on verified evidence.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// Whether the evidence is accepted.
    pub accepted: bool,
    /// Every reason it is refused (empty when accepted).
    pub reasons: Vec<String>,
}

impl Policy {
    /// Reads a policy file.
    pub fn read(path: &Path) -> Result<Self, TeeError> {
        let text = std::fs::read_to_string(path).map_err(|source| TeeError::Io {
            path: path.to_owned(),
            action: "read policy",
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses policy text; `path` is for errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, TeeError> {
        let bad = |reason: String| TeeError::Policy {
            path: path.to_owned(),
            reason,
        };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let platforms = raw
            .platforms
            .iter()
            .map(|p| {
                p.parse::<Platform>()
                    .map_err(|e| bad(format!("platforms: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if platforms.contains(&Platform::Software) {
            return Err(bad(
                "platforms: list hardware platforms only; the software backend is allowed with allow_software = true (and --dev)".into(),
            ));
        }
        let measurements = raw
            .measurements
            .iter()
            .map(|m| hex::decode(m).map_err(|e| bad(format!("measurements: {m:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if measurements.is_empty() {
            return Err(bad(
                "measurements: list at least one accepted measurement (hex), e.g. from `sotto tee measure`".into(),
            ));
        }
        let min_tcb = raw
            .min_tcb
            .parse::<TcbStatus>()
            .map_err(|e| bad(format!("min_tcb: {e}")))?;
        let software_platform_keys = raw
            .software_platform_keys
            .iter()
            .map(|k| {
                hex::decode(k)
                    .ok()
                    .and_then(|b| IdentityPublic::from_bytes(&b).ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "software_platform_keys: {k:?} is not a 32-byte Ed25519 key in hex"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            platforms,
            measurements,
            min_tcb,
            accept_not_assessed: raw.accept_not_assessed,
            allow_software: raw.allow_software,
            software_platform_keys,
        })
    }

    /// Decides on verified evidence. `dev` is development mode, the only
    /// mode in which software evidence can be accepted.
    pub fn decide(&self, v: &Verified, dev: bool) -> Decision {
        let mut reasons = Vec::new();
        if v.platform == Platform::Software {
            if !self.allow_software {
                reasons.push(
                    "software evidence is not hardware-protected and this policy does not allow it"
                        .into(),
                );
            } else if !dev {
                reasons
                    .push("software evidence is accepted only in development mode (--dev)".into());
            }
        } else if !self.platforms.contains(&v.platform) {
            reasons.push(format!(
                "platform {} is not accepted by this policy",
                v.platform
            ));
        }
        if !self.measurements.contains(&v.measurement) {
            reasons.push(format!(
                "measurement {} is not on the policy's allowlist",
                hex::encode(&v.measurement)
            ));
        }
        match v.tcb_status {
            TcbStatus::NotAssessed if v.platform == Platform::Software => {}
            TcbStatus::NotAssessed if !self.accept_not_assessed => reasons.push(format!(
                "{} evidence has no TCB verdict and the policy does not set accept_not_assessed",
                v.platform
            )),
            TcbStatus::NotAssessed => {}
            status if status > self.min_tcb => reasons.push(format!(
                "TCB status {status} (advisories: {}) is below the policy's minimum {}",
                if v.advisories.is_empty() {
                    "none".to_owned()
                } else {
                    v.advisories.join(", ")
                },
                self.min_tcb
            )),
            _ => {}
        }
        Decision {
            accepted: reasons.is_empty(),
            reasons,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verified(platform: Platform, tcb: TcbStatus) -> Verified {
        Verified {
            platform,
            measurement: vec![0xab; 32],
            report_data: vec![0; 64],
            tcb_status: tcb,
            advisories: vec!["INTEL-SA-00615".into()],
            hardware_protected: platform.hardware_protected(),
        }
    }

    fn policy(extra: &str) -> Policy {
        let text = format!(
            "platforms = [\"sgx\", \"tdx\"]\nmeasurements = [\"{}\"]\nmin_tcb = \"SWHardeningNeeded\"\n{extra}",
            hex::encode([0xab; 32])
        );
        Policy::parse(Path::new("policy.toml"), &text).expect("policy")
    }

    #[test]
    fn accepts_what_it_lists_and_names_every_refusal() {
        let p = policy("");
        assert!(
            p.decide(&verified(Platform::Sgx, TcbStatus::UpToDate), false)
                .accepted
        );
        assert!(
            p.decide(
                &verified(Platform::Tdx, TcbStatus::SWHardeningNeeded),
                false
            )
            .accepted
        );
        let d = p.decide(&verified(Platform::Sgx, TcbStatus::OutOfDate), false);
        assert!(!d.accepted);
        assert!(d.reasons[0].contains("OutOfDate") && d.reasons[0].contains("INTEL-SA-00615"));
        let d = p.decide(&verified(Platform::SevSnp, TcbStatus::NotAssessed), false);
        assert_eq!(d.reasons.len(), 2, "{:?}", d.reasons);
        let mut other = verified(Platform::Sgx, TcbStatus::UpToDate);
        other.measurement = vec![1; 32];
        assert!(p.decide(&other, false).reasons[0].contains("allowlist"));
    }

    /// Hardware evidence without a TCB verdict (an SNP report verified
    /// without TCB data): refused with its reason unless the policy sets
    /// `accept_not_assessed`, then accepted.
    #[test]
    fn no_tcb_verdict_is_accepted_only_when_the_policy_says_so() {
        let unassessed = verified(Platform::Sgx, TcbStatus::NotAssessed);
        let d = policy("").decide(&unassessed, false);
        assert_eq!(
            d.reasons,
            vec![
                "sgx evidence has no TCB verdict and the policy does not set accept_not_assessed"
                    .to_owned()
            ]
        );
        let d = policy("accept_not_assessed = true").decide(&unassessed, false);
        assert!(d.accepted, "{:?}", d.reasons);
    }

    #[test]
    fn software_only_when_allowed_and_in_dev_mode() {
        let sw = verified(Platform::Software, TcbStatus::NotAssessed);
        assert!(!policy("").decide(&sw, true).accepted);
        let p = policy("allow_software = true");
        assert!(!p.decide(&sw, false).accepted);
        assert!(p.decide(&sw, true).accepted);
    }

    #[test]
    fn bad_policies_are_refused_with_the_field() {
        for (text, needle) in [
            ("platforms = [\"sgx\"]\nmeasurements = []", "measurements"),
            (
                "platforms = [\"software\"]\nmeasurements = [\"ab\"]",
                "platforms",
            ),
            ("platforms = [\"z80\"]\nmeasurements = [\"ab\"]", "z80"),
            (
                "platforms = [\"sgx\"]\nmeasurements = [\"xyz\"]",
                "measurements",
            ),
            (
                "platforms = [\"sgx\"]\nmeasurements = [\"ab\"]\nmin_tcb = \"Great\"",
                "min_tcb",
            ),
            (
                "platforms = [\"sgx\"]\nmeasurements = [\"ab\"]\nextra = 1",
                "extra",
            ),
        ] {
            let err = Policy::parse(Path::new("p.toml"), text)
                .expect_err(needle)
                .to_string();
            assert!(err.contains(needle) && err.starts_with("p.toml"), "{err}");
        }
    }
}
