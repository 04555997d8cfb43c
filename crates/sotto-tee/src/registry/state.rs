//! What the center keeps: the group's measurement, every member's record,
//! and the group key versions. Serialized as JSON by the driver, with the
//! group keys encrypted at rest under a key only the center's identity can
//! derive.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sotto_crypto::aead;
use sotto_crypto::hash::FieldHasher;
use sotto_crypto::identity::IdentityKey;
use sotto_crypto::secret::SecretBytes;

/// A member's standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberStatus {
    /// Admitted and current.
    Active,
    /// Revoked by the operator; never admitted again.
    Revoked,
    /// Left the group.
    Left,
    /// Suspended because the center's current policy no longer accepts its
    /// evidence; it may register again with evidence the policy accepts.
    Suspended,
}

/// One member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Certified node name.
    pub name: String,
    /// Identity key (hex).
    pub identity: String,
    /// HPKE key (hex).
    pub hpke: String,
    /// Platform of its evidence.
    pub platform: String,
    /// Whether that platform is hardware-protected.
    pub hardware_protected: bool,
    /// Its measurement (hex).
    pub measurement: String,
    /// The TCB status of its evidence (absent in records made before it
    /// was kept).
    #[serde(default)]
    pub tcb_status: Option<String>,
    /// Its standing.
    pub status: MemberStatus,
    /// When the standing last changed (Unix seconds).
    pub since: u64,
}

/// One group key version (secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupKeyRecord {
    /// Version, from 1.
    pub version: u64,
    /// The key.
    pub key: SecretBytes<32>,
    /// When it was made (Unix seconds).
    pub created: u64,
}

/// The center's whole state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegistryState {
    /// The group's measurement, set by the first admitted member.
    pub measurement: Option<String>,
    /// Members by name.
    pub members: BTreeMap<String, MemberRecord>,
    /// Group key versions, oldest first.
    pub group_keys: Vec<GroupKeyRecord>,
    /// Increases with every membership change.
    pub membership_version: u64,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    measurement: Option<String>,
    members: BTreeMap<String, MemberRecord>,
    /// (version, created, sealed key hex)
    group_keys: Vec<(u64, u64, String)>,
    membership_version: u64,
}

fn at_rest_key(center: &IdentityKey) -> SecretBytes<32> {
    let mut h = FieldHasher::new("sotto/tee/registry-at-rest/v1");
    h.field(center.to_seed().as_slice());
    SecretBytes::new(h.finish())
}

impl RegistryState {
    /// Serializes the state, sealing every group key under the center's key.
    pub fn to_bytes(&self, center: &IdentityKey) -> Result<Vec<u8>, String> {
        let key = at_rest_key(center);
        let group_keys = self
            .group_keys
            .iter()
            .map(|k| {
                aead::seal(
                    &key,
                    &k.version.to_be_bytes(),
                    k.key.expose(),
                    &mut rand_core::OsRng,
                )
                .map(|sealed| (k.version, k.created, hex::encode(sealed)))
                .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        serde_json::to_vec(&Stored {
            measurement: self.measurement.clone(),
            members: self.members.clone(),
            group_keys,
            membership_version: self.membership_version,
        })
        .map_err(|e| e.to_string())
    }

    /// Restores what [`RegistryState::to_bytes`] wrote.
    pub fn from_bytes(bytes: &[u8], center: &IdentityKey) -> Result<Self, String> {
        let stored: Stored = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let key = at_rest_key(center);
        let group_keys = stored
            .group_keys
            .into_iter()
            .map(|(version, created, sealed)| {
                let sealed = hex::decode(sealed).map_err(|e| e.to_string())?;
                let plain = aead::open(&key, &version.to_be_bytes(), &sealed).map_err(|_| {
                    format!("group key version {version} does not open under this center's key")
                })?;
                let key = SecretBytes::<32>::from_slice("group key", &plain)
                    .map_err(|e| e.to_string())?;
                Ok(GroupKeyRecord {
                    version,
                    key,
                    created,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self {
            measurement: stored.measurement,
            members: stored.members,
            group_keys,
            membership_version: stored.membership_version,
        })
    }
}
