//! Contracts: deterministic code that runs inside the compute enclave (so
//! the enclave measurement covers it), reading and writing state only
//! through [`State`], with no clock, randomness or I/O beyond the call.
//! Each has a name and a version that block 0 must name too.

mod credit;
mod fragments;
mod kv;
mod models;
mod queries;

pub use credit::CreditRecords;
pub use fragments::Fragments;
pub use kv::KvRegistry;
pub use models::{Models, Registration};
pub use queries::{Queries, MAX_RECORDS as MAX_QUERY_RECORDS};

/// One call of a contract function.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    /// The function.
    pub function: &'a str,
    /// Its arguments (JSON).
    pub args: &'a [u8],
    /// The calling client, as block 0 names it.
    pub client: &'a str,
}

/// State as a contract sees it: named keys in the contract's own space.
pub trait State {
    /// The value of `key`, if any.
    fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, ContractError>;
    /// Sets `key`.
    fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), ContractError>;
    /// Deletes `key`.
    fn delete(&mut self, key: &str) -> Result<(), ContractError>;
}

/// A contract.
pub trait Contract: Send + Sync {
    /// Its name.
    fn name(&self) -> &'static str;
    /// Its version.
    fn version(&self) -> u32;
    /// Runs one call; returns the response to the client (JSON).
    fn call(&self, call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError>;
}

/// Why a call did not produce a result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// The contract has no such function.
    #[error("the contract has no function {0:?}")]
    UnknownFunction(String),
    /// The arguments do not fit the function.
    #[error("bad arguments: {0}")]
    BadArguments(String),
    /// The call breaks a rule of the contract.
    #[error("refused: {0}")]
    Refused(String),
    /// The state of a key is not loaded yet (the compute engine fetches it
    /// and runs the call again).
    #[error("state of a key is not loaded")]
    NotLoaded,
}

/// The contracts this build's enclave carries.
pub fn builtin() -> Vec<Box<dyn Contract>> {
    vec![
        Box::new(KvRegistry),
        Box::new(CreditRecords),
        Box::new(Fragments),
        Box::new(Models),
        Box::new(Queries),
    ]
}

/// Parses a call's JSON arguments.
fn args<T: serde::de::DeserializeOwned>(call: &Call<'_>) -> Result<T, ContractError> {
    serde_json::from_slice(call.args)
        .map_err(|e| ContractError::BadArguments(format!("{}: {e}", call.function)))
}

/// Encodes a response.
fn respond(value: &serde_json::Value) -> Result<Vec<u8>, ContractError> {
    serde_json::to_vec(value).map_err(|e| ContractError::Refused(format!("response: {e}")))
}

/// A key component: non-empty, at most 128 characters, no '/'.
fn component<'a>(what: &str, value: &'a str) -> Result<&'a str, ContractError> {
    if value.is_empty() || value.len() > 128 || value.contains('/') {
        return Err(ContractError::BadArguments(format!(
            "{what} must be 1 to 128 characters without '/'"
        )));
    }
    Ok(value)
}

/// Reads every key before giving up on one that is not loaded yet, so the
/// compute enclave fetches them all in one round.
pub(crate) fn read_all(
    state: &mut dyn State,
    keys: &[String],
) -> Result<Vec<Option<Vec<u8>>>, ContractError> {
    let mut values = Vec::with_capacity(keys.len());
    let mut missing = false;
    for key in keys {
        match state.get(key) {
            Ok(value) => values.push(value),
            Err(ContractError::NotLoaded) => missing = true,
            Err(e) => return Err(e),
        }
    }
    if missing {
        return Err(ContractError::NotLoaded);
    }
    Ok(values)
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use serde_json::{json, Value};

    use super::*;

    /// State in a map, for contract unit tests.
    #[derive(Default)]
    pub struct MapState(pub HashMap<String, Vec<u8>>);

    impl State for MapState {
        fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, ContractError> {
            Ok(self.0.get(key).cloned())
        }

        fn put(&mut self, key: &str, value: Vec<u8>) -> Result<(), ContractError> {
            self.0.insert(key.to_owned(), value);
            Ok(())
        }

        fn delete(&mut self, key: &str) -> Result<(), ContractError> {
            self.0.remove(key);
            Ok(())
        }
    }

    /// Calls `contract` as `client`.
    pub fn call(
        contract: &dyn Contract,
        state: &mut MapState,
        client: &str,
        function: &str,
        args: Value,
    ) -> Result<Value, ContractError> {
        let args = args.to_string();
        let call = Call {
            function,
            args: args.as_bytes(),
            client,
        };
        contract
            .call(&call, state)
            .map(|r| serde_json::from_slice(&r).unwrap_or(Value::Null))
    }

    #[test]
    fn kv_entries_belong_to_the_client_that_made_them() {
        let kv = KvRegistry;
        let mut state = MapState::default();
        let put = |state: &mut MapState, client: &str, value: &str| {
            call(
                &kv,
                state,
                client,
                "put",
                json!({"key": "k", "value": value}),
            )
        };
        assert_eq!(
            put(&mut state, "bank-a", "1"),
            Ok(json!({"key": "k", "replaced": false}))
        );
        assert_eq!(
            put(&mut state, "bank-a", "2"),
            Ok(json!({"key": "k", "replaced": true}))
        );
        assert_eq!(
            put(&mut state, "bank-b", "3"),
            Err(ContractError::Refused(
                "k belongs to another client; only its owner may change it".into()
            ))
        );
        let get = call(&kv, &mut state, "bank-b", "get", json!({"key": "k"}));
        assert_eq!(get, Ok(json!({"key": "k", "value": "2"})));
        let delete = call(&kv, &mut state, "bank-b", "delete", json!({"key": "k"}));
        assert!(matches!(delete, Err(ContractError::Refused(_))));
        let delete = call(&kv, &mut state, "bank-a", "delete", json!({"key": "k"}));
        assert_eq!(delete, Ok(json!({"key": "k", "deleted": true})));
        assert!(state.0.is_empty());
    }

    #[test]
    fn bad_arguments_and_unknown_functions_are_named() {
        let mut state = MapState::default();
        let err = call(
            &KvRegistry,
            &mut state,
            "a",
            "put",
            json!({"key": "a/b", "value": "v"}),
        );
        assert_eq!(
            err,
            Err(ContractError::BadArguments(
                "key must be 1 to 128 characters without '/'".into()
            ))
        );
        let err = call(&KvRegistry, &mut state, "a", "put", json!({"key": "k"}));
        assert!(
            matches!(err, Err(ContractError::BadArguments(r)) if r.contains("missing field `value`"))
        );
        let err = call(&CreditRecords, &mut state, "a", "burn", json!({}));
        assert_eq!(err, Err(ContractError::UnknownFunction("burn".into())));
    }

    #[test]
    fn credit_loans_are_unique_and_repayments_bounded() {
        let credit = CreditRecords;
        let mut state = MapState::default();
        let loan = json!({"customer": "c", "loan": "l", "amount": 10});
        assert!(call(&credit, &mut state, "a", "loan", loan.clone()).is_ok());
        assert_eq!(
            call(&credit, &mut state, "a", "loan", loan),
            Err(ContractError::Refused("loan l is already recorded".into()))
        );
        let repay = |state: &mut MapState, client: &str, customer: &str, amount: u64| {
            call(
                &credit,
                state,
                client,
                "repay",
                json!({"customer": customer, "loan": "l", "amount": amount}),
            )
        };
        assert!(
            matches!(repay(&mut state, "b", "c", 1), Err(ContractError::Refused(r)) if r.contains("not recorded by this institution"))
        );
        assert!(
            matches!(repay(&mut state, "a", "d", 1), Err(ContractError::Refused(r)) if r.contains("not a loan of this customer"))
        );
        assert_eq!(
            repay(&mut state, "a", "c", 10),
            Ok(json!({"loan": "l", "outstanding": 0}))
        );
        let zero = call(
            &credit,
            &mut state,
            "a",
            "loan",
            json!({"customer": "c", "loan": "m", "amount": 0}),
        );
        assert!(matches!(zero, Err(ContractError::BadArguments(_))));
        let total = call(
            &credit,
            &mut state,
            "b",
            "exposure",
            json!({"customer": "c"}),
        );
        assert_eq!(
            total,
            Ok(json!({"customer": "c", "total": 0, "lenders": 0}))
        );
    }
}
