//! The gateway's audit trail (docs/share.md): each answered inference query
//! recorded once under its request id — who asked, which model, how many
//! ids, when, and a digest of the answer; never the ids or the scores.
//! Only the gateway records (the contract's callers); any caller reads.

use serde::Deserialize;
use serde_json::json;
use sotto_share::online::gateway::AuditRecord;

use super::{args, component, read_all, respond, Call, Contract, ContractError, State};

/// The most records one call may carry.
pub const MAX_RECORDS: usize = 1024;

/// The `queries` contract.
pub struct Queries;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordArgs {
    records: Vec<AuditRecord>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    request: String,
}

fn key(request: &str) -> Result<String, ContractError> {
    if request.len() != 32 || !request.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ContractError::BadArguments(
            "a request id is 32 hex digits".into(),
        ));
    }
    Ok(format!("query/{request}"))
}

impl Queries {
    fn record(call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        let a: RecordArgs = args(call)?;
        if a.records.is_empty() || a.records.len() > MAX_RECORDS {
            return Err(ContractError::BadArguments(format!(
                "record 1 to {MAX_RECORDS} queries per call"
            )));
        }
        let mut keys = Vec::with_capacity(a.records.len());
        for r in &a.records {
            component("user", &r.user)?;
            component("model", &r.model)?;
            if r.digest.len() != 64 || !r.digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ContractError::BadArguments(
                    "an answer digest is 64 hex digits".into(),
                ));
            }
            let at = key(&r.request)?;
            if keys.contains(&at) {
                return Err(ContractError::BadArguments(format!(
                    "query {} is listed twice",
                    r.request
                )));
            }
            keys.push(at);
        }
        let existing = read_all(state, &keys)?;
        if let Some(i) = existing.iter().position(Option::is_some) {
            return Err(ContractError::Refused(format!(
                "query {} is already recorded",
                a.records[i].request
            )));
        }
        for (r, at) in a.records.iter().zip(&keys) {
            let bytes = serde_json::to_vec(&json!({ "record": r, "gateway": call.client }))
                .map_err(|e| ContractError::Refused(e.to_string()))?;
            state.put(at, bytes)?;
        }
        respond(&json!({ "recorded": a.records.len() }))
    }

    fn get(call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        let a: GetArgs = args(call)?;
        let bytes = state.get(&key(&a.request)?)?.ok_or_else(|| {
            ContractError::Refused(format!("query {} is not recorded", a.request))
        })?;
        Ok(bytes)
    }
}

impl Contract for Queries {
    fn name(&self) -> &'static str {
        "queries"
    }

    fn version(&self) -> u32 {
        1
    }

    fn call(&self, call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        match call.function {
            "record" => Self::record(call, state),
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

    fn record(request: &str) -> serde_json::Value {
        json!({
            "request": request, "user": "new-lender", "model": "credit-score",
            "version": 1, "count": 3, "time": 1_790_000_000u64,
            "digest": "cd".repeat(32),
        })
    }

    #[test]
    fn a_query_is_recorded_once_and_read_back() {
        let mut state = MapState::default();
        let records = json!({ "records": [record(&"a1".repeat(16)), record(&"b2".repeat(16))] });
        let done = call(&Queries, &mut state, "gateway", "record", records);
        assert_eq!(done, Ok(json!({ "recorded": 2 })));
        let again = json!({ "records": [record(&"b2".repeat(16))] });
        assert_eq!(
            call(&Queries, &mut state, "gateway", "record", again),
            Err(ContractError::Refused(format!(
                "query {} is already recorded",
                "b2".repeat(16)
            )))
        );
        let got = call(
            &Queries,
            &mut state,
            "lender",
            "get",
            json!({ "request": "a1".repeat(16) }),
        )
        .expect("recorded");
        assert_eq!(got["record"], record(&"a1".repeat(16)));
        assert_eq!(got["gateway"], "gateway");
    }

    #[test]
    fn a_record_with_a_bad_field_is_refused() {
        let mut state = MapState::default();
        for (field, value) in [
            ("request", json!("abc")),
            ("digest", json!("zz")),
            ("user", json!("a/b")),
        ] {
            let mut r = record(&"a1".repeat(16));
            r[field] = value;
            let result = call(
                &Queries,
                &mut state,
                "gateway",
                "record",
                json!({ "records": [r] }),
            );
            assert!(
                matches!(result, Err(ContractError::BadArguments(_))),
                "{field}: {result:?}"
            );
        }
        let none = call(
            &Queries,
            &mut state,
            "gateway",
            "record",
            json!({ "records": [] }),
        );
        assert!(matches!(none, Err(ContractError::BadArguments(_))));
        assert!(state.0.is_empty());
    }
}
