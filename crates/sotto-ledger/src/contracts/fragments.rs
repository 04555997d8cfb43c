//! Fragments of secret-shared datasets (docs/share.md): a provider posts
//! each sealed chunk of the shares it made for another provider; a chunk is
//! written once, by the provider it comes from; only its recipient fetches
//! it; anyone allowed asks which providers' fragments of a dataset version
//! are complete. The contract sees chunk headers, never shares: chunks are
//! sealed to their recipient's enclave key.

use base64::Engine as _;
use prost::Message;
use serde::Deserialize;
use serde_json::json;
use sotto_share::{ChunkHeader, SealedChunk};

use super::{args, component, read_all, respond, Call, Contract, ContractError, State};

/// The most providers a status call may name.
pub const MAX_STATUS_PROVIDERS: usize = 16;
/// The most chunks one fragment may have.
pub const MAX_CHUNKS: u32 = 4096;

/// The `fragments` contract.
pub struct Fragments;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutArgs {
    /// The encoded [`SealedChunk`], base64.
    chunk: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetArgs {
    dataset: String,
    version: u64,
    sender: String,
    index: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusArgs {
    dataset: String,
    version: u64,
    providers: Vec<String>,
}

/// The keys of one chunk: its sealed bytes, and a small marker that it is
/// posted (read instead of the chunk itself).
fn chunk_keys(
    dataset: &str,
    version: u64,
    sender: &str,
    recipient: &str,
    index: u32,
) -> Result<(String, String), ContractError> {
    let at = format!(
        "{}/{index}",
        fragment_at(dataset, version, sender, recipient)?
    );
    Ok((format!("chunk/{at}"), format!("placed/{at}")))
}

/// Where one fragment (sender to recipient) is, under the contract's keys.
fn fragment_at(
    dataset: &str,
    version: u64,
    sender: &str,
    recipient: &str,
) -> Result<String, ContractError> {
    let dataset = component("dataset", dataset)?;
    let sender = component("sender", sender)?;
    let recipient = component("recipient", recipient)?;
    Ok(format!("{dataset}/{version}/{sender}/{recipient}"))
}

/// A fragment's progress: its chunk count and how many are posted.
#[derive(serde::Serialize, Deserialize)]
struct Progress {
    count: u32,
    posted: u32,
}

fn progress(bytes: Option<Vec<u8>>) -> Result<Option<Progress>, ContractError> {
    bytes
        .map(|b| {
            serde_json::from_slice(&b).map_err(|e| {
                ContractError::Refused(format!("stored fragment progress is damaged: {e}"))
            })
        })
        .transpose()
}

fn base64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl Fragments {
    fn put(call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        let a: PutArgs = args(call)?;
        let bytes = base64()
            .decode(a.chunk.as_bytes())
            .map_err(|e| ContractError::BadArguments(format!("chunk is not base64: {e}")))?;
        let chunk = SealedChunk::decode(bytes.as_slice())
            .map_err(|e| ContractError::BadArguments(format!("chunk does not decode: {e}")))?;
        let ChunkHeader {
            dataset,
            version,
            sender,
            recipient,
            index,
            count,
            ..
        } = chunk
            .header
            .ok_or_else(|| ContractError::BadArguments("the chunk has no header".into()))?;
        if sender != call.client {
            return Err(ContractError::Refused(format!(
                "the chunk is {sender}'s; {} may post only its own fragments",
                call.client
            )));
        }
        if count == 0 || count > MAX_CHUNKS || index >= count {
            return Err(ContractError::BadArguments(format!(
                "chunk {index} of {count}: a fragment has 1 to {MAX_CHUNKS} chunks"
            )));
        }
        let (chunk_key, placed_key) = chunk_keys(&dataset, version, &sender, &recipient, index)?;
        let progress_key = format!(
            "fragment/{}",
            fragment_at(&dataset, version, &sender, &recipient)?
        );
        let read = read_all(state, &[placed_key.clone(), progress_key.clone()])?;
        if read[0].is_some() {
            return Err(ContractError::Refused(format!(
                "chunk {index} of {sender}'s fragment for {recipient} in {dataset} version {version} is already posted; a chunk is written once"
            )));
        }
        let before = progress(read[1].clone())?.unwrap_or(Progress { count, posted: 0 });
        if before.count != count {
            return Err(ContractError::Refused(format!(
                "the fragment has {} chunks, this chunk says {count}",
                before.count
            )));
        }
        let after = Progress {
            count,
            posted: before.posted + 1,
        };
        state.put(&chunk_key, bytes)?;
        state.put(&placed_key, vec![1])?;
        state.put(
            &progress_key,
            serde_json::to_vec(&after).map_err(|e| ContractError::Refused(e.to_string()))?,
        )?;
        respond(&json!({
            "dataset": dataset, "version": version, "sender": sender,
            "recipient": recipient, "index": index, "count": count,
        }))
    }

    fn get(call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        let a: GetArgs = args(call)?;
        let (chunk_key, _) = chunk_keys(&a.dataset, a.version, &a.sender, call.client, a.index)?;
        let chunk = state.get(&chunk_key)?.ok_or_else(|| {
            ContractError::Refused(format!(
                "no chunk {} from {} for {} in {} version {}",
                a.index, a.sender, call.client, a.dataset, a.version
            ))
        })?;
        respond(&json!({ "chunk": base64().encode(chunk) }))
    }

    fn status(call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        let a: StatusArgs = args(call)?;
        if a.providers.is_empty() || a.providers.len() > MAX_STATUS_PROVIDERS {
            return Err(ContractError::BadArguments(format!(
                "name 1 to {MAX_STATUS_PROVIDERS} providers"
            )));
        }
        let mut pairs = Vec::new();
        for sender in &a.providers {
            for recipient in &a.providers {
                pairs.push((sender, recipient));
            }
        }
        let keys = pairs
            .iter()
            .map(|(s, r)| {
                Ok(format!(
                    "fragment/{}",
                    fragment_at(&a.dataset, a.version, s, r)?
                ))
            })
            .collect::<Result<Vec<_>, ContractError>>()?;
        let read = read_all(state, &keys)?;
        let mut fragments = Vec::new();
        for ((sender, recipient), value) in pairs.into_iter().zip(read) {
            let p = progress(value)?.unwrap_or(Progress {
                count: 0,
                posted: 0,
            });
            fragments.push(json!({
                "sender": sender, "recipient": recipient,
                "posted": p.posted, "count": p.count,
            }));
        }
        respond(&json!({ "dataset": a.dataset, "version": a.version, "fragments": fragments }))
    }
}

impl Contract for Fragments {
    fn name(&self) -> &'static str {
        "fragments"
    }

    fn version(&self) -> u32 {
        1
    }

    fn call(&self, call: &Call<'_>, state: &mut dyn State) -> Result<Vec<u8>, ContractError> {
        match call.function {
            "put" => Self::put(call, state),
            "get" => Self::get(call, state),
            "status" => Self::status(call, state),
            other => Err(ContractError::UnknownFunction(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::contracts::tests::{call, MapState};

    fn chunk(sender: &str, recipient: &str, index: u32, count: u32) -> String {
        let sealed = SealedChunk {
            header: Some(ChunkHeader {
                format: 1,
                dataset: "features".into(),
                version: 2,
                declaration: vec![1; 32],
                sender: sender.into(),
                recipient: recipient.into(),
                index,
                count,
            }),
            sealed: vec![index as u8; 40],
        };
        base64().encode(sealed.encode_to_vec())
    }

    fn put(state: &mut MapState, client: &str, c: String) -> Result<Value, ContractError> {
        call(&Fragments, state, client, "put", json!({ "chunk": c }))
    }

    #[test]
    fn a_chunk_is_posted_once_by_its_sender_and_fetched_by_its_recipient() {
        let mut state = MapState::default();
        assert!(put(&mut state, "lender", chunk("lender", "telecom", 0, 2)).is_ok());
        assert_eq!(
            put(&mut state, "lender", chunk("lender", "telecom", 0, 2)),
            Err(ContractError::Refused("chunk 0 of lender's fragment for telecom in features version 2 is already posted; a chunk is written once".into()))
        );
        assert_eq!(
            put(&mut state, "telecom", chunk("lender", "telecom", 1, 2)),
            Err(ContractError::Refused(
                "the chunk is lender's; telecom may post only its own fragments".into()
            ))
        );
        assert!(matches!(
            put(&mut state, "lender", chunk("lender", "telecom", 2, 2)),
            Err(ContractError::BadArguments(_))
        ));
        assert_eq!(
            put(&mut state, "lender", chunk("lender", "telecom", 1, 3)),
            Err(ContractError::Refused(
                "the fragment has 2 chunks, this chunk says 3".into()
            ))
        );
        let args = json!({"dataset": "features", "version": 2, "sender": "lender", "index": 0});
        let got = call(&Fragments, &mut state, "telecom", "get", args.clone()).expect("got");
        assert_eq!(got["chunk"], json!(chunk("lender", "telecom", 0, 2)));
        assert!(
            matches!(
                call(&Fragments, &mut state, "insurer", "get", args),
                Err(ContractError::Refused(r)) if r.contains("no chunk 0 from lender for insurer")
            ),
            "only the recipient's own chunks are found"
        );
    }

    #[test]
    fn status_counts_posted_chunks_per_fragment() {
        let mut state = MapState::default();
        put(&mut state, "lender", chunk("lender", "telecom", 0, 2)).expect("posted");
        put(&mut state, "lender", chunk("lender", "telecom", 1, 2)).expect("posted");
        put(&mut state, "telecom", chunk("telecom", "lender", 1, 3)).expect("posted");
        let status = call(
            &Fragments,
            &mut state,
            "insurer",
            "status",
            json!({"dataset": "features", "version": 2, "providers": ["lender", "telecom"]}),
        )
        .expect("status");
        let fragments = status["fragments"].as_array().expect("list");
        let of = |s: &str, r: &str| {
            fragments
                .iter()
                .find(|f| f["sender"] == s && f["recipient"] == r)
                .map(|f| (f["posted"].clone(), f["count"].clone()))
        };
        assert_eq!(of("lender", "telecom"), Some((json!(2), json!(2))));
        assert_eq!(of("telecom", "lender"), Some((json!(1), json!(3))));
        assert_eq!(of("lender", "lender"), Some((json!(0), json!(0))));
    }
}
