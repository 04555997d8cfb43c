//! A private key-value registry: an allowed caller puts, gets and deletes
//! values; the client that created an entry owns it, and only the owner
//! may replace or delete it.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{args, component, respond, Call, Contract, ContractError, State};

/// The `kv` contract.
pub struct KvRegistry;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyArgs {
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutArgs {
    key: String,
    value: String,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    owner: String,
    value: String,
}

fn entry(state: &mut dyn State, key: &str) -> Result<Option<Entry>, ContractError> {
    match state.get(&format!("entry/{key}"))? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| ContractError::Refused(format!("stored entry {key} is damaged: {e}"))),
        None => Ok(None),
    }
}

fn owned(state: &mut dyn State, key: &str, client: &str) -> Result<bool, ContractError> {
    match entry(state, key)? {
        Some(e) if e.owner != client => Err(ContractError::Refused(format!(
            "{key} belongs to another client; only its owner may change it"
        ))),
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

impl Contract for KvRegistry {
    fn name(&self) -> &'static str {
        "kv"
    }

    fn version(&self) -> u32 {
        1
    }

    fn call(&self, call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        match call.function {
            "put" => {
                let a: PutArgs = args(call)?;
                let key = component("key", &a.key)?;
                let replaced = owned(state, key, call.client)?;
                let stored = Entry {
                    owner: call.client.to_owned(),
                    value: a.value,
                };
                let bytes = serde_json::to_vec(&stored)
                    .map_err(|e| ContractError::Refused(e.to_string()))?;
                state.put(&format!("entry/{key}"), bytes)?;
                respond(&json!({ "key": key, "replaced": replaced }))
            }
            "get" => {
                let a: KeyArgs = args(call)?;
                let key = component("key", &a.key)?;
                let value = entry(state, key)?.map(|e| e.value);
                respond(&json!({ "key": key, "value": value }))
            }
            "delete" => {
                let a: KeyArgs = args(call)?;
                let key = component("key", &a.key)?;
                let existed = owned(state, key, call.client)?;
                if existed {
                    state.delete(&format!("entry/{key}"))?;
                }
                respond(&json!({ "key": key, "deleted": existed }))
            }
            other => Err(ContractError::UnknownFunction(other.to_owned())),
        }
    }
}
