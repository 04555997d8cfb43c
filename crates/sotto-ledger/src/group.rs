//! The compute enclave group as the ledger knows it: the membership the
//! registration center signed, carried on the chain by membership-update
//! transactions so that every business node judges a packet's signer
//! against the same list at the same height.

use std::collections::BTreeMap;

use sotto_crypto::identity::IdentityPublic;
use sotto_tee::registry::{Membership, MEMBERSHIP_DOMAIN};

use crate::config::LedgerConfig;
use crate::tx::MembershipUpdate;

/// The compute group at some height: empty until the first update.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ComputeGroup {
    /// The center's membership version (0: no update yet).
    pub version: u64,
    /// The group's measurement.
    pub measurement: Option<Vec<u8>>,
    /// Active members and their identity keys.
    pub members: BTreeMap<String, IdentityPublic>,
}

impl ComputeGroup {
    /// The group an update makes, if the center signed it, it advances the
    /// version, and its measurement is the one the configuration pins.
    pub fn updated(
        &self,
        config: &LedgerConfig,
        update: &MembershipUpdate,
    ) -> Result<Self, String> {
        config
            .center
            .identity
            .verify(
                MEMBERSHIP_DOMAIN,
                &update.membership,
                &update.signature,
                "membership",
            )
            .map_err(|_| "not signed by the ledger's registration center".to_owned())?;
        let membership: Membership = serde_json::from_slice(&update.membership)
            .map_err(|e| format!("membership does not decode: {e}"))?;
        if membership.version <= self.version {
            return Err(format!(
                "membership version {} does not advance version {} (a replayed update)",
                membership.version, self.version
            ));
        }
        Self::from_membership(config, &membership)
    }

    /// The group a membership describes (its center signature already
    /// checked by the caller).
    pub fn from_membership(config: &LedgerConfig, membership: &Membership) -> Result<Self, String> {
        let measurement = match &membership.measurement {
            Some(hex_text) => {
                Some(hex::decode(hex_text).map_err(|e| format!("measurement is not hex: {e}"))?)
            }
            None => None,
        };
        if config.measurement.is_some()
            && measurement.is_some()
            && measurement != config.measurement
        {
            return Err("the group's measurement is not the one block 0 pins".to_owned());
        }
        let mut members = BTreeMap::new();
        for (name, identity, _hpke) in &membership.members {
            let key = hex::decode(identity)
                .ok()
                .and_then(|bytes| IdentityPublic::from_bytes(&bytes).ok())
                .ok_or_else(|| format!("member {name} has no valid identity key"))?;
            members.insert(name.clone(), key);
        }
        Ok(Self {
            version: membership.version,
            measurement,
            members,
        })
    }

    /// The identity key of `member` if it is an active member running the
    /// group's measurement.
    pub fn member_key(&self, member: &str, measurement: &[u8]) -> Option<&IdentityPublic> {
        let same_code = self.measurement.as_deref() == Some(measurement);
        self.members.get(member).filter(|_| same_code)
    }
}
