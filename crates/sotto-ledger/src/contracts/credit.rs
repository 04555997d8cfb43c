//! Credit records across institutions: a lender records a loan and its
//! repayments; any allowed caller asks a customer's total exposure across
//! every institution, and learns the total and the number of lenders, not
//! who lent how much. Amounts are integers in minor units.

use serde::Deserialize;
use serde_json::json;

use super::{args, component, respond, Call, Contract, ContractError, State};

/// The largest amount of one loan or repayment (10^15 minor units).
pub const MAX_AMOUNT: u64 = 1_000_000_000_000_000;

/// The `credit` contract.
pub struct CreditRecords;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoanArgs {
    customer: String,
    loan: String,
    amount: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerArgs {
    customer: String,
}

fn amount(value: u64) -> Result<u64, ContractError> {
    if value == 0 || value > MAX_AMOUNT {
        return Err(ContractError::BadArguments(format!(
            "amount must be between 1 and {MAX_AMOUNT} minor units"
        )));
    }
    Ok(value)
}

fn read_u64(state: &mut dyn State, key: &str) -> Result<Option<u64>, ContractError> {
    match state.get(key)? {
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| ContractError::Refused(format!("stored amount at {key} is damaged"))),
        None => Ok(None),
    }
}

fn lenders(state: &mut dyn State, customer: &str) -> Result<Vec<String>, ContractError> {
    match state.get(&format!("lenders/{customer}"))? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ContractError::Refused(format!("stored lender list is damaged: {e}"))),
        None => Ok(Vec::new()),
    }
}

impl CreditRecords {
    fn loan(call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        let a: LoanArgs = args(call)?;
        let customer = component("customer", &a.customer)?;
        let loan = component("loan", &a.loan)?;
        let value = amount(a.amount)?;
        let loan_key = format!("loan/{}/{loan}", call.client);
        if state.get(&loan_key)?.is_some() {
            return Err(ContractError::Refused(format!(
                "loan {loan} is already recorded"
            )));
        }
        state.put(&loan_key, format!("{customer}/{value}").into_bytes())?;
        let exposure_key = format!("exposure/{customer}/{}", call.client);
        let exposure = read_u64(state, &exposure_key)?
            .unwrap_or(0)
            .saturating_add(value);
        state.put(&exposure_key, exposure.to_string().into_bytes())?;
        let mut list = lenders(state, customer)?;
        if !list.iter().any(|l| l == call.client) {
            list.push(call.client.to_owned());
            let bytes =
                serde_json::to_vec(&list).map_err(|e| ContractError::Refused(e.to_string()))?;
            state.put(&format!("lenders/{customer}"), bytes)?;
        }
        respond(&json!({ "loan": loan, "outstanding": value }))
    }

    fn repay(call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        let a: LoanArgs = args(call)?;
        let customer = component("customer", &a.customer)?;
        let loan = component("loan", &a.loan)?;
        let value = amount(a.amount)?;
        let loan_key = format!("loan/{}/{loan}", call.client);
        let stored = state.get(&loan_key)?.ok_or_else(|| {
            ContractError::Refused(format!("loan {loan} is not recorded by this institution"))
        })?;
        let stored = String::from_utf8_lossy(&stored).into_owned();
        let (owner, outstanding) = stored
            .rsplit_once('/')
            .and_then(|(c, n)| n.parse::<u64>().ok().map(|n| (c.to_owned(), n)))
            .ok_or_else(|| ContractError::Refused(format!("stored loan {loan} is damaged")))?;
        if owner != customer {
            return Err(ContractError::Refused(format!(
                "loan {loan} is not a loan of this customer"
            )));
        }
        let left = outstanding.checked_sub(value).ok_or_else(|| {
            ContractError::Refused(format!(
                "repayment {value} exceeds the outstanding {outstanding}"
            ))
        })?;
        state.put(&loan_key, format!("{customer}/{left}").into_bytes())?;
        let exposure_key = format!("exposure/{customer}/{}", call.client);
        let exposure = read_u64(state, &exposure_key)?
            .unwrap_or(0)
            .saturating_sub(value);
        state.put(&exposure_key, exposure.to_string().into_bytes())?;
        respond(&json!({ "loan": loan, "outstanding": left }))
    }

    fn exposure(call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        let a: CustomerArgs = args(call)?;
        let customer = component("customer", &a.customer)?;
        let mut total: u64 = 0;
        let mut lending = 0;
        for lender in lenders(state, customer)? {
            let owed = read_u64(state, &format!("exposure/{customer}/{lender}"))?.unwrap_or(0);
            if owed > 0 {
                lending += 1;
            }
            total = total.saturating_add(owed);
        }
        respond(&json!({ "customer": customer, "total": total, "lenders": lending }))
    }
}

impl Contract for CreditRecords {
    fn name(&self) -> &'static str {
        "credit"
    }

    fn version(&self) -> u32 {
        1
    }

    fn call(&self, call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        match call.function {
            "loan" => Self::loan(call, state),
            "repay" => Self::repay(call, state),
            "exposure" => Self::exposure(call, state),
            other => Err(ContractError::UnknownFunction(other.to_owned())),
        }
    }
}
