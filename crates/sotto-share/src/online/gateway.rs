//! The gateway's inference (the seed's third TEE node, here also the
//! inference enclave for linear models): turns customer ids into tags,
//! asks every provider for its sealed partial results side by side, each
//! within a deadline, opens them with the group's partials key, adds them
//! up and applies the model's link. Any provider missing, late, refused or
//! not a current member fails the whole request, naming it: no partial
//! score is ever returned. Each answered query is handed to the audit sink
//! (who, model, count, time, answer digest — never ids or scores).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sotto_crypto::hash::FieldHasher;
use sotto_net::tls::{describe_status, TlsMaterial};
use sotto_wire::share::partials_client::PartialsClient;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;
use zeroize::Zeroize;

use super::group::GroupView;
use super::wire::query_to_wire;
use crate::dataset::Declaration;
use crate::inference::{
    combine, open_partials, reconstruct, InferenceError, PartialQuery, Partials, QueryKind,
    INFERENCE_FORMAT, MAX_IDS,
};
use crate::model::Model;
use crate::split::IdTagger;

/// Why a scoring request failed.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GatewayError {
    /// No model of that name (and version) is served here.
    #[error("model {0} is not served by this gateway (see GET /v1/models)")]
    UnknownModel(String),
    /// The request names no ids or too many.
    #[error("a request names 1 to {MAX_IDS} ids; this one names {0}")]
    IdCount(usize),
    /// The gateway holds no current group key.
    #[error("the gateway holds no current group key (v{0}): it is not a current member of the enclave group")]
    NoKey(u64),
    /// A provider is not a current member of the group.
    #[error("provider {0} is not a current member of the enclave group (revoked?); no score without every provider")]
    ProviderNotMember(String),
    /// A provider did not answer in time.
    #[error("provider {provider} did not answer within {millis} ms; no partial score is returned")]
    ProviderTimeout {
        /// The provider.
        provider: String,
        /// The deadline.
        millis: u128,
    },
    /// A provider refused or could not be reached.
    #[error("provider {provider} failed: {reason}; no partial score is returned")]
    ProviderFailed {
        /// The provider.
        provider: String,
        /// What it said.
        reason: String,
    },
    /// The answers did not combine (sealed, malformed, inconsistent).
    #[error(transparent)]
    Inference(#[from] InferenceError),
    /// A general model failed on a reconstructed row.
    #[error("the model failed on a row: {0}")]
    ModelRun(String),
    /// The audit trail is not keeping up: queries are refused rather than
    /// answered unrecorded.
    #[error("the ledger is not taking audit records (backlog full); try again later")]
    AuditBacklog,
}

/// What the ledger records of one answered query.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// The request id (hex).
    pub request: String,
    /// The user who asked.
    pub user: String,
    /// The model and version.
    pub model: String,
    /// The model's version.
    pub version: u64,
    /// How many ids were asked about.
    pub count: u64,
    /// When (Unix seconds).
    pub time: u64,
    /// Digest of the answer (hex).
    pub digest: String,
}

/// A provider as the gateway reaches it.
pub struct ProviderLink {
    /// The provider's name.
    pub name: String,
    client: PartialsClient<Channel>,
}

impl ProviderLink {
    /// A lazily connected mutual-TLS channel to `name` at `address`
    /// (connected on first use; the connection attempt may take twice
    /// `timeout`, so that a slow provider is reported by the request's own
    /// deadline).
    pub fn new(
        tls: &TlsMaterial,
        name: &str,
        address: &str,
        timeout: Duration,
    ) -> Result<Self, String> {
        let channel = Channel::from_shared(format!("https://{address}"))
            .map_err(|e| format!("provider {name} at {address}: {e}"))?
            .tls_config(tls.client_config(name))
            .map_err(|e| format!("provider {name}: {e}"))?
            .connect_timeout(timeout * 2)
            .connect_lazy();
        Ok(Self {
            name: name.to_owned(),
            client: PartialsClient::new(channel),
        })
    }
}

/// The answer to one scoring request.
#[derive(Clone, Debug, PartialEq)]
pub struct Scored {
    /// The request id (hex), as recorded on the ledger.
    pub request: String,
    /// The model used.
    pub model: String,
    /// Its version.
    pub version: u64,
    /// One score per id asked, `None` for an id nobody holds.
    pub scores: Vec<Option<f64>>,
}

/// A general model's runtime inside the inference enclave (the binary
/// plugs in sotto-onnx's tract runner, so this crate stays free of it).
pub trait RowModel: Send + Sync {
    /// The probability of class 1 for one reconstructed row.
    fn probability(&self, row: &[f32]) -> Result<f32, String>;
}

/// Everything the gateway's inference needs.
pub struct Gateway {
    /// The gateway's own name (its mutual-TLS name).
    pub me: String,
    /// The dataset version it scores.
    pub declaration: Declaration,
    /// Models checked against the ledger, by name, then version.
    pub models: HashMap<String, Vec<Model>>,
    /// The runtimes of the general (ONNX) models, by name and version.
    pub runners: HashMap<(String, u64), Arc<dyn RowModel>>,
    /// The providers, in declaration order.
    pub providers: Vec<ProviderLink>,
    /// Turns ids into the tags the shares are keyed by.
    pub tagger: IdTagger,
    /// The group as last read from the center.
    pub group: watch::Receiver<Arc<GroupView>>,
    /// How long a provider may take.
    pub timeout: Duration,
    /// Where answered queries go to be recorded.
    pub audit: mpsc::Sender<AuditRecord>,
}

/// The answer digest the ledger records.
fn answer_digest(request: &[u8; 16], model: &Model, scores: &[Option<f64>]) -> [u8; 32] {
    let mut h = FieldHasher::new("sotto/share/answer/v1");
    h.field(request)
        .field(model.name().as_bytes())
        .field(&model.version().to_be_bytes())
        .field(&model.digest());
    for s in scores {
        match s {
            Some(v) => h.field(&v.to_bits().to_be_bytes()),
            None => h.field(&[]),
        };
    }
    h.finish()
}

impl Gateway {
    /// The model `name` at `version` (latest when none).
    pub fn model(&self, name: &str, version: Option<u64>) -> Result<&Model, GatewayError> {
        let versions = self
            .models
            .get(name)
            .ok_or_else(|| GatewayError::UnknownModel(name.to_owned()))?;
        match version {
            Some(v) => versions.iter().find(|m| m.version() == v),
            None => versions.iter().max_by_key(|m| m.version()),
        }
        .ok_or_else(|| GatewayError::UnknownModel(format!("{name} version {version:?}")))
    }

    /// Scores `ids` with model `name` for `user`.
    pub async fn score(
        &self,
        user: &str,
        name: &str,
        version: Option<u64>,
        ids: &[String],
    ) -> Result<Scored, GatewayError> {
        let model = self.model(name, version)?;
        if ids.is_empty() || ids.len() > MAX_IDS {
            return Err(GatewayError::IdCount(ids.len()));
        }
        let group = Arc::clone(&self.group.borrow());
        let (key_version, key) = group
            .current_key()
            .ok_or(GatewayError::NoKey(group.key_version))?;
        if let Some(p) = self
            .providers
            .iter()
            .find(|p| !group.members.contains_key(&p.name))
        {
            return Err(GatewayError::ProviderNotMember(p.name.clone()));
        }
        let mut request = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut request);
        let kind = match model {
            Model::Linear(_) => QueryKind::Partials,
            Model::Onnx(_) => QueryKind::Rows,
        };
        let query = PartialQuery {
            format: INFERENCE_FORMAT,
            kind,
            request,
            gateway: self.me.clone(),
            dataset: self.declaration.dataset.to_string(),
            version: self.declaration.version,
            model: model.name().to_owned(),
            model_version: model.version(),
            digest: model.digest(),
            key_version,
            tags: ids
                .iter()
                .map(|id| self.tagger.tag(&self.declaration.dataset, id))
                .collect(),
        };
        let wire = query_to_wire(&query);
        let calls = self.providers.iter().map(|p| {
            let mut client = p.client.clone();
            let wire = wire.clone();
            async move {
                match tokio::time::timeout(self.timeout, client.partial(wire)).await {
                    Err(_) => Err(GatewayError::ProviderTimeout {
                        provider: p.name.clone(),
                        millis: self.timeout.as_millis(),
                    }),
                    Ok(Err(status)) => Err(GatewayError::ProviderFailed {
                        provider: p.name.clone(),
                        reason: describe_status(&status),
                    }),
                    Ok(Ok(reply)) => Ok(reply.into_inner().sealed),
                }
            }
        });
        let replies = futures_util::future::join_all(calls).await;
        let width = match model {
            Model::Linear(_) => 1,
            Model::Onnx(spec) => spec.columns.len(),
        };
        let mut answers: Vec<(String, Option<Partials>)> = Vec::with_capacity(replies.len());
        for (p, reply) in self.providers.iter().zip(replies) {
            let partials = open_partials(&query, &p.name, key, &reply?, width)?;
            answers.push((p.name.clone(), Some(partials)));
        }
        let scores = self.scores(model, &answers)?;
        let record = AuditRecord {
            request: hex::encode(request),
            user: user.to_owned(),
            model: model.name().to_owned(),
            version: model.version(),
            count: ids.len() as u64,
            time: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            digest: hex::encode(answer_digest(&request, model, &scores)),
        };
        self.audit
            .try_send(record)
            .map_err(|_| GatewayError::AuditBacklog)?;
        Ok(Scored {
            request: hex::encode(request),
            model: model.name().to_owned(),
            version: model.version(),
            scores,
        })
    }

    /// The scores from every provider's opened answer: a linear model's
    /// partial results added up, or a general model run on each row
    /// reconstructed here (the rows are wiped once scored).
    fn scores(
        &self,
        model: &Model,
        answers: &[(String, Option<Partials>)],
    ) -> Result<Vec<Option<f64>>, GatewayError> {
        let spec = match model {
            Model::Linear(linear) => return Ok(combine(linear, answers)?),
            Model::Onnx(spec) => spec,
        };
        let runner = self
            .runners
            .get(&(spec.name.clone(), spec.version))
            .ok_or_else(|| {
                GatewayError::UnknownModel(format!("{} (no runtime loaded)", spec.name))
            })?;
        let mut rows = reconstruct(answers)?;
        let scores = rows
            .iter()
            .map(|row| match row {
                None => Ok(None),
                Some(row) => {
                    let mut input = spec.decode(row);
                    let p = runner.probability(&input);
                    input.zeroize();
                    p.map(|p| Some(f64::from(p)))
                        .map_err(GatewayError::ModelRun)
                }
            })
            .collect();
        rows.iter_mut().flatten().for_each(|r| r.zeroize());
        scores
    }
}
