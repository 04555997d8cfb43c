//! The ledger's enclave keys, all derived from the registration center's
//! versioned group keys (which only admitted members receive): per group
//! key version, the envelope key pair (HPKE, requests are sealed to it)
//! and the data-encryption key (writes are sealed under it); from the
//! first version, the key-id key that turns a contract's key names into
//! opaque 32-byte ids, stable across rotations so versions keep matching.

use std::collections::BTreeMap;

use sotto_crypto::hpke::{HpkePublicKey, HpkeSecretKey};
use sotto_crypto::kdf::hkdf_key;
use sotto_crypto::secret::SecretBytes;
use sotto_crypto::{aead, CryptoError};

/// The keys of every group key version an enclave holds.
pub struct LedgerKeys {
    key_ids: SecretBytes<32>,
    versions: BTreeMap<u64, VersionKeys>,
}

struct VersionKeys {
    envelope: HpkeSecretKey,
    dek: SecretBytes<32>,
}

impl std::fmt::Debug for LedgerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LedgerKeys(versions={:?}, secrets=redacted)",
            self.versions.keys().collect::<Vec<_>>()
        )
    }
}

fn derive(group_key: &SecretBytes<32>, label: &str, version: u64) -> SecretBytes<32> {
    let mut info = label.as_bytes().to_vec();
    info.extend_from_slice(&version.to_be_bytes());
    hkdf_key(None, group_key.expose(), &info)
}

/// Why a sealed value did not open.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The value names a data-encryption key version the enclave lacks.
    #[error(
        "value sealed under data-encryption key version {0}, which this enclave does not hold"
    )]
    UnknownVersion(u64),
    /// The value is shorter than its version prefix or fails its tag.
    #[error("sealed value does not open (tampered, or moved to another key)")]
    Damaged,
}

impl LedgerKeys {
    /// Derives the keys from group keys (version, key), oldest first; the
    /// first one given must be version 1 (it fixes the key-id key).
    pub fn from_group_keys(group_keys: &[(u64, SecretBytes<32>)]) -> Result<Self, CryptoError> {
        let first = group_keys
            .iter()
            .find(|(v, _)| *v == 1)
            .ok_or(CryptoError::BadEncoding {
                what: "group keys (version 1 missing)",
            })?;
        let mut versions = BTreeMap::new();
        for (version, key) in group_keys {
            let envelope = HpkeSecretKey::from_bytes(
                derive(key, "sotto/ledger/envelope/v1", *version).expose(),
            )?;
            let dek = derive(key, "sotto/ledger/dek/v1", *version);
            versions.insert(*version, VersionKeys { envelope, dek });
        }
        Ok(Self {
            key_ids: derive(&first.1, "sotto/ledger/key-id/v1", 1),
            versions,
        })
    }

    /// The newest version.
    pub fn current(&self) -> u64 {
        self.versions.keys().next_back().copied().unwrap_or(0)
    }

    /// The envelope secret key of the newest version.
    pub fn envelope(&self) -> Option<&HpkeSecretKey> {
        self.versions.values().next_back().map(|v| &v.envelope)
    }

    /// The envelope public key of a version (what the center publishes).
    pub fn envelope_public(&self, version: u64) -> Option<HpkePublicKey> {
        self.versions.get(&version).map(|v| v.envelope.public())
    }

    /// The opaque id of a contract's key.
    pub fn key_id(&self, contract: &str, key: &str) -> [u8; 32] {
        let mut info = b"sotto/ledger/key-id/v1".to_vec();
        info.extend_from_slice(&(contract.len() as u64).to_be_bytes());
        info.extend_from_slice(contract.as_bytes());
        info.extend_from_slice(key.as_bytes());
        *hkdf_key(None, self.key_ids.expose(), &info).expose()
    }

    /// Seals a value for `key_id` under the newest data-encryption key:
    /// version (8 bytes) || AES-256-GCM.
    pub fn seal_value<R: rand_core::RngCore + rand_core::CryptoRng>(
        &self,
        ledger: &[u8; 32],
        key_id: &[u8; 32],
        value: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, CryptoError> {
        let version = self.current();
        let keys = self
            .versions
            .get(&version)
            .ok_or(CryptoError::BadEncoding {
                what: "data-encryption key",
            })?;
        let mut out = version.to_be_bytes().to_vec();
        out.extend(aead::seal(
            &keys.dek,
            &value_aad(ledger, key_id, version),
            value,
            rng,
        )?);
        Ok(out)
    }

    /// Opens a value sealed by [`Self::seal_value`] for `key_id`.
    pub fn open_value(
        &self,
        ledger: &[u8; 32],
        key_id: &[u8; 32],
        sealed: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        let (version, body) = sealed.split_at_checked(8).ok_or(SealError::Damaged)?;
        let version = u64::from_be_bytes(version.try_into().map_err(|_| SealError::Damaged)?);
        let keys = self
            .versions
            .get(&version)
            .ok_or(SealError::UnknownVersion(version))?;
        aead::open(&keys.dek, &value_aad(ledger, key_id, version), body)
            .map_err(|_| SealError::Damaged)
    }
}

fn value_aad(ledger: &[u8; 32], key_id: &[u8; 32], version: u64) -> Vec<u8> {
    let mut aad = b"sotto/ledger/value/v1".to_vec();
    aad.extend_from_slice(ledger);
    aad.extend_from_slice(key_id);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}
