//! Privacy inference on shares (docs/share.md), the sans-IO part: the query
//! an inference enclave sends every provider ([`PartialQuery`]), a
//! provider's answer sealed under a key derived from the enclave group's
//! pre-synced key ([`answer_partials`]: partial results `w · s_j` for a
//! linear model, or its share of the model's columns for an ONNX model),
//! their opening ([`open_partials`]), and their combination: into a linear
//! model's scores ([`combine`]) or into rows that exist only inside the
//! inference enclave ([`reconstruct`]). The sealed answer is bound to the request,
//! the gateway, the provider, the dataset version, the model, the group key
//! version and the exact list of customers asked about, so it cannot be
//! replayed into another request or passed off as another provider's.

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::hash::FieldHasher;
use sotto_crypto::kdf::hkdf_key;
use sotto_crypto::secret::SecretBytes;

use crate::dataset::Declaration;
use crate::fuse::FusedShare;
use crate::model::{LinearModel, Model};

/// The inference exchange format this build speaks.
pub const INFERENCE_FORMAT: u32 = 1;
/// The most customers one request may ask about.
pub const MAX_IDS: usize = 10_000;

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

/// What a provider is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryKind {
    /// `w · s_j` of a linear model, per customer.
    Partials,
    /// The share of the model's columns, per customer, for a general model
    /// reconstructed inside the inference enclave.
    Rows,
}

impl QueryKind {
    /// The wire code.
    pub fn code(self) -> u32 {
        match self {
            Self::Partials => 1,
            Self::Rows => 2,
        }
    }

    /// The kind of wire code `code`.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            1 => Some(Self::Partials),
            2 => Some(Self::Rows),
            _ => None,
        }
    }
}

/// What an inference enclave asks every provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialQuery {
    /// Format of the exchange.
    pub format: u32,
    /// What is asked.
    pub kind: QueryKind,
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
            .field(&self.kind.code().to_be_bytes())
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
    fn check(&self, declaration: &Declaration, model: &Model) -> Result<(), InferenceError> {
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
        if self.model != model.name() || self.model_version != model.version() {
            return Err(self.model_error("not held here"));
        }
        if self.digest != model.digest() {
            return Err(self.model_error(&format!(
                "the request's digest {} is not the registered one held here ({})",
                hex::encode(self.digest),
                hex::encode(model.digest())
            )));
        }
        match (self.kind, model) {
            (QueryKind::Partials, Model::Linear(_)) | (QueryKind::Rows, Model::Onnx(_)) => Ok(()),
            (QueryKind::Partials, Model::Onnx(_)) => Err(self.model_error(
                "an ONNX model is evaluated on reconstructed rows, not on partial results",
            )),
            (QueryKind::Rows, Model::Linear(_)) => Err(self.model_error(
                "a linear model is evaluated on partial results; rows are never sent for it",
            )),
        }
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

/// A provider's answer to `query` on its fused share, sealed under `key`
/// (see [`partials_key`]): for each customer, whether the share holds it
/// and either `w · s_j` (a linear model) or the share's values of the
/// model's columns (an ONNX model).
pub fn answer_partials<R: RngCore + CryptoRng>(
    query: &PartialQuery,
    provider: &str,
    declaration: &Declaration,
    model: &Model,
    share: &FusedShare,
    key: &SecretBytes<32>,
    rng: &mut R,
) -> Result<Vec<u8>, InferenceError> {
    query.check(declaration, model)?;
    let mut plain = Vec::new();
    match model {
        Model::Linear(linear) => {
            if linear.weights().len() != share.width {
                return Err(InferenceError::ColumnCount {
                    model: linear.weights().len(),
                    share: share.width,
                });
            }
            for tag in &query.tags {
                entry(&mut plain, linear.partial(share, tag).map(|v| vec![v]), 1);
            }
        }
        Model::Onnx(spec) => {
            if let Some((column, _)) = spec.columns.iter().find(|(c, _)| *c >= share.width) {
                return Err(InferenceError::ColumnCount {
                    model: column + 1,
                    share: share.width,
                });
            }
            for tag in &query.tags {
                let row = share
                    .row(tag)
                    .map(|r| spec.columns.iter().map(|(c, _)| r[*c]).collect());
                entry(&mut plain, row, spec.columns.len());
            }
        }
    }
    sotto_crypto::aead::seal(key, &query.aad(provider), &plain, rng)
        .map_err(|e| InferenceError::Seal(e.to_string()))
}

/// Appends one customer's entry: presence, then `width` values (zeros
/// when absent).
fn entry(plain: &mut Vec<u8>, values: Option<Vec<u64>>, width: usize) {
    match values {
        Some(v) => {
            plain.push(1);
            for x in v {
                plain.extend_from_slice(&x.to_le_bytes());
            }
        }
        None => plain.extend(std::iter::repeat_n(0, 1 + 8 * width)),
    }
}

/// One provider's opened answer: per customer, `None` where it does not
/// hold the customer, else its values (one partial result, or the share of
/// each model column).
pub type Partials = Vec<Option<Vec<u64>>>;

/// Opens `provider`'s sealed answer to `query`, `width` values per
/// customer (1 for partial results; the model's column count for rows).
pub fn open_partials(
    query: &PartialQuery,
    provider: &str,
    key: &SecretBytes<32>,
    sealed: &[u8],
    width: usize,
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
    let entry_len = 1 + 8 * width;
    if plain.len() != query.tags.len() * entry_len {
        return Err(malformed(format!(
            "{} bytes for {} customers of {width} values",
            plain.len(),
            query.tags.len()
        )));
    }
    plain
        .chunks_exact(entry_len)
        .map(|entry| match entry[0] {
            0 => Ok(None),
            1 => Ok(Some(
                entry[1..]
                    .chunks_exact(8)
                    .map(|b| {
                        let mut v = [0; 8];
                        v.copy_from_slice(b);
                        u64::from_le_bytes(v)
                    })
                    .collect(),
            )),
            other => Err(malformed(format!("presence byte {other}"))),
        })
        .collect()
}

/// Adds up every provider's answers (in declaration order, each named)
/// value by value in Z_2^64: `None` for a customer no provider holds.
pub fn reconstruct(
    answers: &[(String, Option<Partials>)],
) -> Result<Vec<Option<Vec<u64>>>, InferenceError> {
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
    let mut sums: Vec<Option<Vec<u64>>> = (*head).clone();
    for (provider, partials) in rest {
        for (position, (sum, part)) in sums.iter_mut().zip(partials.iter()).enumerate() {
            match (sum.as_mut(), part) {
                (Some(s), Some(p)) => {
                    for (a, b) in s.iter_mut().zip(p) {
                        *a = a.wrapping_add(*b);
                    }
                }
                (None, None) => {}
                _ => {
                    return Err(InferenceError::Inconsistent {
                        provider: (*provider).clone(),
                        first: (*first).clone(),
                        position,
                    })
                }
            }
        }
    }
    Ok(sums)
}

/// Every provider's partial results (in declaration order, each named)
/// combined into a linear model's scores: `None` for a customer no
/// provider holds.
pub fn combine(
    model: &LinearModel,
    answers: &[(String, Option<Partials>)],
) -> Result<Vec<Option<f64>>, InferenceError> {
    Ok(reconstruct(answers)?
        .into_iter()
        .map(|s| s.map(|s| model.score(s.first().copied().unwrap_or(0))))
        .collect())
}
