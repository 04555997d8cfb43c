//! Validation: the verdict on every transaction of a block, as a pure
//! function of the configuration, the state before the block and the
//! block. Every business node runs it and gets the same codes (up to
//! NOT_ADDRESSED, which is VALID seen from a node a transaction does not
//! name) and the same commit hash.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use prost::Message;
use sotto_crypto::hash::FieldHasher;
use sotto_crypto::hpke::HpkeSecretKey;
use sotto_crypto::ids::TxId;

use crate::clear::{open_copy, ClearError};
use crate::code::ValidationCode;
use crate::config::{LedgerConfig, StorageMode};
use crate::group::ComputeGroup;
use crate::packet::{packet_digest, tee_verify, Packet, Version, PACKET_FORMAT};
use crate::tx::{Body, Invoke, Transaction};

/// What validation needs to know of the state before a block.
pub trait WorldView {
    /// The current version of a key (none: absent or deleted).
    fn version(&self, key: &[u8; 32]) -> Option<Version>;
    /// Whether a transaction id was already recorded.
    fn has_tx(&self, tx: &TxId) -> bool;
}

/// One write of a valid transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateWrite {
    /// The key id.
    pub key: [u8; 32],
    /// Its new version.
    pub version: Version,
    /// The sealed value; none for a delete.
    pub value: Option<Vec<u8>>,
    /// Whether this node is a target (only then does it keep the value).
    pub addressed: bool,
}

/// The outcome of validating one block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    /// One code per transaction, in block order.
    pub codes: Vec<ValidationCode>,
    /// The writes of valid transactions, in order.
    pub writes: Vec<StateWrite>,
    /// Transaction ids to record (every transaction whose client signature
    /// verified, valid or not, so that none can be replayed).
    pub tx_ids: Vec<TxId>,
    /// The compute group after the block, if a membership update changed it.
    pub group: Option<ComputeGroup>,
    /// Valid transactions for this plaintext-mode node whose clear copy
    /// did not open (their values are not kept; only an enclave that
    /// breaks its own code makes one).
    pub unopened: Vec<TxId>,
    /// The commit hash after this block.
    pub commit_hash: [u8; 32],
}

/// Validates blocks for one business node.
pub struct Validator<'a> {
    /// The ledger configuration (block 0).
    pub config: &'a LedgerConfig,
    /// The ledger id.
    pub ledger: [u8; 32],
    /// This business node's name.
    pub me: &'a str,
    /// In plaintext mode, the node's key that opens its clear copies
    /// (the values it keeps are then in clear; nothing else changes).
    pub clear_key: Option<&'a HpkeSecretKey>,
}

/// The state a block's earlier transactions left, on top of the view.
struct Pending<'v> {
    view: &'v dyn WorldView,
    versions: HashMap<[u8; 32], Option<Version>>,
    tx_ids: HashSet<TxId>,
    group: ComputeGroup,
    group_changed: bool,
}

impl Pending<'_> {
    fn version(&self, key: &[u8; 32]) -> Option<Version> {
        match self.versions.get(key) {
            Some(version) => *version,
            None => self.view.version(key),
        }
    }

    fn seen(&self, tx: &TxId) -> bool {
        self.tx_ids.contains(tx) || self.view.has_tx(tx)
    }
}

/// A transaction that passed every check.
enum Accepted {
    Invoke {
        digest: [u8; 32],
        packet: Box<Packet>,
    },
    Group(ComputeGroup),
}

impl Validator<'_> {
    /// Validates the transactions of block `number`, cut at `time_ms`.
    pub fn validate(
        &self,
        view: &dyn WorldView,
        group: &ComputeGroup,
        previous_commit: &[u8; 32],
        number: u64,
        time_ms: u64,
        transactions: &[Vec<u8>],
    ) -> Validated {
        let mut pending = Pending {
            view,
            versions: HashMap::new(),
            tx_ids: HashSet::new(),
            group: group.clone(),
            group_changed: false,
        };
        let mut commit = FieldHasher::new("sotto/ledger/commit/v1");
        commit.field(previous_commit).field(&number.to_be_bytes());
        let mut out = Validated {
            codes: Vec::with_capacity(transactions.len()),
            writes: Vec::new(),
            tx_ids: Vec::new(),
            group: None,
            unopened: Vec::new(),
            commit_hash: [0; 32],
        };
        for (index, bytes) in transactions.iter().enumerate() {
            let version = Version {
                block: number,
                tx: u32::try_from(index).unwrap_or(u32::MAX),
            };
            let code = match self.check(&mut pending, &mut out.tx_ids, time_ms, bytes) {
                Ok(Accepted::Invoke { digest, packet }) => {
                    let addressed = packet.targets.iter().any(|t| t == self.me);
                    commit.field(&digest);
                    for write in self.state_writes(*packet, version, &mut out.unopened) {
                        let delete = write.value.is_none();
                        commit.field(&write.key).field(&[u8::from(delete)]);
                        pending
                            .versions
                            .insert(write.key, (!delete).then_some(version));
                        out.writes.push(write);
                    }
                    if addressed {
                        ValidationCode::Valid
                    } else {
                        ValidationCode::NotAddressed
                    }
                }
                Ok(Accepted::Group(group)) => {
                    commit.field(&group.version.to_be_bytes());
                    pending.group = group;
                    pending.group_changed = true;
                    ValidationCode::Valid
                }
                Err(code) => code,
            };
            commit.field(&code.consensus().number().to_be_bytes());
            out.codes.push(code);
        }
        out.group = pending.group_changed.then_some(pending.group);
        out.commit_hash = commit.finish();
        out
    }

    fn check(
        &self,
        pending: &mut Pending<'_>,
        recorded: &mut Vec<TxId>,
        time_ms: u64,
        bytes: &[u8],
    ) -> Result<Accepted, ValidationCode> {
        let tx = Transaction::decode(bytes).map_err(|_| ValidationCode::BadPayload)?;
        match tx.body {
            Some(Body::Invoke(invoke)) => self.check_invoke(pending, recorded, time_ms, &invoke),
            Some(Body::Membership(update)) => pending
                .group
                .updated(self.config, &update)
                .map(Accepted::Group)
                .map_err(|_| ValidationCode::InvalidConfigTransaction),
            None => Err(ValidationCode::BadPayload),
        }
    }

    fn check_invoke(
        &self,
        pending: &mut Pending<'_>,
        recorded: &mut Vec<TxId>,
        time_ms: u64,
        invoke: &Invoke,
    ) -> Result<Accepted, ValidationCode> {
        let packet =
            Packet::decode(invoke.packet.as_slice()).map_err(|_| ValidationCode::BadPayload)?;
        let tx_id = well_formed(&packet)?;
        if packet.ledger != self.ledger {
            return Err(ValidationCode::TargetChainNotFound);
        }
        let client = self
            .config
            .client(&packet.client)
            .ok_or(ValidationCode::BadCreatorSignature)?;
        invoke
            .verify_client(&client.identity)
            .map_err(|_| ValidationCode::BadCreatorSignature)?;
        if pending.seen(&tx_id) {
            return Err(ValidationCode::DuplicateTxid);
        }
        pending.tx_ids.insert(tx_id);
        recorded.push(tx_id);
        let contract = self
            .config
            .contract(&packet.contract)
            .filter(|c| c.version == packet.contract_version)
            .ok_or(ValidationCode::UnknownContract)?;
        if !contract.callers.contains(&client.name) {
            return Err(ValidationCode::CallerNotAllowed);
        }
        if time_ms > packet.expires_ms {
            return Err(ValidationCode::Expired);
        }
        let member = pending
            .group
            .member_key(&packet.member, &packet.measurement)
            .ok_or(ValidationCode::EnclaveNotMember)?;
        tee_verify(member, &invoke.packet, &invoke.tee_signature)
            .map_err(|_| ValidationCode::BadTeeSignature)?;
        if packet
            .targets
            .iter()
            .any(|t| self.config.business_node(t).is_none())
        {
            return Err(ValidationCode::InvalidOtherReason);
        }
        if !self.copies_match_targets(&packet) {
            return Err(ValidationCode::BadPayload);
        }
        let digest = packet_digest(&invoke.packet);
        let endorsed = self.endorsers(invoke, &packet, &digest);
        if !contract
            .policy
            .satisfied_by(&|p| self.config.endorsers_of(p), endorsed)
        {
            return Err(ValidationCode::EndorsementPolicyFailure);
        }
        for read in &packet.reads {
            let key = key_id(&read.key).ok_or(ValidationCode::BadPayload)?;
            if pending.version(&key) != read.version {
                return Err(ValidationCode::MvccReadConflict);
            }
        }
        Ok(Accepted::Invoke {
            digest,
            packet: Box::new(packet),
        })
    }

    /// The writes of a valid packet as this node applies them: where it is
    /// a target, the sealed value, or in plaintext mode the value from its
    /// clear copy (none kept, and the transaction listed in `unopened`, if
    /// the copy does not open); elsewhere only the new version.
    fn state_writes(
        &self,
        packet: Packet,
        version: Version,
        unopened: &mut Vec<TxId>,
    ) -> Vec<StateWrite> {
        let addressed = packet.targets.iter().any(|t| t == self.me);
        let mut clear = match (addressed, self.clear_key) {
            (true, Some(key)) => Some(self.open_my_copy(key, &packet).unwrap_or_else(|_| {
                unopened.extend(key_tx(&packet.tx_id));
                BTreeMap::new()
            })),
            _ => None,
        };
        packet
            .writes
            .into_iter()
            .map(|write| {
                let key = key_id(&write.key).unwrap_or_default();
                if write.delete {
                    return StateWrite {
                        key,
                        version,
                        value: None,
                        addressed,
                    };
                }
                let (value, kept) = match clear.as_mut().map(|values| values.remove(&key)) {
                    Some(Some(value)) => (value, addressed),
                    Some(None) => (Vec::new(), false),
                    None => (write.value, addressed),
                };
                StateWrite {
                    key,
                    version,
                    value: Some(value),
                    addressed: kept,
                }
            })
            .collect()
    }

    /// Whether the packet carries exactly one clear copy for each of its
    /// plaintext-mode targets and none for any other node.
    fn copies_match_targets(&self, packet: &Packet) -> bool {
        let plaintext: BTreeSet<&str> = packet
            .targets
            .iter()
            .filter(|t| {
                self.config
                    .business_node(t)
                    .is_some_and(|b| b.mode == StorageMode::Plaintext)
            })
            .map(String::as_str)
            .collect();
        let copies: BTreeSet<&str> = packet
            .clear_copies
            .iter()
            .map(|c| c.target.as_str())
            .collect();
        copies.len() == packet.clear_copies.len() && copies == plaintext
    }

    /// This node's clear copy, opened; its keys must be exactly the
    /// packet's value-setting writes.
    fn open_my_copy(
        &self,
        key: &HpkeSecretKey,
        packet: &Packet,
    ) -> Result<BTreeMap<[u8; 32], Vec<u8>>, ClearError> {
        let copy = packet
            .clear_copies
            .iter()
            .find(|c| c.target == self.me)
            .ok_or(ClearError::CopyMisplaced)?;
        let values = open_copy(key, &self.ledger, &packet.tx_id, self.me, &copy.sealed)?;
        let written: BTreeSet<&[u8]> = packet
            .writes
            .iter()
            .filter(|w| !w.delete)
            .map(|w| w.key.as_slice())
            .collect();
        let copied: BTreeSet<&[u8]> = values.keys().map(<[u8; 32]>::as_slice).collect();
        if written != copied {
            return Err(ClearError::CopyKeys);
        }
        Ok(values)
    }

    /// The set of endorsers whose endorsement is over this packet, names
    /// exactly its targets and verifies.
    fn endorsers(&self, invoke: &Invoke, packet: &Packet, digest: &[u8; 32]) -> u64 {
        let mut set = 0u64;
        for endorsement in &invoke.endorsements {
            let Some((index, endorser)) = self.config.endorser(&endorsement.endorser) else {
                continue;
            };
            if endorsement.targets == packet.targets
                && endorsement.verify(&endorser.identity, digest).is_ok()
            {
                set |= 1 << index;
            }
        }
        set
    }
}

/// Checks the packet's shape; returns its transaction id.
fn well_formed(packet: &Packet) -> Result<TxId, ValidationCode> {
    let tx_id = <[u8; 16]>::try_from(packet.tx_id.as_slice())
        .map(TxId::from_bytes)
        .map_err(|_| ValidationCode::BadPayload)?;
    if packet.format != PACKET_FORMAT || packet.targets.is_empty() {
        return Err(ValidationCode::BadPayload);
    }
    let mut written = HashSet::new();
    for write in &packet.writes {
        let key = key_id(&write.key).ok_or(ValidationCode::BadPayload)?;
        if !written.insert(key) || (write.delete && !write.value.is_empty()) {
            return Err(ValidationCode::BadPayload);
        }
    }
    let mut targets = HashSet::new();
    if !packet.targets.iter().all(|t| targets.insert(t)) {
        return Err(ValidationCode::BadPayload);
    }
    Ok(tx_id)
}

fn key_id(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

fn key_tx(bytes: &[u8]) -> Option<TxId> {
    <[u8; 16]>::try_from(bytes).ok().map(TxId::from_bytes)
}
