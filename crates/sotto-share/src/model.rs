//! Linear models over a dataset's joint table, in a JSON form the
//! consortium registers, evaluated on shares: score = Σ w·x + b, then for a
//! logistic model the logistic function. Each provider computes `w · s_j`
//! on its fused share in Z_2^64; the partial results add up to `w · x` at a
//! fixed point, so no party sees a customer's feature vector.
//!
//! Fixed point: a weight is exact at [`WEIGHT_SCALE`] (six decimals). A
//! column stored at scale `s` gets the integer multiplier
//! `weight × WEIGHT_SCALE × (S / s)` with `S` the largest column scale, so
//! that every term is at the common scale `WEIGHT_SCALE × S` and the sum
//! divides once. The model is refused if the declared ranges could make
//! the sum leave the signed 64-bit range.

use std::path::Path;

use serde::Deserialize;
use sotto_agg::fixed;
use sotto_crypto::hash::FieldHasher;

use crate::dataset::{check_name, Declaration};
use crate::fuse::FusedShare;
use crate::onnx_model::OnnxSpec;

/// The model format this build reads.
pub const MODEL_FORMAT: u32 = 1;
/// Weights and the intercept are exact at this scale.
pub const WEIGHT_SCALE: u64 = 1_000_000;

/// Why a model was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The file cannot be read.
    #[error("{path}: cannot read the model: {reason}")]
    Read {
        /// The file.
        path: String,
        /// What failed.
        reason: String,
    },
    /// The file is not the expected JSON.
    #[error("{path}: {reason}")]
    Syntax {
        /// The file.
        path: String,
        /// What the JSON parser said, with line and column.
        reason: String,
    },
    /// The JSON is well formed but not a usable model.
    #[error("{path}: {field}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// The field at fault.
        field: String,
        /// What is wrong and what to do.
        reason: String,
    },
}

/// What the score goes through after the linear part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    /// The linear score itself.
    Identity,
    /// `1 / (1 + e^-z)`.
    Logistic,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    format: u32,
    name: String,
    version: u64,
    kind: String,
    dataset: String,
    intercept: String,
    features: Vec<RawFeature>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    column: String,
    weight: String,
}

/// A model file being checked: its name for errors, and the checks every
/// kind of model shares.
pub(crate) struct ModelFile(String);

impl ModelFile {
    /// Parses the JSON of the model file at `path`.
    pub(crate) fn parse<T: serde::de::DeserializeOwned>(
        path: &Path,
        text: &str,
    ) -> Result<(Self, T), ModelError> {
        let shown = path.display().to_string();
        let raw = serde_json::from_str(text).map_err(|e| ModelError::Syntax {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Ok((Self(shown), raw))
    }

    /// `field` of this file is wrong for `reason`.
    pub(crate) fn invalid(&self, field: &str, reason: String) -> ModelError {
        ModelError::Invalid {
            path: self.0.clone(),
            field: field.to_owned(),
            reason,
        }
    }

    /// The format, name, version and dataset every model file has.
    pub(crate) fn check_header(
        &self,
        format: u32,
        name: &str,
        version: u64,
        dataset: &str,
        declaration: &Declaration,
    ) -> Result<(), ModelError> {
        if format != MODEL_FORMAT {
            return Err(self.invalid("format", format!("format {format} is not {MODEL_FORMAT}")));
        }
        check_name("model", name).map_err(|e| self.invalid("name", e))?;
        if version == 0 {
            return Err(self.invalid("version", "versions start at 1".into()));
        }
        if dataset != declaration.dataset.as_str() {
            return Err(self.invalid(
                "dataset",
                format!(
                    "the model is for {dataset}, the declaration is {}",
                    declaration.dataset
                ),
            ));
        }
        Ok(())
    }

    /// The joint column index of each named feature: at least one, each
    /// a column of `declaration`, none twice.
    pub(crate) fn columns<'c>(
        &self,
        features: impl Iterator<Item = &'c str>,
        declaration: &Declaration,
    ) -> Result<Vec<usize>, ModelError> {
        let names = declaration.column_names();
        let mut columns = Vec::new();
        for (i, f) in features.enumerate() {
            let field = format!("features[{i}] ({f})");
            let column = names.iter().position(|n| n == f).ok_or_else(|| {
                self.invalid(
                    &field,
                    format!(
                        "no such column in {}; columns are {}",
                        declaration.dataset,
                        names.join(", ")
                    ),
                )
            })?;
            if columns.contains(&column) {
                return Err(self.invalid(&field, "the column is named twice".into()));
            }
            columns.push(column);
        }
        if columns.is_empty() {
            return Err(self.invalid("features", "name at least one feature".into()));
        }
        Ok(columns)
    }
}

/// A checked linear model, bound to one dataset declaration's columns.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearModel {
    /// The model's name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// Its link function.
    pub link: Link,
    /// The intercept, at [`WEIGHT_SCALE`].
    pub intercept: i64,
    /// The digest the ledger registers.
    pub digest: [u8; 32],
    /// The dataset it scores.
    pub dataset: String,
    /// The joint table's columns it reads, in the file's order.
    pub features: Vec<String>,
    multipliers: Vec<u64>,
    common_scale: f64,
}

impl LinearModel {
    /// Parses and checks model JSON against `declaration`; `path` is only
    /// for errors.
    pub fn parse(path: &Path, text: &str, declaration: &Declaration) -> Result<Self, ModelError> {
        let (file, raw): (_, RawModel) = ModelFile::parse(path, text)?;
        let invalid = |field: &str, reason: String| file.invalid(field, reason);
        file.check_header(
            raw.format,
            &raw.name,
            raw.version,
            &raw.dataset,
            declaration,
        )?;
        let link = match raw.kind.as_str() {
            "linear" => Link::Identity,
            "logistic" => Link::Logistic,
            other => {
                return Err(invalid(
                    "kind",
                    format!(
                        "{other:?} is not \"linear\" or \"logistic\" (other models run as ONNX)"
                    ),
                ))
            }
        };
        let intercept = fixed::parse(&raw.intercept, WEIGHT_SCALE)
            .map_err(|e| invalid("intercept", format!("{:?}: {e}", raw.intercept)))?;
        let columns = file.columns(raw.features.iter().map(|f| f.column.as_str()), declaration)?;
        let limits = column_limits(declaration);
        let common = limits.iter().map(|(scale, _)| *scale).max().unwrap_or(1);
        let mut multipliers = vec![0u64; limits.len()];
        let mut bound: i128 = 0;
        for (i, (f, column)) in raw.features.iter().zip(columns).enumerate() {
            let field = format!("features[{i}] ({})", f.column);
            let weight = fixed::parse(&f.weight, WEIGHT_SCALE)
                .map_err(|e| invalid(&field, format!("weight {:?}: {e}", f.weight)))?;
            let (scale, largest) = limits[column];
            let multiplier = i128::from(weight) * i128::from(common / scale);
            bound += multiplier.abs() * largest;
            multipliers[column] = i64::try_from(multiplier)
                .map_err(|_| invalid(&field, "weight too large for this column's scale".into()))?
                as u64;
        }
        if bound >= 1i128 << 63 {
            return Err(invalid(
                "features",
                "the weights times the declared ranges could overflow 64 bits; narrow the ranges or the weights".into(),
            ));
        }
        let mut model = Self {
            name: raw.name,
            version: raw.version,
            link,
            intercept,
            digest: [0; 32],
            dataset: raw.dataset,
            features: raw.features.into_iter().map(|f| f.column).collect(),
            multipliers,
            common_scale: (WEIGHT_SCALE as f64) * (common as f64),
        };
        model.digest = model.compute_digest(declaration);
        Ok(model)
    }

    fn compute_digest(&self, declaration: &Declaration) -> [u8; 32] {
        let mut h = FieldHasher::new("sotto/share/linear-model/v1");
        h.field(&MODEL_FORMAT.to_be_bytes())
            .field(self.name.as_bytes())
            .field(&self.version.to_be_bytes())
            .field(&[u8::from(self.link == Link::Logistic)])
            .field(&declaration.digest())
            .field(&self.intercept.to_be_bytes());
        for m in &self.multipliers {
            h.field(&m.to_be_bytes());
        }
        h.finish()
    }

    /// The kind the ledger registers.
    pub fn kind(&self) -> &'static str {
        match self.link {
            Link::Identity => "linear",
            Link::Logistic => "logistic",
        }
    }

    /// The integer weights per joint column, in Z_2^64.
    pub fn weights(&self) -> &[u64] {
        &self.multipliers
    }

    /// This provider's partial result for customer `tag`: `w · s_j` on
    /// its fused share (none for a customer nobody has).
    pub fn partial(&self, share: &FusedShare, tag: &[u8; 32]) -> Option<u64> {
        share.dot(tag, &self.multipliers)
    }

    /// The score from the sum of every provider's partial result.
    pub fn score(&self, partials_sum: u64) -> f64 {
        let linear = (partials_sum as i64) as f64 / self.common_scale
            + self.intercept as f64 / WEIGHT_SCALE as f64;
        match self.link {
            Link::Identity => linear,
            Link::Logistic => 1.0 / (1.0 + (-linear).exp()),
        }
    }
}

/// Each joint column's scale and the largest magnitude it may hold
/// (presence columns: scale 1, at most 1).
fn column_limits(declaration: &Declaration) -> Vec<(u64, i128)> {
    let mut limits = Vec::with_capacity(declaration.width());
    for p in &declaration.providers {
        limits.extend(p.columns.iter().map(|c| {
            let largest = i128::from(c.min).abs().max(i128::from(c.max).abs());
            (c.scale, largest)
        }));
        limits.push((1, 1));
    }
    limits
}

/// A model of either kind, as the registry and the inference parties see
/// it.
#[derive(Clone, Debug, PartialEq)]
pub enum Model {
    /// Evaluated on shares: each provider answers `w · s_j`.
    Linear(LinearModel),
    /// Evaluated in the inference enclave on rows reconstructed there.
    Onnx(OnnxSpec),
}

#[derive(Deserialize)]
struct KindOnly {
    kind: Option<String>,
}

impl Model {
    /// Reads a model file (its `kind` decides which) against `declaration`.
    pub fn read(path: &Path, declaration: &Declaration) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|e| ModelError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let kind = serde_json::from_str::<KindOnly>(&text)
            .ok()
            .and_then(|k| k.kind);
        if kind.as_deref() == Some("onnx") {
            Ok(Self::Onnx(OnnxSpec::parse(path, &text, declaration)?))
        } else {
            Ok(Self::Linear(LinearModel::parse(path, &text, declaration)?))
        }
    }

    /// The model's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Linear(m) => &m.name,
            Self::Onnx(m) => &m.name,
        }
    }

    /// Its version.
    pub fn version(&self) -> u64 {
        match self {
            Self::Linear(m) => m.version,
            Self::Onnx(m) => m.version,
        }
    }

    /// The digest the ledger registers.
    pub fn digest(&self) -> [u8; 32] {
        match self {
            Self::Linear(m) => m.digest,
            Self::Onnx(m) => m.digest,
        }
    }

    /// The kind the ledger registers.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Linear(m) => m.kind(),
            Self::Onnx(_) => "onnx",
        }
    }

    /// The dataset it scores.
    pub fn dataset(&self) -> &str {
        match self {
            Self::Linear(m) => &m.dataset,
            Self::Onnx(m) => &m.dataset,
        }
    }

    /// The joint columns it reads.
    pub fn features(&self) -> &[String] {
        match self {
            Self::Linear(m) => &m.features,
            Self::Onnx(m) => &m.features,
        }
    }
}
