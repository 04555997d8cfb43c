//! The software enclave backend, for development and for machines without
//! TEE hardware. It is NOT hardware-protected: whoever controls the machine
//! can read its memory and, holding the platform key, forge its evidence.
//! It exists so that registration and key sync run end to end anywhere, and
//! every result it produces says so.
//!
//! - Measurement: SHA-256 of the running executable.
//! - Evidence: `SOTTOSWE`, version, measurement, report data and the
//!   platform public key, signed with the operator-provisioned platform key
//!   (Ed25519) under the domain `sotto/tee/software-evidence/v1`.
//! - Sealing: AES-256-GCM under `HKDF(platform sealing secret,
//!   "sotto/tee/seal/v1" || measurement)`, so another binary cannot unseal.

use std::path::Path;

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::aead;
use sotto_crypto::hash::{sha256, FieldHasher};
use sotto_crypto::identity::{IdentityKey, IdentityPublic, SIGNATURE_LEN};
use sotto_crypto::secret::SecretBytes;
use zeroize::Zeroizing;

use crate::enclave::Enclave;
use crate::error::TeeError;
use crate::evidence::{Platform, TcbStatus, Verified};

const MAGIC: &[u8; 8] = b"SOTTOSWE";
const VERSION: u8 = 1;
const DOMAIN: &str = "sotto/tee/software-evidence/v1";
/// Length of software evidence in bytes.
pub const EVIDENCE_LEN: usize = 8 + 1 + 32 + 64 + 32 + SIGNATURE_LEN;
const KEY_FILE_LEN: usize = 64;

/// The operator's platform secrets: the evidence signing key and the
/// sealing secret.
pub struct PlatformKey {
    signing: IdentityKey,
    sealing: SecretBytes<32>,
}

impl PlatformKey {
    /// Generates a platform key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut sealing = [0u8; 32];
        rng.fill_bytes(&mut sealing);
        Self {
            signing: IdentityKey::generate(rng),
            sealing: SecretBytes::new(sealing),
        }
    }

    /// Reads a platform key file (64 bytes: signing seed, sealing secret).
    pub fn read(path: &Path) -> Result<Self, TeeError> {
        sotto_node::files::warn_if_exposed(path);
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| TeeError::Io {
            path: path.to_owned(),
            action: "read platform key",
            source,
        })?);
        if bytes.len() != KEY_FILE_LEN {
            return Err(TeeError::Malformed {
                what: "platform key file",
                reason: format!("{} bytes, expected {KEY_FILE_LEN}", bytes.len()),
            });
        }
        let signing = IdentityKey::from_seed(&bytes[..32]).map_err(|e| TeeError::Malformed {
            what: "platform key file",
            reason: e.to_string(),
        })?;
        let sealing = SecretBytes::from_slice("sealing secret", &bytes[32..]).map_err(|e| {
            TeeError::Malformed {
                what: "platform key file",
                reason: e.to_string(),
            }
        })?;
        Ok(Self { signing, sealing })
    }

    /// The key file's bytes (write them with mode 0600).
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(KEY_FILE_LEN));
        out.extend_from_slice(self.signing.to_seed().as_slice());
        out.extend_from_slice(self.sealing.expose());
        out
    }

    /// The public key verifiers pin.
    pub fn public(&self) -> IdentityPublic {
        self.signing.public()
    }
}

/// SHA-256 of an executable file.
pub fn measure_file(path: &Path) -> Result<[u8; 32], TeeError> {
    let bytes = std::fs::read(path).map_err(|source| TeeError::Io {
        path: path.to_owned(),
        action: "read executable",
        source,
    })?;
    Ok(sha256(&bytes))
}

/// A software enclave: this process, measured by its executable.
pub struct SoftwareEnclave {
    measurement: [u8; 32],
    key: PlatformKey,
}

impl SoftwareEnclave {
    /// The enclave of the running executable under `key`.
    pub fn current(key: PlatformKey) -> Result<Self, TeeError> {
        let exe = std::env::current_exe().map_err(|source| TeeError::Io {
            path: "current executable".into(),
            action: "locate",
            source,
        })?;
        Ok(Self::with_measurement(measure_file(&exe)?, key))
    }

    /// An enclave with a given measurement (tests, and running an
    /// executable measured elsewhere).
    pub fn with_measurement(measurement: [u8; 32], key: PlatformKey) -> Self {
        Self { measurement, key }
    }

    fn sealing_key(&self) -> SecretBytes<32> {
        let mut h = FieldHasher::new("sotto/tee/seal/v1");
        h.field(self.key.sealing.expose()).field(&self.measurement);
        SecretBytes::new(h.finish())
    }
}

fn signed_part(measurement: &[u8], report_data: &[u8], platform: &[u8; 32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(EVIDENCE_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.extend_from_slice(measurement);
    out.extend_from_slice(report_data);
    out.extend_from_slice(platform);
    out
}

impl Enclave for SoftwareEnclave {
    fn platform(&self) -> Platform {
        Platform::Software
    }

    fn measurement(&self) -> Vec<u8> {
        self.measurement.to_vec()
    }

    fn evidence(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, TeeError> {
        let mut out = signed_part(
            &self.measurement,
            report_data,
            &self.key.public().to_bytes(),
        );
        let signature = self.key.signing.sign(DOMAIN, &out);
        out.extend_from_slice(&signature);
        Ok(out)
    }

    fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, TeeError> {
        aead::seal(&self.sealing_key(), aad, plaintext, &mut rand_core::OsRng)
            .map_err(|e| TeeError::Unseal(e.to_string()))
    }

    fn unseal(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, TeeError> {
        aead::open(&self.sealing_key(), aad, sealed).map_err(|_| {
            TeeError::Unseal("sealed by another measurement or platform key, or altered".into())
        })
    }
}

/// Verifies software evidence signed by one of `trusted_platforms`.
pub fn verify_evidence(
    evidence: &[u8],
    trusted_platforms: &[IdentityPublic],
) -> Result<Verified, TeeError> {
    let failed = |reason: String| TeeError::Verification {
        platform: Platform::Software,
        reason,
    };
    if evidence.len() != EVIDENCE_LEN || &evidence[..8] != MAGIC {
        return Err(TeeError::Malformed {
            what: "software evidence",
            reason: format!("expected {EVIDENCE_LEN} bytes starting with SOTTOSWE"),
        });
    }
    if evidence[8] != VERSION {
        return Err(failed(format!("unknown version {}", evidence[8])));
    }
    let (body, signature) = evidence.split_at(EVIDENCE_LEN - SIGNATURE_LEN);
    let platform = IdentityPublic::from_bytes(&body[105..137])
        .map_err(|e| failed(format!("platform key: {e}")))?;
    if !trusted_platforms.contains(&platform) {
        return Err(failed(format!(
            "signed by platform key {platform}, which this verifier does not trust"
        )));
    }
    platform
        .verify(DOMAIN, body, signature, "software evidence")
        .map_err(|e| failed(e.to_string()))?;
    Ok(Verified {
        platform: Platform::Software,
        measurement: body[9..41].to_vec(),
        report_data: body[41..105].to_vec(),
        tcb_status: TcbStatus::NotAssessed,
        advisories: Vec::new(),
        hardware_protected: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn enclave(measurement: u8) -> (SoftwareEnclave, IdentityPublic) {
        let key = PlatformKey::generate(&mut OsRng);
        let public = key.public();
        (
            SoftwareEnclave::with_measurement([measurement; 32], key),
            public,
        )
    }

    #[test]
    fn evidence_verifies_binds_report_data_and_refuses_every_flip() {
        let (e, platform) = enclave(1);
        let evidence = e.evidence(&[7; 64]).expect("evidence");
        let v = verify_evidence(&evidence, &[platform]).expect("verifies");
        assert_eq!(v.measurement, vec![1; 32]);
        assert_eq!(v.report_data, vec![7; 64]);
        assert!(!v.hardware_protected);
        for i in 0..evidence.len() {
            let mut bad = evidence.clone();
            bad[i] ^= 1;
            assert!(verify_evidence(&bad, &[platform]).is_err(), "flip at {i}");
        }
        let (_, other) = enclave(1);
        assert!(verify_evidence(&evidence, &[other]).is_err());
    }

    #[test]
    fn sealing_is_bound_to_the_measurement() {
        let key = PlatformKey::generate(&mut OsRng);
        let bytes = key.to_bytes();
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("platform.key");
        std::fs::write(&path, bytes.as_slice()).expect("write");
        let a = SoftwareEnclave::with_measurement([1; 32], PlatformKey::read(&path).expect("read"));
        let b = SoftwareEnclave::with_measurement([2; 32], PlatformKey::read(&path).expect("read"));
        let sealed = a.seal(b"group key", b"v1").expect("seal");
        assert_eq!(a.unseal(&sealed, b"v1").expect("unseal"), b"group key");
        assert!(a.unseal(&sealed, b"v2").is_err());
        assert!(b.unseal(&sealed, b"v1").is_err());
        std::fs::write(&path, [0u8; 10]).expect("write");
        assert!(PlatformKey::read(&path).is_err());
    }
}
