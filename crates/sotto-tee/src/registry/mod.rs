//! The registration center's engine (sans-IO): challenges, admission of a
//! node whose evidence binds its identity and HPKE keys to the center's
//! fresh nonce and shows the group's identical code, membership signed by
//! the center, revocation and departures, and versioned group keys sealed
//! to each active member with HPKE. The driver (`online`) persists
//! [`RegistryState`] after every change and moves messages.

pub mod mutual;
mod state;

pub use state::{GroupKeyRecord, MemberRecord, MemberStatus, RegistryState};

use std::collections::HashMap;

use rand_core::{CryptoRng, RngCore};
use serde::Serialize;
use sha2::{Digest, Sha512};
use sotto_crypto::hpke::HpkePublicKey;
use sotto_crypto::identity::{IdentityKey, IdentityPublic};
use sotto_crypto::secret::SecretBytes;

use crate::evidence::Verified;
use crate::policy::Policy;

/// How long a challenge nonce stays usable, in seconds.
pub const NONCE_LIFETIME: u64 = 120;
/// Domain of the center's membership signature.
pub const MEMBERSHIP_DOMAIN: &str = "sotto/tee/membership/v1";
/// HPKE info of a sealed group key.
pub const GROUP_KEY_INFO: &[u8] = b"sotto/tee/group-key/v1";

/// Why the center refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// No challenge was issued to this identity (or it was already used).
    #[error("no outstanding challenge for {node}; ask for a fresh nonce and register with it")]
    NoChallenge {
        /// The node.
        node: String,
    },
    /// The nonce is not the one issued, or it expired (a replayed or stale
    /// registration).
    #[error("the nonce from {node} is stale or not the one issued; evidence must bind a fresh challenge")]
    StaleNonce {
        /// The node.
        node: String,
    },
    /// The evidence does not verify.
    #[error("evidence from {node} does not verify: {reason}")]
    Evidence {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// The evidence does not bind this node's keys and the nonce.
    #[error("evidence from {node} does not bind its identity key, HPKE key and the center's nonce (impersonation or replay)")]
    NotBound {
        /// The node.
        node: String,
    },
    /// The policy refused the evidence.
    #[error("the policy refuses {node}: {}", reasons.join("; "))]
    Policy {
        /// The node.
        node: String,
        /// Every reason.
        reasons: Vec<String>,
    },
    /// The node runs other code than the group.
    #[error(
        "{node} runs different code: measurement {found}, but the group's members run {expected}"
    )]
    DifferentCode {
        /// The node.
        node: String,
        /// The group's measurement.
        expected: String,
        /// The node's.
        found: String,
    },
    /// The name belongs to another identity.
    #[error("{node} is already registered with another identity key")]
    NameTaken {
        /// The name.
        node: String,
    },
    /// A revoked member.
    #[error("{node} is revoked and cannot register or get group keys again")]
    Revoked {
        /// The node.
        node: String,
    },
    /// Suspended by a policy that no longer accepts its evidence.
    #[error("{node} is suspended: the center's policy no longer accepts its evidence; register again with evidence the policy accepts")]
    Suspended {
        /// The node.
        node: String,
    },
    /// Not an active member.
    #[error("{node} is not an active member of the group")]
    NotMember {
        /// The node.
        node: String,
    },
    /// A malformed field.
    #[error("{field}: {reason}")]
    Malformed {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// A registration request, once the driver has verified the evidence.
pub struct Registration {
    /// The node's certified name (from its mutual-TLS certificate).
    pub name: String,
    /// Its identity key (from the certificate).
    pub identity: IdentityPublic,
    /// The HPKE key group keys are sealed to.
    pub hpke: HpkePublicKey,
    /// The nonce it claims to answer.
    pub nonce: [u8; 32],
    /// Its verified evidence (or why it did not verify).
    pub evidence: Result<Verified, String>,
}

/// The 64 bytes a node's evidence must bind: SHA-512 over the domain, the
/// nonce, the node's name, identity key and HPKE key, each length-framed.
pub fn registration_report_data(
    nonce: &[u8; 32],
    name: &str,
    identity: &IdentityPublic,
    hpke: &HpkePublicKey,
) -> [u8; 64] {
    let mut h = Sha512::new();
    for field in [
        b"sotto/tee/registration/v1".as_slice(),
        nonce,
        name.as_bytes(),
        &identity.to_bytes(),
        &hpke.to_bytes(),
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field);
    }
    h.finalize().into()
}

/// What the policy says of a member's recorded evidence: the reasons it
/// would be refused today (empty when it is still accepted).
fn recorded_verdict(member: &MemberRecord, policy: &Policy, dev: bool) -> Vec<String> {
    let platform = member
        .platform
        .split(" (")
        .next()
        .and_then(|p| p.parse::<crate::evidence::Platform>().ok());
    let (Some(platform), Ok(measurement)) = (platform, hex::decode(&member.measurement)) else {
        return vec![format!(
            "its recorded evidence (platform {:?}) cannot be read",
            member.platform
        )];
    };
    let tcb_status = member
        .tcb_status
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(policy.min_tcb);
    let verified = Verified {
        platform,
        measurement,
        report_data: Vec::new(),
        tcb_status,
        advisories: Vec::new(),
        hardware_protected: member.hardware_protected,
    };
    policy.decide(&verified, dev).reasons
}

/// The membership list as the center signs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Membership {
    /// Increases with every change.
    pub version: u64,
    /// The group's measurement (hex).
    pub measurement: Option<String>,
    /// Active members: name, identity key (hex), HPKE key (hex).
    pub members: Vec<(String, String, String)>,
    /// The current group key version.
    pub group_key_version: u64,
}

impl Membership {
    /// The signed bytes.
    pub fn signed_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// A group key sealed to one member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedGroupKey {
    /// Its version.
    pub version: u64,
    /// HPKE-sealed key; the associated data is [`group_key_aad`].
    pub sealed: Vec<u8>,
}

/// Associated data of a sealed group key: version and member name.
pub fn group_key_aad(version: u64, member: &str) -> Vec<u8> {
    let mut out = version.to_be_bytes().to_vec();
    out.extend_from_slice(member.as_bytes());
    out
}

/// The center's engine.
pub struct Registry {
    state: RegistryState,
    policy: Policy,
    dev: bool,
    key: IdentityKey,
    nonces: HashMap<[u8; 32], ([u8; 32], u64)>,
}

impl Registry {
    /// A center with `state` (loaded by the driver), deciding with `policy`.
    pub fn new(state: RegistryState, policy: Policy, dev: bool, key: IdentityKey) -> Self {
        Self {
            state,
            policy,
            dev,
            key,
            nonces: HashMap::new(),
        }
    }

    /// The state to persist.
    pub fn state(&self) -> &RegistryState {
        &self.state
    }

    /// Issues a fresh nonce to `identity`, valid until `now + NONCE_LIFETIME`.
    pub fn challenge<R: RngCore + CryptoRng>(
        &mut self,
        identity: &IdentityPublic,
        now: u64,
        rng: &mut R,
    ) -> [u8; 32] {
        let mut nonce = [0u8; 32];
        rng.fill_bytes(&mut nonce);
        self.nonces
            .insert(identity.to_bytes(), (nonce, now + NONCE_LIFETIME));
        nonce
    }

    /// Admits a node, or says exactly why not. A nonce is used once,
    /// whatever the outcome.
    pub fn register<R: RngCore + CryptoRng>(
        &mut self,
        r: Registration,
        now: u64,
        rng: &mut R,
    ) -> Result<Membership, RegistryError> {
        let node = r.name.clone();
        let (nonce, expires) = self
            .nonces
            .remove(&r.identity.to_bytes())
            .ok_or_else(|| RegistryError::NoChallenge { node: node.clone() })?;
        if nonce != r.nonce || now > expires {
            return Err(RegistryError::StaleNonce { node });
        }
        let verified = r.evidence.map_err(|reason| RegistryError::Evidence {
            node: node.clone(),
            reason,
        })?;
        let expected = registration_report_data(&nonce, &r.name, &r.identity, &r.hpke);
        if verified.report_data != expected {
            return Err(RegistryError::NotBound { node });
        }
        let decision = self.policy.decide(&verified, self.dev);
        if !decision.accepted {
            return Err(RegistryError::Policy {
                node,
                reasons: decision.reasons,
            });
        }
        let measurement = hex::encode(&verified.measurement);
        if let Some(expected) = &self.state.measurement {
            if *expected != measurement {
                return Err(RegistryError::DifferentCode {
                    node,
                    expected: expected.clone(),
                    found: measurement,
                });
            }
        }
        let identity = r.identity.to_string();
        match self.state.members.get(&r.name) {
            Some(m) if m.status == MemberStatus::Revoked => {
                return Err(RegistryError::Revoked { node })
            }
            Some(m) if m.identity != identity => return Err(RegistryError::NameTaken { node }),
            _ => {}
        }
        self.state.measurement = Some(measurement.clone());
        self.state.members.insert(
            r.name.clone(),
            MemberRecord {
                name: r.name,
                identity,
                hpke: hex::encode(r.hpke.to_bytes()),
                platform: verified.platform.to_string(),
                hardware_protected: verified.hardware_protected,
                measurement,
                tcb_status: Some(verified.tcb_status.to_string()),
                status: MemberStatus::Active,
                since: now,
            },
        );
        if self.state.group_keys.is_empty() {
            self.rotate(now, rng);
        }
        self.state.membership_version += 1;
        Ok(self.membership())
    }

    /// Checks every active member's recorded evidence (platform,
    /// measurement, TCB status) against the current policy, as at start-up
    /// with a changed policy. Members it no longer accepts are suspended and
    /// the group key rotates, so they never see a newer version. Returns
    /// each suspended member with the policy's reasons.
    pub fn recheck_members<R: RngCore + CryptoRng>(
        &mut self,
        now: u64,
        rng: &mut R,
    ) -> Vec<(String, Vec<String>)> {
        let mut suspended = Vec::new();
        for member in self.state.members.values_mut() {
            if member.status != MemberStatus::Active {
                continue;
            }
            let reasons = recorded_verdict(member, &self.policy, self.dev);
            if !reasons.is_empty() {
                member.status = MemberStatus::Suspended;
                member.since = now;
                suspended.push((member.name.clone(), reasons));
            }
        }
        if !suspended.is_empty() {
            if !self
                .state
                .members
                .values()
                .any(|m| m.status == MemberStatus::Active)
            {
                self.state.measurement = None;
            }
            self.rotate(now, rng);
            self.state.membership_version += 1;
        }
        suspended
    }

    /// Revokes a member and rotates the group key, so it never sees a newer
    /// version.
    pub fn revoke<R: RngCore + CryptoRng>(
        &mut self,
        name: &str,
        now: u64,
        rng: &mut R,
    ) -> Result<Membership, RegistryError> {
        self.end_membership(name, MemberStatus::Revoked, now, rng)
    }

    /// A member leaves; the group key rotates.
    pub fn leave<R: RngCore + CryptoRng>(
        &mut self,
        identity: &IdentityPublic,
        now: u64,
        rng: &mut R,
    ) -> Result<Membership, RegistryError> {
        let name = self.active_name(identity)?;
        self.end_membership(&name, MemberStatus::Left, now, rng)
    }

    fn end_membership<R: RngCore + CryptoRng>(
        &mut self,
        name: &str,
        status: MemberStatus,
        now: u64,
        rng: &mut R,
    ) -> Result<Membership, RegistryError> {
        let member = self
            .state
            .members
            .get_mut(name)
            .filter(|m| m.status == MemberStatus::Active)
            .ok_or_else(|| RegistryError::NotMember {
                node: name.to_owned(),
            })?;
        member.status = status;
        member.since = now;
        self.rotate(now, rng);
        self.state.membership_version += 1;
        Ok(self.membership())
    }

    /// Starts a new group key version.
    pub fn rotate<R: RngCore + CryptoRng>(&mut self, now: u64, rng: &mut R) -> u64 {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        let version = self.state.group_keys.last().map_or(1, |k| k.version + 1);
        self.state.group_keys.push(GroupKeyRecord {
            version,
            key: SecretBytes::new(key),
            created: now,
        });
        version
    }

    fn active_name(&self, identity: &IdentityPublic) -> Result<String, RegistryError> {
        let id = identity.to_string();
        match self.state.members.values().find(|m| m.identity == id) {
            Some(m) if m.status == MemberStatus::Active => Ok(m.name.clone()),
            Some(m) if m.status == MemberStatus::Revoked => Err(RegistryError::Revoked {
                node: m.name.clone(),
            }),
            Some(m) if m.status == MemberStatus::Suspended => Err(RegistryError::Suspended {
                node: m.name.clone(),
            }),
            _ => Err(RegistryError::NotMember { node: id }),
        }
    }

    /// Group key `version` (`None`: the current one) sealed to the active
    /// member `identity`. Active members may have every version: data
    /// sealed under an older key (a ledger's stored values) stays readable
    /// to the group, while a revoked member gets none.
    pub fn group_key_for<R: RngCore + CryptoRng>(
        &self,
        identity: &IdentityPublic,
        version: Option<u64>,
        rng: &mut R,
    ) -> Result<SealedGroupKey, RegistryError> {
        let name = self.active_name(identity)?;
        let member = &self.state.members[&name];
        let hpke = hex::decode(&member.hpke)
            .ok()
            .and_then(|b| HpkePublicKey::from_bytes(&b).ok())
            .ok_or(RegistryError::Malformed {
                field: "member HPKE key",
                reason: "stored key does not decode".into(),
            })?;
        let current = match version {
            None => self.state.group_keys.last(),
            Some(v) => self.state.group_keys.iter().find(|k| k.version == v),
        }
        .ok_or(RegistryError::Malformed {
            field: "group key",
            reason: match version {
                None => "no group key yet".into(),
                Some(v) => format!("there is no group key version {v}"),
            },
        })?;
        let sealed = hpke
            .seal(
                GROUP_KEY_INFO,
                &group_key_aad(current.version, &name),
                current.key.expose(),
                rng,
            )
            .map_err(|e| RegistryError::Malformed {
                field: "group key",
                reason: e.to_string(),
            })?;
        Ok(SealedGroupKey {
            version: current.version,
            sealed,
        })
    }

    /// The active membership.
    pub fn membership(&self) -> Membership {
        Membership {
            version: self.state.membership_version,
            measurement: self.state.measurement.clone(),
            members: self
                .state
                .members
                .values()
                .filter(|m| m.status == MemberStatus::Active)
                .map(|m| (m.name.clone(), m.identity.clone(), m.hpke.clone()))
                .collect(),
            group_key_version: self.state.group_keys.last().map_or(0, |k| k.version),
        }
    }

    /// The membership signed by the center.
    pub fn signed_membership(&self) -> (Membership, [u8; 64]) {
        let membership = self.membership();
        let signature = self.key.sign(MEMBERSHIP_DOMAIN, &membership.signed_bytes());
        (membership, signature)
    }
}
