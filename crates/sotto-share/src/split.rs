//! Splitting a provider's rows into additive shares, inside its enclave.
//! Every row (the provider's values and a presence 1, as elements of
//! Z_2^64 in two's complement) becomes one share per provider: uniformly
//! random for every other provider, and for the provider itself the value
//! minus their sum. Customer ids become keyed tags, so fragments carry no
//! id in clear.

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::kdf::KeyExpander;
use sotto_crypto::secret::SecretBytes;

use crate::dataset::{DatasetId, Declaration};

/// Why rows could not be split.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The sender is not a provider of the declaration.
    #[error("{0} is not a provider of this dataset")]
    NotAProvider(String),
    /// A row has another number of values than the provider's columns.
    #[error("row {id}: {got} values, but {provider} declares {expected} columns")]
    Width {
        /// The row's id.
        id: String,
        /// The provider.
        provider: String,
        /// Its declared columns.
        expected: usize,
        /// The row's values.
        got: usize,
    },
    /// The same id twice.
    #[error("customer id {0} appears twice")]
    DuplicateId(String),
}

/// Turns customer ids into tags under a key only the providers' enclaves
/// hold, so that fragments and fused shares carry no id in clear.
pub struct IdTagger(KeyExpander);

impl std::fmt::Debug for IdTagger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdTagger(redacted)")
    }
}

impl IdTagger {
    /// A tagger under `key`.
    pub fn new(key: SecretBytes<32>) -> Self {
        Self(KeyExpander::new(key.expose()))
    }

    /// The tag of customer `id` in `dataset` (the same in every version).
    pub fn tag(&self, dataset: &DatasetId, id: &str) -> [u8; 32] {
        let mut info = b"sotto/share/id-tag/v1".to_vec();
        info.extend_from_slice(&(dataset.as_str().len() as u64).to_be_bytes());
        info.extend_from_slice(dataset.as_str().as_bytes());
        info.extend_from_slice(id.as_bytes());
        self.0.key(&info)
    }
}

/// Rows of one fragment, in tag order: for each row its tag and `width`
/// values (the sender's columns and its presence).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FragmentRows {
    /// Values per row.
    pub width: usize,
    /// One tag per row.
    pub tags: Vec<[u8; 32]>,
    /// Row-major values, `width` per row.
    pub values: Vec<u64>,
}

impl FragmentRows {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.tags.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Row `i`'s tag and values.
    pub fn row(&self, i: usize) -> Option<(&[u8; 32], &[u64])> {
        let tag = self.tags.get(i)?;
        let values = self.values.get(i * self.width..(i + 1) * self.width)?;
        Some((tag, values))
    }
}

/// Splits `sender`'s rows (id, values at the declared scales) into one
/// fragment per provider, in declaration order.
pub fn split<'a, R: RngCore + CryptoRng>(
    declaration: &Declaration,
    sender: &str,
    rows: impl IntoIterator<Item = (&'a str, &'a [i64])>,
    tagger: &IdTagger,
    rng: &mut R,
) -> Result<Vec<FragmentRows>, SplitError> {
    let me = declaration
        .index_of(sender)
        .ok_or_else(|| SplitError::NotAProvider(sender.to_owned()))?;
    let columns = declaration.providers[me].columns.len();
    let width = columns + 1;
    let mut tagged: Vec<([u8; 32], &str, &[i64])> = Vec::new();
    for (id, values) in rows {
        if values.len() != columns {
            return Err(SplitError::Width {
                id: id.to_owned(),
                provider: sender.to_owned(),
                expected: columns,
                got: values.len(),
            });
        }
        tagged.push((tagger.tag(&declaration.dataset, id), id, values));
    }
    tagged.sort_unstable_by_key(|a| a.0);
    if let Some(pair) = tagged.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(SplitError::DuplicateId(pair[1].1.to_owned()));
    }
    let providers = declaration.providers.len();
    let mut fragments: Vec<FragmentRows> = (0..providers)
        .map(|_| FragmentRows {
            width,
            tags: Vec::with_capacity(tagged.len()),
            values: Vec::with_capacity(tagged.len() * width),
        })
        .collect();
    let mut own = vec![0u64; width];
    for (tag, _, values) in &tagged {
        for (slot, v) in own.iter_mut().zip(values.iter()) {
            // Two's complement: a negative value is its ring negation.
            *slot = *v as u64;
        }
        own[columns] = 1;
        for (index, fragment) in fragments.iter_mut().enumerate() {
            fragment.tags.push(*tag);
            if index == me {
                continue;
            }
            for slot in &mut own {
                let share = rng.next_u64();
                fragment.values.push(share);
                *slot = slot.wrapping_sub(share);
            }
        }
        fragments[me].values.extend_from_slice(&own);
    }
    Ok(fragments)
}
