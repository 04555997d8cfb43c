//! Blocks: a header (number, previous header hash, data hash, time, the
//! orderer that cut it), the transactions' bytes, and the orderer's
//! signature. Block 0 carries the genesis text; the hash of its header is
//! the ledger id that every packet names. [`ChainTip::check_next`] is the
//! chain rule every business node applies before validating transactions.

use prost::Message;
use sotto_crypto::hash::{sha256, FieldHasher};
use sotto_crypto::identity::IdentityKey;

use crate::config::LedgerConfig;
use crate::genesis::GenesisError;

/// Domain of the orderer's signature over a block.
pub const BLOCK_DOMAIN: &str = "sotto/ledger/block/v1";

/// A block header.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct BlockHeader {
    /// The block number; block 0 is the genesis block.
    #[prost(uint64, tag = "1")]
    pub number: u64,
    /// Hash of the previous block's header (zeros for block 0).
    #[prost(bytes = "vec", tag = "2")]
    pub previous: Vec<u8>,
    /// [`data_hash`] of the transactions.
    #[prost(bytes = "vec", tag = "3")]
    pub data_hash: Vec<u8>,
    /// When it was cut (Unix ms).
    #[prost(uint64, tag = "4")]
    pub time_ms: u64,
    /// The orderer that cut it (empty for block 0).
    #[prost(string, tag = "5")]
    pub orderer: String,
}

/// A block.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Block {
    /// The header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<BlockHeader>,
    /// The encoded transactions (block 0: the genesis text).
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub transactions: Vec<Vec<u8>>,
    /// The orderer's signature over the ledger id and the header hash.
    #[prost(bytes = "vec", tag = "3")]
    pub signature: Vec<u8>,
}

/// Why a block does not extend the chain. Nothing of such a block is
/// applied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The block has no header.
    #[error("block has no header")]
    NoHeader,
    /// The block's number is not the next one.
    #[error("block {got} arrived where block {expected} was expected")]
    OutOfOrder {
        /// The next number.
        expected: u64,
        /// The block's number.
        got: u64,
    },
    /// The block does not name the previous block's header hash.
    #[error("block {number} does not chain to block {}: another chain, or a tampered block", number.saturating_sub(1))]
    BrokenChain {
        /// The block.
        number: u64,
    },
    /// The data hash does not match the transactions.
    #[error("block {number}: its transactions do not match its data hash (tampered)")]
    DataMismatch {
        /// The block.
        number: u64,
    },
    /// The orderer is not in the configuration, or its signature fails.
    #[error("block {number}: not signed by orderer {orderer} of this ledger")]
    BadOrdererSignature {
        /// The block.
        number: u64,
        /// The orderer it names.
        orderer: String,
    },
    /// The block's time is before its predecessor's.
    #[error("block {number} is dated before the block it follows")]
    TimeWentBack {
        /// The block.
        number: u64,
    },
    /// The block holds more transactions or bytes than the configuration allows.
    #[error("block {number} exceeds the configured block size")]
    TooLarge {
        /// The block.
        number: u64,
    },
    /// Block 0 is not a genesis block, or its configuration is refused.
    #[error("block 0 is not a valid genesis block: {reason}")]
    BadGenesis {
        /// Why.
        reason: String,
    },
    /// The block bytes do not decode.
    #[error("block does not decode: {reason}")]
    Malformed {
        /// Why.
        reason: String,
    },
}

/// The hash that chains blocks and that the orderer signs.
pub fn header_hash(header: &BlockHeader) -> [u8; 32] {
    let mut hasher = FieldHasher::new("sotto/ledger/block-header/v1");
    hasher.field(&header.encode_to_vec());
    hasher.finish()
}

/// The hash of a block's transactions: one digest per transaction, so that
/// a node may keep the digest of a transaction in place of its bytes.
pub fn data_hash(transactions: &[Vec<u8>]) -> [u8; 32] {
    let mut hasher = FieldHasher::new("sotto/ledger/block-data/v1");
    for tx in transactions {
        hasher.field(&sha256(tx));
    }
    hasher.finish()
}

impl Block {
    /// Block 0 of a ledger: the genesis text, dated when the consortium
    /// created it.
    pub fn genesis(config: &LedgerConfig, text: &str) -> Self {
        let transactions = vec![text.as_bytes().to_vec()];
        Self {
            header: Some(BlockHeader {
                number: 0,
                previous: vec![0; 32],
                data_hash: data_hash(&transactions).to_vec(),
                time_ms: config.created.saturating_mul(1000),
                orderer: String::new(),
            }),
            transactions,
            signature: Vec::new(),
        }
    }

    /// Reads block 0: its configuration and the chain tip it starts.
    pub fn open_genesis(&self, file: &str) -> Result<(LedgerConfig, ChainTip), BlockError> {
        let bad = |reason: String| BlockError::BadGenesis { reason };
        let header = self.header.as_ref().ok_or(BlockError::NoHeader)?;
        if header.number != 0 || header.previous != [0; 32] || !header.orderer.is_empty() {
            return Err(bad("its header is not a genesis header".into()));
        }
        let [text] = self.transactions.as_slice() else {
            return Err(bad("it must hold exactly the genesis text".into()));
        };
        if header.data_hash != data_hash(&self.transactions) {
            return Err(BlockError::DataMismatch { number: 0 });
        }
        let text = std::str::from_utf8(text)
            .map_err(|e| bad(format!("the genesis text is not UTF-8: {e}")))?;
        let config =
            LedgerConfig::parse(file, text).map_err(|e: GenesisError| bad(e.to_string()))?;
        if header.time_ms != config.created.saturating_mul(1000) {
            return Err(bad(
                "its time is not the configuration's creation time".into()
            ));
        }
        let hash = header_hash(header);
        Ok((
            config,
            ChainTip {
                ledger: hash,
                number: 0,
                hash,
                time_ms: header.time_ms,
            },
        ))
    }

    /// Cuts and signs block `tip.number + 1` holding `transactions`.
    pub fn cut(
        tip: &ChainTip,
        orderer: &str,
        key: &IdentityKey,
        time_ms: u64,
        transactions: Vec<Vec<u8>>,
    ) -> Self {
        let header = BlockHeader {
            number: tip.number + 1,
            previous: tip.hash.to_vec(),
            data_hash: data_hash(&transactions).to_vec(),
            time_ms: time_ms.max(tip.time_ms),
            orderer: orderer.to_owned(),
        };
        let signature = key
            .sign(BLOCK_DOMAIN, &signed_header(&tip.ledger, &header))
            .to_vec();
        Self {
            header: Some(header),
            transactions,
            signature,
        }
    }
}

fn signed_header(ledger: &[u8; 32], header: &BlockHeader) -> Vec<u8> {
    let mut out = ledger.to_vec();
    out.extend_from_slice(&header_hash(header));
    out
}

/// The last block a node accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainTip {
    /// The ledger id (hash of block 0's header).
    pub ledger: [u8; 32],
    /// The last block's number.
    pub number: u64,
    /// The last block's header hash.
    pub hash: [u8; 32],
    /// The last block's time.
    pub time_ms: u64,
}

impl ChainTip {
    /// Checks that `block` is the next block of this chain, cut and signed
    /// by an orderer of `config`; returns the tip it makes.
    pub fn check_next(&self, config: &LedgerConfig, block: &Block) -> Result<ChainTip, BlockError> {
        let header = block.header.as_ref().ok_or(BlockError::NoHeader)?;
        let number = header.number;
        if Some(number) != self.number.checked_add(1) {
            return Err(BlockError::OutOfOrder {
                expected: self.number.saturating_add(1),
                got: number,
            });
        }
        if header.previous != self.hash {
            return Err(BlockError::BrokenChain { number });
        }
        if header.data_hash != data_hash(&block.transactions) {
            return Err(BlockError::DataMismatch { number });
        }
        let orderer = config.orderer(&header.orderer);
        let signed = orderer.is_some_and(|o| {
            o.identity
                .verify(
                    BLOCK_DOMAIN,
                    &signed_header(&self.ledger, header),
                    &block.signature,
                    "block",
                )
                .is_ok()
        });
        if !signed {
            return Err(BlockError::BadOrdererSignature {
                number,
                orderer: header.orderer.clone(),
            });
        }
        if header.time_ms < self.time_ms {
            return Err(BlockError::TimeWentBack { number });
        }
        let bytes: usize = block.transactions.iter().map(Vec::len).sum();
        if block.transactions.len() > config.blocks.max_transactions as usize
            || bytes > config.blocks.max_bytes as usize
        {
            return Err(BlockError::TooLarge { number });
        }
        Ok(ChainTip {
            ledger: self.ledger,
            number,
            hash: header_hash(header),
            time_ms: header.time_ms,
        })
    }
}
