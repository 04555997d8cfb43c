//! Key pairs of the root KMS: typed key ids (`owner/purpose`), versions with
//! a status, and the in-memory key ring the service answers from. Private
//! halves never leave this module except into the KMS's own database and
//! its password-sealed bundle.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sotto_crypto::hpke::{HpkePublicKey, HpkeSecretKey};
use sotto_node::NodeName;

use crate::KmsError;

/// Identifies a key pair: the participant that owns it and its purpose.
/// Written `owner/purpose`, for example `bank-a/escrow`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId {
    owner: NodeName,
    purpose: String,
}

impl KeyId {
    /// A key id from an owner and a purpose (1 to 64 of `a-z 0-9 - _ .`).
    pub fn new(owner: NodeName, purpose: &str) -> Result<Self, KmsError> {
        let ok = !purpose.is_empty()
            && purpose.len() <= 64
            && purpose.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            });
        if !ok {
            return Err(KmsError::BadKeyId {
                key_id: format!("{owner}/{purpose}"),
                reason: "the purpose must be 1 to 64 characters from a-z, 0-9, '-', '_', '.'",
            });
        }
        Ok(Self {
            owner,
            purpose: purpose.to_owned(),
        })
    }

    /// The participant that owns the key pair.
    pub fn owner(&self) -> &NodeName {
        &self.owner
    }

    /// What the key pair is for.
    pub fn purpose(&self) -> &str {
        &self.purpose
    }
}

impl FromStr for KeyId {
    type Err = KmsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (owner, purpose) = s.split_once('/').ok_or_else(|| KmsError::BadKeyId {
            key_id: s.to_owned(),
            reason: "expected OWNER/PURPOSE, for example bank-a/escrow",
        })?;
        let owner = owner.parse().map_err(|_| KmsError::BadKeyId {
            key_id: s.to_owned(),
            reason: "the owner is not a valid node name",
        })?;
        Self::new(owner, purpose)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.purpose)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// Whether a key pair version may still decrypt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyStatus {
    /// Encrypts (if newest) and decrypts.
    Active,
    /// Decrypts nothing any more.
    Retired,
}

/// What anyone may know about a key pair version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInfo {
    /// `owner/purpose`.
    pub key_id: String,
    /// Version, from 1.
    pub version: u32,
    /// The HPKE public key, hex.
    pub public_key: String,
    /// Active or retired.
    pub status: KeyStatus,
    /// Creation time, Unix seconds.
    pub created: u64,
}

/// A key pair version as the KMS stores it: its public description and its
/// private key (hex inside the KMS's database and sealed bundle only).
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    /// The public description.
    pub info: KeyInfo,
    /// The HPKE private key, hex.
    pub private_key: zeroize::Zeroizing<String>,
}

impl fmt::Debug for KeyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRecord")
            .field("info", &self.info)
            .field("private_key", &"redacted")
            .finish()
    }
}

struct KeyPair {
    info: KeyInfo,
    secret: HpkeSecretKey,
}

/// Every key pair version the KMS holds, by key id and version.
#[derive(Default)]
pub struct KeyRing {
    keys: BTreeMap<(KeyId, u32), KeyPair>,
}

impl KeyRing {
    /// A key ring from stored records.
    pub fn from_records(records: Vec<KeyRecord>) -> Result<Self, KmsError> {
        let mut ring = Self::default();
        for record in records {
            let id: KeyId = record.info.key_id.parse()?;
            let bytes = zeroize::Zeroizing::new(
                hex::decode(record.private_key.as_bytes()).map_err(|_| {
                    KmsError::Corrupt(format!(
                        "private key of {id} v{} is not hex",
                        record.info.version
                    ))
                })?,
            );
            let secret = HpkeSecretKey::from_bytes(&bytes)
                .map_err(|e| KmsError::Corrupt(format!("private key of {id}: {e}")))?;
            ring.keys.insert(
                (id, record.info.version),
                KeyPair {
                    info: record.info,
                    secret,
                },
            );
        }
        Ok(ring)
    }

    /// Every version as stored records.
    pub fn records(&self) -> Vec<KeyRecord> {
        self.keys.values().map(record_of).collect()
    }

    /// Every version's public description.
    pub fn infos(&self) -> Vec<KeyInfo> {
        self.keys.values().map(|k| k.info.clone()).collect()
    }

    fn newest_version(&self, id: &KeyId) -> Option<u32> {
        self.keys
            .range((id.clone(), 0)..=(id.clone(), u32::MAX))
            .next_back()
            .map(|((_, v), _)| *v)
    }

    /// Prepares version 1 of a new key pair, or the next version of an
    /// existing one when `rotate` is set. Nothing changes until the record
    /// is persisted and [`KeyRing::apply`]d.
    pub fn prepare_create<R: RngCore + CryptoRng>(
        &self,
        id: &KeyId,
        rotate: bool,
        now: u64,
        rng: &mut R,
    ) -> Result<KeyRecord, KmsError> {
        let version = match (self.newest_version(id), rotate) {
            (None, false) => 1,
            (Some(_), false) => {
                return Err(KmsError::KeyExists {
                    key_id: id.to_string(),
                })
            }
            (None, true) => {
                return Err(KmsError::UnknownKey {
                    key_id: id.to_string(),
                    version: None,
                })
            }
            (Some(v), true) => v
                .checked_add(1)
                .ok_or(KmsError::Corrupt("version overflow".into()))?,
        };
        let (secret, _) = HpkeSecretKey::generate(rng);
        Ok(record_of(&KeyPair {
            info: KeyInfo {
                key_id: id.to_string(),
                version,
                public_key: hex::encode(secret.public().to_bytes()),
                status: KeyStatus::Active,
                created: now,
            },
            secret,
        }))
    }

    /// Prepares the retirement of one version (it decrypts nothing once
    /// applied).
    pub fn prepare_retire(&self, id: &KeyId, version: u32) -> Result<KeyRecord, KmsError> {
        let pair = self
            .keys
            .get(&(id.clone(), version))
            .ok_or_else(|| KmsError::UnknownKey {
                key_id: id.to_string(),
                version: Some(version),
            })?;
        let mut record = record_of(pair);
        record.info.status = KeyStatus::Retired;
        Ok(record)
    }

    /// Adds or replaces a key pair version from its record.
    pub fn apply(&mut self, record: KeyRecord) -> Result<(), KmsError> {
        let mut single = Self::from_records(vec![record])?;
        self.keys.append(&mut single.keys);
        Ok(())
    }

    /// The newest active version's description, or the given version's.
    pub fn info(&self, id: &KeyId, version: Option<u32>) -> Result<&KeyInfo, KmsError> {
        let unknown = || KmsError::UnknownKey {
            key_id: id.to_string(),
            version,
        };
        match version {
            Some(v) => self
                .keys
                .get(&(id.clone(), v))
                .map(|k| &k.info)
                .ok_or_else(unknown),
            None => self
                .keys
                .range((id.clone(), 0)..=(id.clone(), u32::MAX))
                .rev()
                .map(|(_, k)| &k.info)
                .find(|info| info.status == KeyStatus::Active)
                .ok_or_else(unknown),
        }
    }

    /// The private key of an active version, for decryption.
    pub fn secret_for_decryption(
        &self,
        id: &KeyId,
        version: u32,
    ) -> Result<&HpkeSecretKey, KmsError> {
        let pair = self
            .keys
            .get(&(id.clone(), version))
            .ok_or_else(|| KmsError::UnknownKey {
                key_id: id.to_string(),
                version: Some(version),
            })?;
        if pair.info.status == KeyStatus::Retired {
            return Err(KmsError::RetiredKey {
                key_id: id.to_string(),
                version,
            });
        }
        Ok(&pair.secret)
    }

    /// The newest active version's public key, for encryption.
    pub fn public_for_encryption(&self, id: &KeyId) -> Result<(u32, HpkePublicKey), KmsError> {
        let info = self.info(id, None)?;
        let pair = self
            .keys
            .get(&(id.clone(), info.version))
            .ok_or_else(|| KmsError::Corrupt(format!("key {id} v{} vanished", info.version)))?;
        Ok((info.version, pair.secret.public()))
    }
}

fn record_of(pair: &KeyPair) -> KeyRecord {
    KeyRecord {
        info: pair.info.clone(),
        private_key: zeroize::Zeroizing::new(hex::encode(pair.secret.to_bytes().as_slice())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn id(s: &str) -> KeyId {
        s.parse().expect("key id")
    }

    #[test]
    fn key_ids_parse_and_refuse_bad_forms() {
        assert_eq!(id("bank-a/escrow").to_string(), "bank-a/escrow");
        assert_eq!(id("bank-a/escrow").owner().as_str(), "bank-a");
        for bad in [
            "bank-a",
            "Bank/escrow",
            "bank-a/",
            "bank-a/Esc",
            "/x",
            "a/b/c",
        ] {
            assert!(bad.parse::<KeyId>().is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn versions_rotate_retire_and_survive_a_record_round_trip() {
        let mut ring = KeyRing::default();
        let k = id("bank-a/escrow");
        let v1 = ring.prepare_create(&k, false, 1, &mut OsRng).expect("v1");
        assert!(ring.infos().is_empty(), "nothing changes before apply");
        ring.apply(v1).expect("apply v1");
        assert!(matches!(
            ring.prepare_create(&k, false, 1, &mut OsRng),
            Err(KmsError::KeyExists { .. })
        ));
        assert!(matches!(
            ring.prepare_create(&id("bank-b/escrow"), true, 1, &mut OsRng),
            Err(KmsError::UnknownKey { .. })
        ));
        let v2 = ring.prepare_create(&k, true, 2, &mut OsRng).expect("v2");
        ring.apply(v2).expect("apply v2");
        assert_eq!(ring.public_for_encryption(&k).expect("newest").0, 2);
        let retired = ring.prepare_retire(&k, 2).expect("retire");
        ring.apply(retired).expect("apply retire");
        assert_eq!(ring.public_for_encryption(&k).expect("newest active").0, 1);
        assert!(matches!(
            ring.secret_for_decryption(&k, 2),
            Err(KmsError::RetiredKey { version: 2, .. })
        ));
        assert!(ring.secret_for_decryption(&k, 1).is_ok());
        let back = KeyRing::from_records(ring.records()).expect("records");
        assert_eq!(back.infos(), ring.infos());
        assert!(
            !format!("{:?}", ring.records()[0]).contains(ring.records()[0].private_key.as_str())
        );
    }
}
