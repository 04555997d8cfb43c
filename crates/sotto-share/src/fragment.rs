//! Fragments on the wire: a fragment (one provider's share of another
//! provider's rows) travels in chunks, each sealed with HPKE to the
//! recipient's enclave key. A chunk's header is in clear (the ledger indexes
//! it) and is the associated data of the seal, so a chunk moved to another
//! dataset, version, declaration, sender, recipient or position does not
//! open.

use prost::Message;
use rand_core::{CryptoRng, RngCore};
use sotto_crypto::hash::FieldHasher;
use sotto_crypto::hpke::{HpkePublicKey, HpkeSecretKey};
use sotto_crypto::CryptoError;

use crate::dataset::Declaration;
use crate::fixed_width::{tags_from_bytes, tags_to_bytes, words_from_bytes, words_to_bytes};
use crate::split::FragmentRows;

/// The fragment format this build writes and reads.
pub const FRAGMENT_FORMAT: u32 = 1;
/// Rows per chunk by default (a chunk of 10 columns is about 600 KiB, well
/// inside one ledger block).
pub const DEFAULT_CHUNK_ROWS: usize = 4096;
const INFO: &[u8] = b"sotto/share/fragment/v1";

/// A chunk's header, in clear and bound into its seal.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ChunkHeader {
    /// [`FRAGMENT_FORMAT`].
    #[prost(uint32, tag = "1")]
    pub format: u32,
    /// The dataset.
    #[prost(string, tag = "2")]
    pub dataset: String,
    /// Its version.
    #[prost(uint64, tag = "3")]
    pub version: u64,
    /// The declaration's digest.
    #[prost(bytes = "vec", tag = "4")]
    pub declaration: Vec<u8>,
    /// The provider whose rows these are shares of.
    #[prost(string, tag = "5")]
    pub sender: String,
    /// The provider the chunk is sealed to.
    #[prost(string, tag = "6")]
    pub recipient: String,
    /// The chunk's position, from 0.
    #[prost(uint32, tag = "7")]
    pub index: u32,
    /// How many chunks the fragment has.
    #[prost(uint32, tag = "8")]
    pub count: u32,
}

/// A sealed chunk.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SealedChunk {
    /// The header.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ChunkHeader>,
    /// HPKE to the recipient of the encoded rows.
    #[prost(bytes = "vec", tag = "2")]
    pub sealed: Vec<u8>,
}

/// A chunk's rows: tags and values at fixed width (a random share would
/// take ten bytes as a varint), 32 and 8 bytes little-endian each.
#[derive(Clone, PartialEq, Eq, prost::Message)]
struct ChunkBody {
    #[prost(bytes = "vec", tag = "1")]
    tags: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    values: Vec<u8>,
}

/// Why a chunk was refused by its recipient.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// The chunk has no header.
    #[error("a chunk without a header")]
    NoHeader,
    /// The format is not this build's.
    #[error("chunk from {sender}: format {format} is not {FRAGMENT_FORMAT}")]
    Format {
        /// The sender the header names.
        sender: String,
        /// Its format.
        format: u32,
    },
    /// The chunk is of another dataset.
    #[error("chunk from {sender} is of dataset {got}, not {expected}")]
    OtherDataset {
        /// The sender the header names.
        sender: String,
        /// Its dataset.
        got: String,
        /// This declaration's.
        expected: String,
    },
    /// The chunk is of another version (replayed from an earlier one, or
    /// from a later one this node does not fuse now).
    #[error(
        "chunk from {sender} is of version {got}, not {expected} (replayed from another version)"
    )]
    OtherVersion {
        /// The sender the header names.
        sender: String,
        /// Its version.
        got: u64,
        /// This declaration's.
        expected: u64,
    },
    /// The chunk binds another declaration of the same dataset and version.
    #[error("chunk from {sender} was made under another declaration of this dataset and version")]
    OtherDeclaration {
        /// The sender the header names.
        sender: String,
    },
    /// The chunk is addressed to another provider.
    #[error("chunk from {sender} is addressed to {recipient}, not to this provider")]
    NotForMe {
        /// The sender the header names.
        sender: String,
        /// The recipient it names.
        recipient: String,
    },
    /// The sender is not a provider of the declaration.
    #[error("chunk from {0}, which is not a provider of this dataset")]
    UnknownSender(String),
    /// The position is outside the fragment.
    #[error("chunk from {sender}: index {index} of {count} chunks")]
    BadIndex {
        /// The sender.
        sender: String,
        /// The index.
        index: u32,
        /// The count.
        count: u32,
    },
    /// The chunk does not open: altered on the way, or its header changed.
    #[error(
        "chunk {index} from {sender} does not open: it was altered, or its header was changed"
    )]
    Tampered {
        /// The sender.
        sender: String,
        /// The index.
        index: u32,
    },
    /// The chunk opened but its rows are not well formed.
    #[error("chunk {index} from {sender}: {reason}")]
    Malformed {
        /// The sender.
        sender: String,
        /// The index.
        index: u32,
        /// What is wrong.
        reason: String,
    },
}

fn aad(header: &ChunkHeader) -> [u8; 32] {
    let mut h = FieldHasher::new("sotto/share/fragment-aad/v1");
    h.field(&header.encode_to_vec());
    h.finish()
}

/// Seals `rows` (sender's shares for `recipient`) in chunks of at most
/// `chunk_rows` rows; a fragment without rows is one empty chunk.
pub fn seal_fragment<R: RngCore + CryptoRng>(
    declaration: &Declaration,
    sender: &str,
    recipient: &str,
    key: &HpkePublicKey,
    rows: &FragmentRows,
    chunk_rows: usize,
    rng: &mut R,
) -> Result<Vec<SealedChunk>, CryptoError> {
    let chunk_rows = chunk_rows.max(1);
    let count = rows.len().div_ceil(chunk_rows).max(1);
    let count_u32 = u32::try_from(count).map_err(|_| CryptoError::BadEncoding {
        what: "fragment (too many chunks)",
    })?;
    let mut chunks = Vec::with_capacity(count);
    for index in 0..count_u32 {
        let first = index as usize * chunk_rows;
        let last = (first + chunk_rows).min(rows.len());
        let body = ChunkBody {
            tags: tags_to_bytes(&rows.tags[first..last]),
            values: words_to_bytes(&rows.values[first * rows.width..last * rows.width]),
        };
        let header = ChunkHeader {
            format: FRAGMENT_FORMAT,
            dataset: declaration.dataset.to_string(),
            version: declaration.version,
            declaration: declaration.digest().to_vec(),
            sender: sender.to_owned(),
            recipient: recipient.to_owned(),
            index,
            count: count_u32,
        };
        let sealed = key.seal(INFO, &aad(&header), &body.encode_to_vec(), rng)?;
        chunks.push(SealedChunk {
            header: Some(header),
            sealed,
        });
    }
    Ok(chunks)
}

/// A chunk opened by its recipient.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedChunk {
    /// The sender's position in the declaration.
    pub sender: usize,
    /// The chunk's position.
    pub index: u32,
    /// The fragment's chunk count.
    pub count: u32,
    /// Its rows.
    pub rows: FragmentRows,
}

/// Opens a chunk at provider `me` (holding `key`), checking every header
/// field against the declaration before it opens.
pub fn open_chunk(
    declaration: &Declaration,
    me: &str,
    key: &HpkeSecretKey,
    chunk: &SealedChunk,
) -> Result<OpenedChunk, FragmentError> {
    let header = chunk.header.as_ref().ok_or(FragmentError::NoHeader)?;
    let sender = header.sender.clone();
    if header.format != FRAGMENT_FORMAT {
        return Err(FragmentError::Format {
            sender,
            format: header.format,
        });
    }
    if header.dataset != declaration.dataset.as_str() {
        return Err(FragmentError::OtherDataset {
            sender,
            got: header.dataset.clone(),
            expected: declaration.dataset.to_string(),
        });
    }
    if header.version != declaration.version {
        return Err(FragmentError::OtherVersion {
            sender,
            got: header.version,
            expected: declaration.version,
        });
    }
    if header.declaration != declaration.digest() {
        return Err(FragmentError::OtherDeclaration { sender });
    }
    if header.recipient != me {
        return Err(FragmentError::NotForMe {
            sender,
            recipient: header.recipient.clone(),
        });
    }
    let from = declaration
        .index_of(&sender)
        .ok_or_else(|| FragmentError::UnknownSender(sender.clone()))?;
    let (index, count) = (header.index, header.count);
    if index >= count {
        return Err(FragmentError::BadIndex {
            sender,
            index,
            count,
        });
    }
    let body =
        key.open(INFO, &aad(header), &chunk.sealed)
            .map_err(|_| FragmentError::Tampered {
                sender: sender.clone(),
                index,
            })?;
    let malformed = |reason: String| FragmentError::Malformed {
        sender: sender.clone(),
        index,
        reason,
    };
    let body = ChunkBody::decode(body.as_slice()).map_err(|e| malformed(e.to_string()))?;
    let width = declaration.providers[from].columns.len() + 1;
    let rows = body.tags.len() / 32;
    if body.tags.len() % 32 != 0 || body.values.len() != rows * width * 8 {
        return Err(malformed(format!(
            "{} bytes of tags and {} bytes of values do not make rows of {width} values",
            body.tags.len(),
            body.values.len()
        )));
    }
    let tags = tags_from_bytes(&body.tags);
    let values = words_from_bytes(&body.values);
    Ok(OpenedChunk {
        sender: from,
        index,
        count,
        rows: FragmentRows {
            width,
            tags,
            values,
        },
    })
}
