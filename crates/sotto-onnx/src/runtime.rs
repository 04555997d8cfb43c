//! An ONNX binary classifier (ONNX-ML tree ensembles, linear classifiers,
//! as scikit-learn exports them with skl2onnx, zipmap off) loaded with
//! tract for a fixed number of input features, giving the probability of
//! class 1 for each row.

use tract_onnx::prelude::*;

/// Why a model did not load or run.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The bytes are not an ONNX model tract can run with this input.
    #[error("the ONNX model does not load: {0}")]
    Load(String),
    /// The model ran but its output is not a binary classifier's.
    #[error("the ONNX model's output is not a binary classifier's probabilities: {0}")]
    Output(String),
    /// A row does not have the model's feature count.
    #[error("a row has {got} features; the model reads {expected}")]
    Width {
        /// The model's feature count.
        expected: usize,
        /// The row's.
        got: usize,
    },
}

type Plan = Arc<TypedRunnableModel>;

/// A loaded, optimized model for rows of `features` values.
pub struct OnnxModel {
    plan: Plan,
    features: usize,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel")
            .field("features", &self.features)
            .finish_non_exhaustive()
    }
}

impl OnnxModel {
    /// Loads `bytes` for input rows of `features` values (one row per run).
    pub fn load(bytes: &[u8], features: usize) -> Result<Self, OnnxError> {
        let load = |e: TractError| OnnxError::Load(format!("{e:#}"));
        let plan = tract_onnx::onnx()
            .model_for_read(&mut &bytes[..])
            .map_err(load)?
            .with_input_fact(0, f32::fact([1, features]).into())
            .map_err(load)?
            .into_optimized()
            .map_err(load)?
            .into_runnable()
            .map_err(load)?;
        Ok(Self { plan, features })
    }

    /// The feature count the model reads.
    pub fn features(&self) -> usize {
        self.features
    }

    /// The probability of class 1 for `row`.
    pub fn probability(&self, row: &[f32]) -> Result<f32, OnnxError> {
        if row.len() != self.features {
            return Err(OnnxError::Width {
                expected: self.features,
                got: row.len(),
            });
        }
        let input = tract_ndarray::Array2::from_shape_vec((1, self.features), row.to_vec())
            .map_err(|e| OnnxError::Output(e.to_string()))?;
        let output = |e: TractError| OnnxError::Output(format!("{e:#}"));
        let outputs = self
            .plan
            .run(tvec!(Tensor::from(input).into()))
            .map_err(output)?;
        let probabilities = outputs
            .get(1)
            .ok_or_else(|| OnnxError::Output("no second output (probabilities)".into()))?
            .to_plain_array_view::<f32>()
            .map_err(output)?;
        probabilities
            .iter()
            .nth(1)
            .copied()
            .ok_or_else(|| OnnxError::Output("fewer than two class probabilities".into()))
    }
}
