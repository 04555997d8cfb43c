//! The root KMS's disaster-recovery bundle: its signing key and every key
//! pair version, sealed under the operator password (Argon2id +
//! AES-256-GCM, see [`crate::password`]) and written to the third
//! environment after every key change.

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keys::KeyRecord;
use crate::password::{self, Cost, OperatorPassword};
use crate::KmsError;

/// The object name of the sealed bundle in the third environment.
pub const BUNDLE_OBJECT: &str = "kms-bundle.sealed";
const FORMAT: &str = "sotto-kms-bundle/1";

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

    /// Seals the bundle under the operator password.
    pub fn seal<R: RngCore + CryptoRng>(
        &self,
        password: &OperatorPassword,
        rng: &mut R,
    ) -> Result<Vec<u8>, KmsError> {
        let json =
            Zeroizing::new(serde_json::to_vec(self).map_err(|e| KmsError::Corrupt(e.to_string()))?);
        Ok(password::seal(
            password.expose(),
            &json,
            Cost::default(),
            rng,
        )?)
    }

    /// Opens a sealed bundle; a wrong password is [`password::PasswordError::WrongPassword`].
    pub fn open(password: &OperatorPassword, sealed: &[u8]) -> Result<Self, KmsError> {
        let json = password::open(password.expose(), sealed)?;
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
        Ok(bundle)
    }
}
