//! A fused share at rest: encoded with the declaration it belongs to and
//! sealed by the provider's enclave (bound to the code's measurement and
//! the platform), with the dataset, version and declaration digest as
//! associated data. A file of another dataset or version, another
//! enclave's, or an altered one does not open; a new version is written
//! beside the old one and replaces it only once complete.

use prost::Message;
use sotto_crypto::hash::FieldHasher;
use sotto_tee::enclave::Enclave;

use crate::dataset::Declaration;
use crate::fixed_width::{tags_from_bytes, tags_to_bytes, words_from_bytes, words_to_bytes};
use crate::fuse::FusedShare;

/// The at-rest format this build writes and reads.
pub const FUSED_FORMAT: u32 = 1;

#[derive(Clone, PartialEq, Eq, prost::Message)]
struct FusedFile {
    #[prost(uint32, tag = "1")]
    format: u32,
    #[prost(bytes = "vec", tag = "2")]
    declaration: Vec<u8>,
    #[prost(uint32, tag = "3")]
    width: u32,
    /// 32 bytes per row.
    #[prost(bytes = "vec", tag = "4")]
    tags: Vec<u8>,
    /// 8 bytes little-endian per value.
    #[prost(bytes = "vec", tag = "5")]
    values: Vec<u8>,
}

/// Why a stored fused share was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AtRestError {
    /// The enclave could not seal.
    #[error("sealing the fused share: {0}")]
    Seal(String),
    /// It does not unseal here: another dataset, version or declaration,
    /// another enclave's, or altered.
    #[error("the fused share does not unseal: it belongs to another dataset version or enclave, or was altered")]
    Unseal,
    /// It unsealed but is not a fused share of this declaration.
    #[error("the fused share is damaged: {0}")]
    Damaged(String),
}

fn aad(declaration: &Declaration) -> [u8; 32] {
    let mut h = FieldHasher::new("sotto/share/fused-at-rest/v1");
    h.field(declaration.dataset.as_str().as_bytes())
        .field(&declaration.version.to_be_bytes())
        .field(&declaration.digest());
    h.finish()
}

/// Seals `share` of `declaration` with `enclave`.
pub fn seal(
    enclave: &dyn Enclave,
    declaration: &Declaration,
    share: &FusedShare,
) -> Result<Vec<u8>, AtRestError> {
    let (tags, values) = share.parts();
    let file = FusedFile {
        format: FUSED_FORMAT,
        declaration: share.declaration.to_vec(),
        width: u32::try_from(share.width).map_err(|_| AtRestError::Seal("too wide".into()))?,
        tags: tags_to_bytes(tags),
        values: words_to_bytes(values),
    };
    enclave
        .seal(&file.encode_to_vec(), &aad(declaration))
        .map_err(|e| AtRestError::Seal(e.to_string()))
}

/// Unseals a fused share of `declaration` sealed by `enclave`.
pub fn unseal(
    enclave: &dyn Enclave,
    declaration: &Declaration,
    sealed: &[u8],
) -> Result<FusedShare, AtRestError> {
    let bytes = enclave
        .unseal(sealed, &aad(declaration))
        .map_err(|_| AtRestError::Unseal)?;
    let file =
        FusedFile::decode(bytes.as_slice()).map_err(|e| AtRestError::Damaged(e.to_string()))?;
    if file.format != FUSED_FORMAT || file.declaration != declaration.digest() {
        return Err(AtRestError::Damaged(format!(
            "format {} or declaration not this build's and this dataset's",
            file.format
        )));
    }
    let width = file.width as usize;
    let rows = file.tags.len() / 32;
    if width != declaration.width()
        || file.tags.len() % 32 != 0
        || file.values.len() != rows * width * 8
    {
        return Err(AtRestError::Damaged(format!(
            "{} bytes of tags and {} bytes of values for rows of {width}",
            file.tags.len(),
            file.values.len()
        )));
    }
    let tags = tags_from_bytes(&file.tags);
    let values = words_from_bytes(&file.values);
    FusedShare::from_parts(declaration.digest(), width, tags, values)
        .ok_or_else(|| AtRestError::Damaged("customers repeated or out of order".into()))
}
