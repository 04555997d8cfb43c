//! The checked ledger configuration that block 0 carries: who the orderers,
//! endorsers, business nodes and clients are (names, organisations,
//! identity keys, addresses), the registration center and enclave group,
//! block cutting, and the contracts with their endorsement policies and
//! allowed callers.

use std::fmt;
use std::str::FromStr;

use sotto_crypto::identity::IdentityPublic;
use sotto_node::NodeName;

use crate::policy::{EndorserSet, Policy};

/// The most endorsers a ledger may have (endorser sets are 64-bit masks).
pub const MAX_ENDORSERS: usize = 64;

/// One node of the consortium.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name, unique in the ledger.
    pub name: NodeName,
    /// Its organisation.
    pub org: NodeName,
    /// Its identity key: every signature it makes verifies under this key.
    pub identity: IdentityPublic,
    /// Where it listens (`host:port`); clients have none.
    pub address: Option<String>,
}

/// How a business node keeps its private data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageMode {
    /// Encrypted under the data-encryption key; compute enclaves decrypt.
    Ciphertext,
    /// In clear on the institution's own node, handed to attested enclaves
    /// over an encrypted channel only.
    Plaintext,
}

impl FromStr for StorageMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ciphertext" => Ok(Self::Ciphertext),
            "plaintext" => Ok(Self::Plaintext),
            other => Err(format!(
                "storage mode {other:?} is neither \"ciphertext\" nor \"plaintext\""
            )),
        }
    }
}

impl fmt::Display for StorageMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ciphertext => "ciphertext",
            Self::Plaintext => "plaintext",
        })
    }
}

/// A business node and its storage mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusinessNode {
    /// The node.
    pub member: Member,
    /// Its storage mode.
    pub mode: StorageMode,
}

/// When the ordering service cuts a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockCutting {
    /// At most this many transactions per block.
    pub max_transactions: u32,
    /// At most this many bytes of transactions per block.
    pub max_bytes: u32,
    /// A block is cut at most this long after its first transaction arrived.
    pub timeout_ms: u32,
}

impl BlockCutting {
    /// Defaults suited to low latency on a small cluster.
    pub const DEFAULT: Self = Self {
        max_transactions: 500,
        max_bytes: 2 << 20,
        timeout_ms: 20,
    };
    /// The largest block allowed: it must fit one gRPC message (4 MiB) with
    /// room for the header and signatures.
    pub const MAX_BYTES: u32 = 3 << 20;
}

/// A contract the ledger runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContractConfig {
    /// Its name.
    pub name: NodeName,
    /// The version every packet must name.
    pub version: u32,
    /// Who must endorse its transactions.
    pub policy: Policy,
    /// The clients allowed to call it.
    pub callers: Vec<NodeName>,
}

/// The ledger configuration of block 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerConfig {
    /// The ledger's name.
    pub name: String,
    /// When the consortium created it (Unix seconds); block 0's time.
    pub created: u64,
    /// SHA-256 of the consortium CA certificate (DER).
    pub ca_sha256: [u8; 32],
    /// The registration center, which signs the compute group's membership.
    pub center: Member,
    /// The compute group's measurement, if the consortium pins one here.
    pub measurement: Option<Vec<u8>>,
    /// Block cutting.
    pub blocks: BlockCutting,
    /// The ordering service's Raft members.
    pub orderers: Vec<Member>,
    /// The endorsers, in the order that numbers them in endorser sets.
    pub endorsers: Vec<Member>,
    /// The business nodes.
    pub business: Vec<BusinessNode>,
    /// The clients (institutions' applications).
    pub clients: Vec<Member>,
    /// The contracts.
    pub contracts: Vec<ContractConfig>,
}

impl LedgerConfig {
    /// The endorsers a policy principal stands for: the endorser of that
    /// name, or every endorser of that organisation.
    pub fn endorsers_of(&self, principal: &str) -> EndorserSet {
        self.endorsers
            .iter()
            .enumerate()
            .filter(|(_, e)| e.name.as_str() == principal || e.org.as_str() == principal)
            .fold(0, |set, (i, _)| set | (1u64 << i))
    }

    /// The endorser of this name and its index.
    pub fn endorser(&self, name: &str) -> Option<(usize, &Member)> {
        self.endorsers
            .iter()
            .enumerate()
            .find(|(_, e)| e.name.as_str() == name)
    }

    /// The client of this name.
    pub fn client(&self, name: &str) -> Option<&Member> {
        self.clients.iter().find(|c| c.name.as_str() == name)
    }

    /// The orderer of this name.
    pub fn orderer(&self, name: &str) -> Option<&Member> {
        self.orderers.iter().find(|o| o.name.as_str() == name)
    }

    /// The business node of this name.
    pub fn business_node(&self, name: &str) -> Option<&BusinessNode> {
        self.business
            .iter()
            .find(|b| b.member.name.as_str() == name)
    }

    /// The identity key of the consortium node of this name (orderer,
    /// endorser, business node or client), if block 0 names one.
    pub fn member_identity(&self, name: &str) -> Option<IdentityPublic> {
        self.orderer(name)
            .or_else(|| self.endorser(name).map(|(_, e)| e))
            .or_else(|| self.business_node(name).map(|b| &b.member))
            .or_else(|| self.client(name))
            .map(|m| m.identity)
    }

    /// The contract of this name.
    pub fn contract(&self, name: &str) -> Option<&ContractConfig> {
        self.contracts.iter().find(|c| c.name.as_str() == name)
    }
}
