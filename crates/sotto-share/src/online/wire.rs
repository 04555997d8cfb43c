//! The inference query between its protobuf envelope and
//! [`PartialQuery`]: fixed-length fields checked on the way in.

use sotto_wire::share::PartialRequest;

use crate::inference::{PartialQuery, QueryKind, MAX_IDS};

/// The envelope of `query`.
pub fn query_to_wire(query: &PartialQuery) -> PartialRequest {
    PartialRequest {
        format: query.format,
        request: query.request.to_vec(),
        gateway: query.gateway.clone(),
        dataset: query.dataset.clone(),
        version: query.version,
        model: query.model.clone(),
        model_version: query.model_version,
        digest: query.digest.to_vec(),
        key_version: query.key_version,
        tags: query.tags.concat(),
        kind: query.kind.code(),
    }
}

/// The query in `request`, or what is malformed (field and length).
pub fn query_from_wire(request: PartialRequest) -> Result<PartialQuery, String> {
    let fixed = |field: &str, bytes: &[u8], len: usize| {
        if bytes.len() == len {
            Ok(())
        } else {
            Err(format!(
                "{field}: expected {len} bytes, got {}",
                bytes.len()
            ))
        }
    };
    let kind = QueryKind::from_code(request.kind)
        .ok_or_else(|| format!("kind: {} is not 1 (partials) or 2 (rows)", request.kind))?;
    fixed("request", &request.request, 16)?;
    fixed("digest", &request.digest, 32)?;
    if !request.tags.len().is_multiple_of(32) || request.tags.len() / 32 > MAX_IDS {
        return Err(format!(
            "tags: expected 1 to {MAX_IDS} tags of 32 bytes, got {} bytes",
            request.tags.len()
        ));
    }
    let mut id = [0; 16];
    id.copy_from_slice(&request.request);
    let mut digest = [0; 32];
    digest.copy_from_slice(&request.digest);
    let tags = request
        .tags
        .chunks_exact(32)
        .map(|c| {
            let mut t = [0; 32];
            t.copy_from_slice(c);
            t
        })
        .collect();
    Ok(PartialQuery {
        format: request.format,
        kind,
        request: id,
        gateway: request.gateway,
        dataset: request.dataset,
        version: request.version,
        model: request.model,
        model_version: request.model_version,
        digest,
        key_version: request.key_version,
        tags,
    })
}
