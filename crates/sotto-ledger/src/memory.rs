//! A business node's ledger held in memory: the reference that the
//! persistent node must match, and the engine the property tests run. It
//! checks each block against the chain, validates it, and applies the
//! outcome.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use sotto_crypto::hpke::HpkeSecretKey;
use sotto_crypto::identity::IdentityKey;
use sotto_crypto::ids::TxId;

use crate::block::{Block, BlockError, ChainTip};
use crate::code::ValidationCode;
use crate::compute::{Held, Loaded};
use crate::config::{LedgerConfig, StorageMode};
use crate::group::ComputeGroup;
use crate::packet::Version;
use crate::validate::{Validated, Validator, WorldView};

/// A block checked and validated, not yet applied.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The tip it makes.
    pub tip: ChainTip,
    /// Its validation outcome.
    pub validated: Validated,
}

/// One business node's chain and world state, in memory.
#[derive(Clone, Debug)]
pub struct MemoryLedger {
    config: LedgerConfig,
    me: String,
    tip: ChainTip,
    versions: BTreeMap<[u8; 32], Version>,
    values: BTreeMap<[u8; 32], Vec<u8>>,
    tx_ids: HashSet<TxId>,
    group: ComputeGroup,
    commit: [u8; 32],
    codes: Vec<Vec<ValidationCode>>,
    clear_key: Option<Arc<HpkeSecretKey>>,
}

impl WorldView for MemoryLedger {
    fn version(&self, key: &[u8; 32]) -> Option<Version> {
        self.versions.get(key).copied()
    }

    fn has_tx(&self, tx: &TxId) -> bool {
        self.tx_ids.contains(tx)
    }
}

impl MemoryLedger {
    /// Starts business node `me` from block 0. A plaintext-mode node
    /// needs its identity key (it opens the clear copies sealed to it); a
    /// ciphertext-mode node uses none.
    pub fn open(
        genesis: &Block,
        me: &str,
        identity: Option<&IdentityKey>,
    ) -> Result<Self, BlockError> {
        let (config, tip) = genesis.open_genesis("block 0")?;
        let refuse = |reason: String| BlockError::BadGenesis { reason };
        let node = config
            .business_node(me)
            .ok_or_else(|| refuse(format!("{me} is not a business node of this ledger")))?;
        let clear_key = match (node.mode, identity) {
            (StorageMode::Ciphertext, _) => None,
            (StorageMode::Plaintext, None) => {
                return Err(refuse(format!(
                    "{me} keeps its records in clear and needs its identity key to open them"
                )))
            }
            (StorageMode::Plaintext, Some(key)) if key.public() != node.member.identity => {
                return Err(refuse(format!(
                    "the identity key given is not {me}'s in block 0"
                )))
            }
            (StorageMode::Plaintext, Some(key)) => Some(Arc::new(
                key.to_hpke()
                    .map_err(|e| refuse(format!("{me}'s identity key: {e}")))?,
            )),
        };
        Ok(Self {
            clear_key,
            commit: tip.ledger,
            config,
            me: me.to_owned(),
            tip,
            versions: BTreeMap::new(),
            values: BTreeMap::new(),
            tx_ids: HashSet::new(),
            group: ComputeGroup::default(),
            codes: vec![Vec::new()],
        })
    }

    /// Checks, validates and applies the next block; returns its codes.
    pub fn append(&mut self, block: &Block) -> Result<&[ValidationCode], BlockError> {
        let prepared = self.prepare(block)?;
        self.apply(prepared);
        Ok(self.codes.last().map_or(&[], Vec::as_slice))
    }

    /// Checks and validates the next block without applying it.
    pub fn prepare(&self, block: &Block) -> Result<Prepared, BlockError> {
        let tip = self.tip.check_next(&self.config, block)?;
        let validated = Validator {
            config: &self.config,
            ledger: tip.ledger,
            me: &self.me,
            clear_key: self.clear_key.as_deref(),
        }
        .validate(
            self,
            &self.group,
            &self.commit,
            tip.number,
            tip.time_ms,
            &block.transactions,
        );
        Ok(Prepared { tip, validated })
    }

    /// Applies a block [`Self::prepare`] accepted (the last one prepared).
    pub fn apply(&mut self, prepared: Prepared) {
        let Prepared { tip, validated } = prepared;
        for write in validated.writes {
            match write.value {
                Some(value) => {
                    self.versions.insert(write.key, write.version);
                    if write.addressed {
                        self.values.insert(write.key, value);
                    } else {
                        self.values.remove(&write.key);
                    }
                }
                None => {
                    self.versions.remove(&write.key);
                    self.values.remove(&write.key);
                }
            }
        }
        self.tx_ids.extend(validated.tx_ids);
        if let Some(group) = validated.group {
            self.group = group;
        }
        self.commit = validated.commit_hash;
        self.codes.push(validated.codes);
        self.tip = tip;
    }

    /// This business node's name.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// The configuration of block 0.
    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    /// The last accepted block.
    pub fn tip(&self) -> &ChainTip {
        &self.tip
    }

    /// The commit hash after the last block.
    pub fn commit_hash(&self) -> [u8; 32] {
        self.commit
    }

    /// The codes of block `number`.
    pub fn codes(&self, number: u64) -> Option<&[ValidationCode]> {
        usize::try_from(number)
            .ok()
            .and_then(|n| self.codes.get(n))
            .map(Vec::as_slice)
    }

    /// The value this node keeps for a key: sealed in ciphertext mode, in
    /// clear in plaintext mode.
    pub fn value(&self, key: &[u8; 32]) -> Option<&[u8]> {
        self.values.get(key).map(Vec::as_slice)
    }

    /// Whether this node keeps its values in clear.
    pub fn keeps_clear(&self) -> bool {
        self.clear_key.is_some()
    }

    /// What this node holds for `key` (in plaintext mode the value is in
    /// clear: send it only over a load channel).
    pub fn load(&self, key: &[u8; 32]) -> Loaded {
        let value = self.values.get(key).cloned();
        Loaded {
            version: self.versions.get(key).copied(),
            held: match value {
                None => Held::Nothing,
                Some(value) if self.keeps_clear() => Held::Clear(value),
                Some(value) => Held::Sealed(value),
            },
        }
    }

    /// Every key's version.
    pub fn versions(&self) -> &BTreeMap<[u8; 32], Version> {
        &self.versions
    }

    /// Every transaction id recorded.
    pub fn tx_ids(&self) -> &HashSet<TxId> {
        &self.tx_ids
    }

    /// The compute group now.
    pub fn group(&self) -> &ComputeGroup {
        &self.group
    }
}
