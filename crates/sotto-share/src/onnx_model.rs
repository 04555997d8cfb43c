//! General (ONNX) models over a dataset's joint table (docs/share.md): a
//! JSON descriptor naming the ONNX file and the joint columns the model
//! reads, in its input order. The digest the ledger registers binds the
//! descriptor's fields, the declaration and the file's bytes. Such a model
//! runs only inside the inference enclave, on rows reconstructed there from
//! every provider's share (the runtime, tract, lives in sotto-onnx); the
//! providers only see which columns to send.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sotto_crypto::hash::{sha256, FieldHasher};

use crate::dataset::Declaration;
use crate::model::{ModelError, ModelFile, MODEL_FORMAT};

/// The largest ONNX file accepted.
pub const MAX_ONNX_BYTES: usize = 64 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOnnx {
    format: u32,
    name: String,
    version: u64,
    kind: String,
    dataset: String,
    file: String,
    features: Vec<String>,
}

/// A checked ONNX model descriptor with its file's bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct OnnxSpec {
    /// The model's name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// The dataset it scores.
    pub dataset: String,
    /// The joint columns it reads, in input order.
    pub features: Vec<String>,
    /// Each feature's joint column index and scale.
    pub columns: Vec<(usize, u64)>,
    /// The ONNX file (relative paths are from the descriptor's directory).
    pub file: PathBuf,
    /// The file's bytes.
    pub bytes: Vec<u8>,
    /// The digest the ledger registers.
    pub digest: [u8; 32],
}

impl OnnxSpec {
    /// Parses a descriptor against `declaration` and reads its ONNX file.
    pub fn parse(path: &Path, text: &str, declaration: &Declaration) -> Result<Self, ModelError> {
        let (model_file, raw): (_, RawOnnx) = ModelFile::parse(path, text)?;
        let invalid = |field: &str, reason: String| model_file.invalid(field, reason);
        model_file.check_header(
            raw.format,
            &raw.name,
            raw.version,
            &raw.dataset,
            declaration,
        )?;
        if raw.kind != "onnx" {
            return Err(invalid("kind", format!("{:?} is not \"onnx\"", raw.kind)));
        }
        let scales = declaration.column_scales();
        let columns = model_file
            .columns(raw.features.iter().map(String::as_str), declaration)?
            .into_iter()
            .map(|c| (c, scales[c]))
            .collect();
        let file = path.parent().unwrap_or(Path::new(".")).join(&raw.file);
        let too_large = |len: u64| {
            invalid(
                "file",
                format!(
                    "{}: {len} bytes; an ONNX file has 1 to {MAX_ONNX_BYTES}",
                    file.display()
                ),
            )
        };
        let unreadable = |e: std::io::Error| invalid("file", format!("{}: {e}", file.display()));
        let len = std::fs::metadata(&file).map_err(unreadable)?.len();
        if len == 0 || len > MAX_ONNX_BYTES as u64 {
            return Err(too_large(len));
        }
        let bytes = std::fs::read(&file).map_err(unreadable)?;
        let mut h = FieldHasher::new("sotto/share/onnx-model/v1");
        h.field(&MODEL_FORMAT.to_be_bytes())
            .field(raw.name.as_bytes())
            .field(&raw.version.to_be_bytes())
            .field(&declaration.digest());
        for f in &raw.features {
            h.field(f.as_bytes());
        }
        h.field(&sha256(&bytes));
        Ok(Self {
            digest: h.finish(),
            name: raw.name,
            version: raw.version,
            dataset: raw.dataset,
            features: raw.features,
            columns,
            file,
            bytes,
        })
    }

    /// A reconstructed row (the model's columns, in Z_2^64 at their
    /// declared scales) as the model's float input.
    pub fn decode(&self, row: &[u64]) -> Vec<f32> {
        row.iter()
            .zip(&self.columns)
            .map(|(v, (_, scale))| ((*v as i64) as f64 / *scale as f64) as f32)
            .collect()
    }
}
