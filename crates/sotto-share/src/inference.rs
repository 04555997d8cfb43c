//! Privacy inference on shares (docs/share.md), the sans-IO part: the query
//! an inference enclave sends every provider ([`PartialQuery`]), a
//! provider's partial results `w · s_j` sealed under a key derived from
//! the enclave group's pre-synced key ([`answer_partials`]), their opening
//! ([`open_partials`]) and the combination of every provider's partials
//! into scores ([`combine`]). The sealed answer is bound to the request,
//! the gateway, the provider, the dataset version, the model, the group key
//! version and the exact list of customers asked about, so it cannot be
//! replayed into another request or passed off as another provider's.

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::hash::FieldHasher;
use sotto_crypto::kdf::hkdf_key;
use sotto_crypto::secret::SecretBytes;

use crate::dataset::Declaration;
use crate::fuse::FusedShare;
use crate::model::LinearModel;

/// The inference exchange format this build speaks.
pub const INFERENCE_FORMAT: u32 = 1;
/// The most customers one request may ask about.
pub const MAX_IDS: usize = 10_000;
/// Bytes per customer in a sealed answer: presence, then `w · s_j`.
const ENTRY_LEN: usize = 9;

/// Why an inference exchange was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InferenceError {
    /// The request's format is not this build's.
    #[error("inference format {got} is not supported (this build speaks {INFERENCE_FORMAT})")]
    Format {
        /// The request's format.
        got: u32,
    },
    /// The request asks about no customer or too many.
    #[error("a request names 1 to {MAX_IDS} customers; this one names {got}")]
    IdCount {
        /// How many it names.
        got: usize,
    },
    /// The request is about another dataset or version than the one served.
    #[error("the request is about {asked}, this provider serves {served}")]
    Dataset {
        /// What the request names.
        asked: String,
        /// What the provider serves.
        served: String,
    },
    /// The model named is not the one this party holds (another digest).
    #[error("model {name} version {version}: {reason}")]
    Model {
        /// The model's name.
        name: String,
        /// Its version.
        version: u64,
        /// What differs.
        reason: String,
    },
    /// The model's feature columns do not match the share's columns.
    #[error("the model reads {model} columns but the fused share has {share}; the model was built for another declaration")]
    ColumnCount {
        /// The model's column count.
        model: usize,
        /// The share's column count.
        share: usize,
    },
    /// A sealed answer does not open: tampered, for another request,
    /// provider, model or key version.
    #[error("the answer of {provider} does not open: altered, or made for another request, provider, model or group key")]
    Sealed {
        /// The provider named.
        provider: String,
    },
    /// An answer opened but is not the expected layout.
    #[error("the answer of {provider} is malformed: {reason}")]
    Malformed {
        /// The provider named.
        provider: String,
        /// What is wrong.
        reason: String,
    },
    /// Providers disagree on whether a customer exists: their shares are
    /// of different fusions.
    #[error("{provider} disagrees with {first} on whether customer #{position} exists: their fused shares differ (another fusion?)")]
    Inconsistent {
        /// The provider that disagrees.
        provider: String,
        /// The first provider's name.
        first: String,
        /// The customer's position in the request.
        position: usize,
    },
    /// Not every provider answered.
    #[error("no answer from {provider}; no partial score is returned")]
    Missing {
        /// The provider that did not answer.
        provider: String,
    },
    /// Sealing failed.
    #[error("sealing the answer failed: {0}")]
    Seal(String),
}

/// What an inference enclave asks every provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialQuery {
    /// Format of the exchange.
    pub format: u32,
    /// A fresh id for this request.
    pub request: [u8; 16],
    /// The inference enclave (gateway) asking.
    pub gateway: String,
    /// The dataset.
    pub dataset: String,
    /// Its version.
    pub version: u64,
    /// The model's name.
    pub model: String,
    /// The model's version.
    pub model_version: u64,
    /// The model's digest.
    pub digest: [u8; 32],
    /// The group key version the answer is to be sealed under.
    pub key_version: u64,
    /// The customers' tags, in the order of the request.
    pub tags: Vec<[u8; 32]>,
}

impl PartialQuery {
    /// The associated data of `provider`'s answer.
    fn aad(&self, provider: &str) -> [u8; 32] {
        let mut tags = FieldHasher::new("sotto/share/partial-tags/v1");
        for t in &self.tags {
            tags.field(t);
        }
        let mut h = FieldHasher::new("sotto/share/partial/v1");
        h.field(&self.format.to_be_bytes())
            .field(&self.request)
            .field(self.gateway.as_bytes())
            .field(provider.as_bytes())
            .field(self.dataset.as_bytes())
            .field(&self.version.to_be_bytes())
            .field(self.model.as_bytes())
            .field(&self.model_version.to_be_bytes())
            .field(&self.digest)
            .field(&self.key_version.to_be_bytes())
            .field(&tags.finish());
        h.finish()
    }

    /// Checks the request against what a provider serves.
    fn check(&self, declaration: &Declaration, model: &LinearModel) -> Result<(), InferenceError> {
        if self.format != INFERENCE_FORMAT {
            return Err(InferenceError::Format { got: self.format });
        }
        if self.tags.is_empty() || self.tags.len() > MAX_IDS {
            return Err(InferenceError::IdCount {
                got: self.tags.len(),
            });
        }
        if self.dataset != declaration.dataset.as_str() || self.version != declaration.version {
            return Err(InferenceError::Dataset {
                asked: format!("{} version {}", self.dataset, self.version),
                served: format!("{} version {}", declaration.dataset, declaration.version),
            });
        }
        if self.model != model.name || self.model_version != model.version {
            return Err(self.model_error("not held here"));
        }
        if self.digest != model.digest {
            return Err(self.model_error(&format!(
                "the request's digest {} is not the registered one held here ({})",
                hex::encode(self.digest),
                hex::encode(model.digest)
            )));
        }
        Ok(())
    }

    fn model_error(&self, reason: &str) -> InferenceError {
        InferenceError::Model {
            name: self.model.clone(),
            version: self.model_version,
            reason: reason.to_owned(),
        }
    }
}

/// The key that seals partial results, from the group key of that version.
pub fn partials_key(group_key: &[u8]) -> SecretBytes<32> {
    hkdf_key(None, group_key, b"sotto/share/partials-key/v1")
}

/// A provider's answer to `query`: for each customer, whether its fused
/// share holds it and `w · s_j`, sealed under `key` (see [`partials_key`]).
pub fn answer_partials<R: RngCore + CryptoRng>(
    query: &PartialQuery,
    provider: &str,
    declaration: &Declaration,
    model: &LinearModel,
    share: &FusedShare,
    key: &SecretBytes<32>,
    rng: &mut R,
) -> Result<Vec<u8>, InferenceError> {
    query.check(declaration, model)?;
    if model.weights().len() != share.width {
        return Err(InferenceError::ColumnCount {
            model: model.weights().len(),
            share: share.width,
        });
    }
    let mut plain = Vec::with_capacity(query.tags.len() * ENTRY_LEN);
    for tag in &query.tags {
        match model.partial(share, tag) {
            Some(v) => {
                plain.push(1);
                plain.extend_from_slice(&v.to_le_bytes());
            }
            None => plain.extend_from_slice(&[0; ENTRY_LEN]),
        }
    }
    sotto_crypto::aead::seal(key, &query.aad(provider), &plain, rng)
        .map_err(|e| InferenceError::Seal(e.to_string()))
}

/// One provider's opened answer: `None` where it does not hold the
/// customer.
pub type Partials = Vec<Option<u64>>;

/// Opens `provider`'s sealed answer to `query`.
pub fn open_partials(
    query: &PartialQuery,
    provider: &str,
    key: &SecretBytes<32>,
    sealed: &[u8],
) -> Result<Partials, InferenceError> {
    let plain = sotto_crypto::aead::open(key, &query.aad(provider), sealed).map_err(|_| {
        InferenceError::Sealed {
            provider: provider.to_owned(),
        }
    })?;
    let malformed = |reason: String| InferenceError::Malformed {
        provider: provider.to_owned(),
        reason,
    };
    if plain.len() != query.tags.len() * ENTRY_LEN {
        return Err(malformed(format!(
            "{} bytes for {} customers",
            plain.len(),
            query.tags.len()
        )));
    }
    plain
        .chunks_exact(ENTRY_LEN)
        .map(|entry| {
            let mut value = [0; 8];
            value.copy_from_slice(&entry[1..]);
            match entry[0] {
                0 => Ok(None),
                1 => Ok(Some(u64::from_le_bytes(value))),
                other => Err(malformed(format!("presence byte {other}"))),
            }
        })
        .collect()
}

/// Every provider's partials (in declaration order, each named) combined
/// into scores: `None` for a customer no provider holds.
pub fn combine(
    model: &LinearModel,
    answers: &[(String, Option<Partials>)],
) -> Result<Vec<Option<f64>>, InferenceError> {
    let mut opened = Vec::with_capacity(answers.len());
    for (provider, partials) in answers {
        match partials {
            Some(p) => opened.push((provider, p)),
            None => {
                return Err(InferenceError::Missing {
                    provider: provider.clone(),
                })
            }
        }
    }
    let Some(((first, head), rest)) = opened.split_first() else {
        return Ok(Vec::new());
    };
    let mut sums: Vec<Option<u64>> = (*head).clone();
    for (provider, partials) in rest {
        for (position, (sum, part)) in sums.iter_mut().zip(partials.iter()).enumerate() {
            *sum = match (*sum, *part) {
                (Some(s), Some(p)) => Some(s.wrapping_add(p)),
                (None, None) => None,
                _ => {
                    return Err(InferenceError::Inconsistent {
                        provider: (*provider).clone(),
                        first: (*first).clone(),
                        position,
                    })
                }
            };
        }
    }
    Ok(sums
        .into_iter()
        .map(|s| s.map(|s| model.score(s)))
        .collect())
}
