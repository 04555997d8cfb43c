//! A provider's inference service (`sotto.share.v1.Partials`): answers
//! partial results `w · s_j` on its fused share, sealed for the group, to
//! the inference enclaves (gateways) it was told to serve — each checked on
//! every call against its mutual-TLS certificate and the center's current
//! membership, so a revoked gateway is refused at once.

use std::collections::HashMap;
use std::sync::Arc;

use sotto_net::tls::{peer_certificate, TlsMaterial};
use sotto_tee::online::OnlineError;
use sotto_wire::share::partials_server::{Partials, PartialsServer};
use sotto_wire::share::{PartialReply, PartialRequest};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::group::GroupView;
use super::wire::query_from_wire;
use crate::dataset::Declaration;
use crate::fuse::FusedShare;
use crate::inference::{answer_partials, InferenceError};
use crate::model::Model;

/// What a provider serves.
pub struct ProviderService {
    /// This provider's name.
    pub me: String,
    /// The dataset version its share is of.
    pub declaration: Declaration,
    /// Its fused share (unsealed inside its enclave).
    pub share: FusedShare,
    /// The models it answers for (checked against the ledger), by name and
    /// version.
    pub models: HashMap<(String, u64), Model>,
    /// The members allowed to ask (inference enclaves, gateways).
    pub gateways: Vec<String>,
    /// The group as last read from the center.
    pub group: watch::Receiver<Arc<GroupView>>,
}

fn refusal(e: InferenceError) -> Status {
    match e {
        InferenceError::Model { .. }
        | InferenceError::ColumnCount { .. }
        | InferenceError::Dataset { .. } => Status::failed_precondition(e.to_string()),
        InferenceError::Seal(_) => Status::internal(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

impl ProviderService {
    /// The caller's name once it is an allowed gateway and a current member
    /// with the certificate's identity.
    fn caller<T>(&self, request: &Request<T>, group: &GroupView) -> Result<String, Status> {
        let (identity, name) =
            peer_certificate(request).map_err(|e| Status::unauthenticated(e.to_string()))?;
        group
            .admit(&self.gateways, &name, &identity)
            .map_err(Status::permission_denied)?;
        Ok(name)
    }
}

#[tonic::async_trait]
impl Partials for ProviderService {
    async fn partial(
        &self,
        request: Request<PartialRequest>,
    ) -> Result<Response<PartialReply>, Status> {
        let group = Arc::clone(&self.group.borrow());
        let caller = self.caller(&request, &group)?;
        let query = query_from_wire(request.into_inner()).map_err(Status::invalid_argument)?;
        if query.gateway != caller {
            return Err(Status::permission_denied(format!(
                "the request names gateway {} but the TLS certificate is {caller}",
                query.gateway
            )));
        }
        let key = group.keys.get(&query.key_version).ok_or_else(|| {
            Status::failed_precondition(format!(
                "{} does not hold group key v{} (it holds {:?}): not a current member, or the key is newer than its view",
                self.me,
                query.key_version,
                group.keys.keys().collect::<Vec<_>>()
            ))
        })?;
        let model = self
            .models
            .get(&(query.model.clone(), query.model_version))
            .ok_or_else(|| {
                refusal(InferenceError::Model {
                    name: query.model.clone(),
                    version: query.model_version,
                    reason: format!("{} does not serve it", self.me),
                })
            })?;
        let sealed = answer_partials(
            &query,
            &self.me,
            &self.declaration,
            model,
            &self.share,
            key,
            &mut rand::rngs::OsRng,
        )
        .map_err(refusal)?;
        Ok(Response::new(PartialReply {
            provider: self.me.clone(),
            sealed,
        }))
    }
}

/// The accepted connections of `listener`, each sending its answers as
/// soon as they are written (no Nagle delay against the gateway's delayed
/// acknowledgements: tens of milliseconds per large answer otherwise).
fn without_nagle(
    listener: TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures_util::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!("TCP_NODELAY: {e}");
            }
        })
    })
}

/// Serves `service` on `listener` with mutual TLS from `tls` until
/// `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: &TlsMaterial,
    service: ProviderService,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), OnlineError> {
    let transport = |e: tonic::transport::Error| OnlineError::Transport {
        peer: "listener".into(),
        reason: e.to_string(),
    };
    tonic::transport::Server::builder()
        .tls_config(tls.server_config())
        .map_err(transport)?
        .add_service(PartialsServer::new(service))
        .serve_with_incoming_shutdown(without_nagle(listener), shutdown)
        .await
        .map_err(transport)
}
