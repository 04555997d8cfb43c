//! The model registry (docs/share.md): a model's name, version, digest,
//! kind, dataset and feature columns, registered once under the contract's
//! endorsement policy; any allowed caller reads a registration. Inference
//! nodes refuse a model whose digest is not the registered one. The model's
//! weights never reach the ledger.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{args, component, respond, Call, Contract, ContractError, State};

/// The most feature columns a registration may name.
pub const MAX_FEATURES: usize = 4096;

/// The `models` contract.
pub struct Models;

/// A model as the ledger registers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The model's name.
    pub name: String,
    /// Its version.
    pub version: u64,
    /// Its digest (64 hex digits).
    pub digest: String,
    /// Its kind (`linear`, `logistic`, `onnx`).
    pub kind: String,
    /// The dataset it scores.
    pub dataset: String,
    /// The joint table's columns it reads, in order.
    pub features: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    name: String,
    version: u64,
}

fn key(name: &str, version: u64) -> Result<String, ContractError> {
    Ok(format!("model/{}/{version}", component("name", name)?))
}

impl Models {
    fn register(call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        let r: Registration = args(call)?;
        let bad = |what: &str| ContractError::BadArguments(what.to_owned());
        component("dataset", &r.dataset)?;
        if r.version == 0 {
            return Err(bad("versions start at 1"));
        }
        if r.digest.len() != 64 || !r.digest.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("the digest is 64 hex digits"));
        }
        if !["linear", "logistic", "onnx"].contains(&r.kind.as_str()) {
            return Err(bad("kind is linear, logistic or onnx"));
        }
        if r.features.is_empty() || r.features.len() > MAX_FEATURES {
            return Err(bad("name 1 to 4096 feature columns"));
        }
        let at = key(&r.name, r.version)?;
        if state.get(&at)?.is_some() {
            return Err(ContractError::Refused(format!(
                "model {} version {} is already registered; register a new version",
                r.name, r.version
            )));
        }
        let record = Record {
            registration: r.clone(),
            registered_by: call.client.to_owned(),
        };
        let bytes =
            serde_json::to_vec(&record).map_err(|e| ContractError::Refused(e.to_string()))?;
        state.put(&at, bytes)?;
        respond(&json!({ "name": r.name, "version": r.version, "digest": r.digest }))
    }

    fn get(call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        let a: GetArgs = args(call)?;
        let bytes = state.get(&key(&a.name, a.version)?)?.ok_or_else(|| {
            ContractError::Refused(format!(
                "model {} version {} is not registered",
                a.name, a.version
            ))
        })?;
        let record: Record = serde_json::from_slice(&bytes)
            .map_err(|e| ContractError::Refused(format!("stored registration is damaged: {e}")))?;
        respond(&json!({
            "registration": record.registration,
            "registered_by": record.registered_by,
        }))
    }
}

#[derive(Serialize, Deserialize)]
struct Record {
    registration: Registration,
    registered_by: String,
}

impl Contract for Models {
    fn name(&self) -> &'static str {
        "models"
    }

    fn version(&self) -> u32 {
        1
    }

    fn call(&self, call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        match call.function {
            "register" => Self::register(call, state),
            "get" => Self::get(call, state),
            other => Err(ContractError::UnknownFunction(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::contracts::tests::{call, MapState};

    fn registration() -> serde_json::Value {
        json!({
            "name": "credit-score", "version": 3, "digest": "ab".repeat(32),
            "kind": "logistic", "dataset": "credit-features",
            "features": ["lender.debt", "telecom.tenure_months"],
        })
    }

    #[test]
    fn a_model_version_is_registered_once_and_read_back() {
        let mut state = MapState::default();
        let first = call(&Models, &mut state, "lender", "register", registration());
        assert!(first.is_ok(), "{first:?}");
        assert_eq!(
            call(&Models, &mut state, "telecom", "register", registration()),
            Err(ContractError::Refused(
                "model credit-score version 3 is already registered; register a new version".into()
            ))
        );
        let got = call(
            &Models,
            &mut state,
            "insurer",
            "get",
            json!({"name": "credit-score", "version": 3}),
        )
        .expect("registered");
        assert_eq!(got["registration"], registration());
        assert_eq!(got["registered_by"], "lender");
        assert!(matches!(
            call(&Models, &mut state, "insurer", "get", json!({"name": "credit-score", "version": 4})),
            Err(ContractError::Refused(r)) if r.contains("is not registered")
        ));
    }

    #[test]
    fn a_registration_with_a_bad_field_is_refused() {
        let mut state = MapState::default();
        for (field, value) in [
            ("digest", json!("abc")),
            ("kind", json!("tree")),
            ("version", json!(0)),
            ("features", json!([])),
            ("name", json!("a/b")),
        ] {
            let mut r = registration();
            r[field] = value;
            assert!(
                matches!(
                    call(&Models, &mut state, "lender", "register", r),
                    Err(ContractError::BadArguments(_))
                ),
                "{field}"
            );
        }
        assert!(state.0.is_empty());
    }
}
