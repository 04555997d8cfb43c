//! Raft under the ordering service. The orderers block 0 names form one
//! openraft group, fixed by block 0 (node id = position in block 0's
//! orderer list, from 1). The leader cuts each block and proposes it as one
//! log entry; every orderer applies committed entries to its chain, so a
//! block is stored, delivered and answered only once a majority of
//! orderers hold it. This module owns the group's types and settings;
//! [`log`] stores the Raft log and vote in redb, [`chain`] is the state
//! machine (the block chain in the same redb file), [`network`] carries
//! Raft messages over the orderers' mutual-TLS gRPC. Log entries and Raft
//! messages are encoded in CBOR ([`to_cbor`], [`from_cbor`]), blocks as
//! byte strings inside them.

pub mod chain;
pub mod log;
pub mod network;

use openraft::{Config, SnapshotPolicy};
use serde::{Deserialize, Serialize};

use super::OnlineError;
use crate::config::{LedgerConfig, Member};

openraft::declare_raft_types!(
    /// The ordering group's Raft types: entries carry proposed blocks,
    /// node ids are positions in block 0's orderer list.
    pub OrderingRaft:
        D = ProposedBlock,
        R = AppliedBlock,
        NodeId = u64,
        Node = openraft::EmptyNode,
        SnapshotData = std::io::Cursor<Vec<u8>>,
);

/// Encodes a Raft message or log entry (CBOR).
pub fn to_cbor<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

/// Decodes a Raft message or log entry (CBOR); refuses trailing bytes.
pub fn from_cbor<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut rest = bytes;
    let value = ciborium::from_reader(&mut rest).map_err(|e| e.to_string())?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(format!("{} bytes after the message", rest.len()))
    }
}

/// A Raft node id.
pub type RaftId = u64;

/// A block the leader proposes: its protobuf encoding.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposedBlock {
    /// The encoded block.
    #[serde(with = "serde_bytes")]
    pub block: Vec<u8>,
}

/// What applying one log entry did to the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedBlock {
    /// The number of the block stored, if the entry was a block that
    /// extends the chain.
    pub number: Option<u64>,
    /// Why a proposed block was not stored (it did not extend the chain
    /// when its turn came: every orderer refuses it alike).
    pub refused: Option<String>,
}

/// The Raft node id of the orderer `name`.
pub fn node_id(config: &LedgerConfig, name: &str) -> Option<RaftId> {
    config
        .orderers
        .iter()
        .position(|o| o.name.as_str() == name)
        .and_then(|i| u64::try_from(i + 1).ok())
}

/// The orderer with Raft node id `id`.
pub fn orderer_of(config: &LedgerConfig, id: RaftId) -> Option<&Member> {
    let index = usize::try_from(id.checked_sub(1)?).ok()?;
    config.orderers.get(index)
}

/// The group's Raft settings: heartbeats every 150 ms, an election after
/// 0.75-1.5 s without one, no automatic snapshots (the log keeps every
/// entry; a follower catches up by replication), few blocks per message.
pub fn settings(ledger: &[u8; 32]) -> Result<Config, OnlineError> {
    Config {
        cluster_name: hex::encode(ledger),
        heartbeat_interval: 150,
        election_timeout_min: 750,
        election_timeout_max: 1500,
        snapshot_policy: SnapshotPolicy::Never,
        max_payload_entries: 8,
        snapshot_max_chunk_size: 1 << 20,
        ..Config::default()
    }
    .validate()
    .map_err(|e| OnlineError::Misconfigured(format!("Raft settings: {e}")))
}
