//! The root KMS's disaster-recovery bundle: its signing key and every key
//! pair version, sealed under the operator password (Argon2id +
//! AES-256-GCM, see [`crate::password`]) and written to the third
//! environment after every key change.
//!
//! The stored object starts with a clear header signed by the KMS signing
//! key — which KMS wrote it and at which generation — so that a KMS can tell,
//! without the password, whether the bundle in a location is its own and
//! not newer than its state: `kms init` refuses a location holding any
//! bundle, and a live KMS refuses to replace another KMS's bundle or a newer
//! one of its own. Layout (format 2):
//!
//! `SOTTOKMB` | format 2 | signing public key (32) | generation (u64 BE) |
//! created (u64 BE) | Ed25519 signature (64) over those fields and the
//! SHA-256 of the sealed part | the sealed part (`SOTTOPWD...`).
//!
//! Format 1 (the sealed part alone) is still read by `restore`.

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sotto_crypto::identity::{IdentityKey, IdentityPublic, SIGNATURE_LEN};
use zeroize::Zeroizing;

use crate::keys::KeyRecord;
use crate::password::{self, Cost, OperatorPassword, UnsealLimits};
use crate::KmsError;

/// The object name of the sealed bundle in the third environment.
pub const BUNDLE_OBJECT: &str = "kms-bundle.sealed";
const FORMAT: &str = "sotto-kms-bundle/1";
const MAGIC: &[u8; 8] = b"SOTTOKMB";
const OBJECT_FORMAT: u8 = 2;
const HEADER_DOMAIN: &str = "sotto/kms/bundle-header/v2";
const HEADER_LEN: usize = 8 + 1 + 32 + 8 + 8 + SIGNATURE_LEN;

/// What the bundle holds.
#[derive(Serialize, Deserialize)]
pub struct Bundle {
    /// Format tag.
    pub format: String,
    /// Increases with every change.
    pub generation: u64,
    /// When sealed, Unix seconds.
    pub created: u64,
    /// The KMS signing key's seed, hex.
    pub signing_key: Zeroizing<String>,
    /// Every key pair version.
    pub keys: Vec<KeyRecord>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("generation", &self.generation)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

/// The clear, signed header of a stored bundle: who wrote it, and when in
/// its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BundleHeader {
    /// The signing key of the KMS that wrote it.
    pub signing_key: IdentityPublic,
    /// Its generation.
    pub generation: u64,
    /// When it was sealed, Unix seconds.
    pub created: u64,
}

/// A stored bundle, split into its header (absent in format 1) and the
/// password-sealed part.
pub struct StoredBundle<'a> {
    /// The signed header, checked.
    pub header: Option<BundleHeader>,
    sealed: &'a [u8],
}

fn signed_fields(header: &BundleHeader, sealed: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + 1 + 32 + 16 + 32);
    bytes.extend_from_slice(MAGIC);
    bytes.push(OBJECT_FORMAT);
    bytes.extend_from_slice(&header.signing_key.to_bytes());
    bytes.extend_from_slice(&header.generation.to_be_bytes());
    bytes.extend_from_slice(&header.created.to_be_bytes());
    bytes.extend_from_slice(&sotto_crypto::hash::sha256(sealed));
    bytes
}

impl<'a> StoredBundle<'a> {
    /// Splits a stored object and checks its header's signature (by the key
    /// the header names; whether that is the expected KMS is the caller's
    /// question).
    pub fn parse(object: &'a [u8]) -> Result<Self, KmsError> {
        let malformed = |reason: String| KmsError::Malformed {
            what: format!("sealed bundle ({BUNDLE_OBJECT})"),
            reason,
        };
        if !object.starts_with(MAGIC) {
            return Ok(Self {
                header: None,
                sealed: object,
            });
        }
        if object.len() < HEADER_LEN {
            return Err(malformed(format!(
                "{} bytes, shorter than its header",
                object.len()
            )));
        }
        if object[8] != OBJECT_FORMAT {
            return Err(malformed(format!(
                "format {} (this build reads {OBJECT_FORMAT})",
                object[8]
            )));
        }
        let (head, sealed) = object.split_at(HEADER_LEN);
        let u64_at = |at: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&head[at..at + 8]);
            u64::from_be_bytes(word)
        };
        let signing_key = IdentityPublic::from_bytes(&head[9..41])
            .map_err(|e| malformed(format!("signing key: {e}")))?;
        let header = BundleHeader {
            signing_key,
            generation: u64_at(41),
            created: u64_at(49),
        };
        signing_key
            .verify(
                HEADER_DOMAIN,
                &signed_fields(&header, sealed),
                &head[57..HEADER_LEN],
                "bundle header",
            )
            .map_err(|_| {
                malformed("its header signature does not verify (altered or damaged)".into())
            })?;
        Ok(Self {
            header: Some(header),
            sealed,
        })
    }

    /// Opens the sealed part with the operator password; the bundle inside
    /// must agree with the signed header.
    pub fn open(
        &self,
        password: &OperatorPassword,
        limits: UnsealLimits,
    ) -> Result<Bundle, KmsError> {
        let json = password::open(password.expose(), self.sealed, limits)?;
        let bundle: Bundle = serde_json::from_slice(&json).map_err(|e| KmsError::Malformed {
            what: "sealed bundle".into(),
            reason: e.to_string(),
        })?;
        if bundle.format != FORMAT {
            return Err(KmsError::Malformed {
                what: "sealed bundle".into(),
                reason: format!("format {:?}, this build reads {FORMAT:?}", bundle.format),
            });
        }
        if let Some(header) = &self.header {
            let inner = bundle.signing_public()?;
            if inner != header.signing_key || bundle.generation != header.generation {
                return Err(KmsError::Malformed {
                    what: "sealed bundle".into(),
                    reason: "its contents disagree with its signed header".into(),
                });
            }
        }
        Ok(bundle)
    }
}

/// Decides whether the KMS with `signing_key`, whose state is at
/// `generation`, may replace the stored object `existing` with its next
/// bundle: only its own bundle, at its generation or an older one. A format-1
/// bundle carries no header and is opened with the password to find out.
pub fn check_replaceable(
    existing: &[u8],
    signing_key: &IdentityPublic,
    generation: u64,
    password: &OperatorPassword,
    location: &str,
) -> Result<(), KmsError> {
    let stored = StoredBundle::parse(existing).map_err(|e| KmsError::BackupInUse {
        location: location.to_owned(),
        found: format!("an object this KMS cannot vouch for ({e})"),
    })?;
    let header = match stored.header {
        Some(header) => header,
        None => {
            let bundle = stored
                .open(password, UnsealLimits::default())
                .map_err(|e| KmsError::BackupInUse {
                    location: location.to_owned(),
                    found: format!(
                        "a format-1 bundle that this KMS's password does not open ({e})"
                    ),
                })?;
            BundleHeader {
                signing_key: bundle.signing_public()?,
                generation: bundle.generation,
                created: bundle.created,
            }
        }
    };
    if header.signing_key != *signing_key {
        return Err(KmsError::BackupInUse {
            location: location.to_owned(),
            found: format!(
                "the bundle of another KMS (signing key {}, generation {})",
                header.signing_key, header.generation
            ),
        });
    }
    if header.generation > generation {
        return Err(KmsError::BundleAhead {
            location: location.to_owned(),
            found: header.generation,
            ours: generation,
        });
    }
    Ok(())
}

impl Bundle {
    /// A bundle of the given state.
    pub fn new(
        generation: u64,
        created: u64,
        signing_seed: &[u8; 32],
        keys: Vec<KeyRecord>,
    ) -> Self {
        Self {
            format: FORMAT.into(),
            generation,
            created,
            signing_key: Zeroizing::new(hex::encode(signing_seed)),
            keys,
        }
    }

    /// The signing key's seed.
    pub fn signing_seed(&self) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        hex::decode(self.signing_key.as_bytes())
            .map(Zeroizing::new)
            .map_err(|e| KmsError::Malformed {
                what: "bundle signing key".into(),
                reason: e.to_string(),
            })
    }

    /// The signing key the bundle holds.
    pub fn signing_key(&self) -> Result<IdentityKey, KmsError> {
        IdentityKey::from_seed(&self.signing_seed()?)
            .map_err(|e| KmsError::Corrupt(format!("bundle signing key: {e}")))
    }

    fn signing_public(&self) -> Result<IdentityPublic, KmsError> {
        Ok(self.signing_key()?.public())
    }

    /// Seals the bundle under the operator password and signs its header
    /// with the signing key it holds.
    pub fn seal<R: RngCore + CryptoRng>(
        &self,
        password: &OperatorPassword,
        rng: &mut R,
    ) -> Result<Vec<u8>, KmsError> {
        let json =
            Zeroizing::new(serde_json::to_vec(self).map_err(|e| KmsError::Corrupt(e.to_string()))?);
        let sealed = password::seal(password.expose(), &json, Cost::default(), rng)?;
        let signing = self.signing_key()?;
        let header = BundleHeader {
            signing_key: signing.public(),
            generation: self.generation,
            created: self.created,
        };
        let fields = signed_fields(&header, &sealed);
        let mut object = Vec::with_capacity(HEADER_LEN + sealed.len());
        object.extend_from_slice(&fields[..8 + 1 + 32 + 16]);
        object.extend_from_slice(&signing.sign(HEADER_DOMAIN, &fields));
        object.extend_from_slice(&sealed);
        Ok(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn password() -> OperatorPassword {
        OperatorPassword::new(b"operator".to_vec()).expect("password")
    }

    #[test]
    fn the_header_names_the_kms_and_generation_and_is_signed() {
        let signing = IdentityKey::generate(&mut OsRng);
        let object = Bundle::new(7, 100, &signing.to_seed(), Vec::new())
            .seal(&password(), &mut OsRng)
            .expect("seal");
        let stored = StoredBundle::parse(&object).expect("parse");
        assert_eq!(
            stored.header,
            Some(BundleHeader {
                signing_key: signing.public(),
                generation: 7,
                created: 100
            })
        );
        let bundle = stored
            .open(&password(), UnsealLimits::default())
            .expect("open");
        assert_eq!(bundle.generation, 7);
        for at in [45, 52, 60, object.len() - 1] {
            let mut altered = object.clone();
            altered[at] ^= 1;
            assert!(
                matches!(StoredBundle::parse(&altered), Err(KmsError::Malformed { ref reason, .. }) if reason.contains("does not verify")),
                "byte {at}"
            );
        }
    }

    #[test]
    fn a_format_1_bundle_still_opens() {
        let signing = IdentityKey::generate(&mut OsRng);
        let object = Bundle::new(3, 100, &signing.to_seed(), Vec::new())
            .seal(&password(), &mut OsRng)
            .expect("seal");
        let legacy = &object[HEADER_LEN..];
        let stored = StoredBundle::parse(legacy).expect("parse");
        assert!(stored.header.is_none());
        let bundle = stored
            .open(&password(), UnsealLimits::default())
            .expect("open");
        assert_eq!(bundle.generation, 3);
    }
}
