//! Member-to-member mutual authentication over gRPC with mutual TLS
//! (`sotto.tee.v1.MemberAuth`), driving [`crate::registry::mutual`]: both
//! sides check the other against the center's current signed membership,
//! so a revoked member fails.

use std::collections::HashMap;

use sotto_crypto::identity::IdentityKey;
use sotto_net::tls::{peer_certificate, TlsMaterial};
use sotto_node::{NodeHome, NodeName};
use sotto_wire::tee::member_auth_client::MemberAuthClient;
use sotto_wire::tee::member_auth_server::{MemberAuth, MemberAuthServer};
use sotto_wire::tee::{AuthConfirm, AuthHello, AuthReply, AuthResult};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::node::CenterClient;
use super::OnlineError;
use crate::registry::mutual::{Confirm, Hello, Initiator, Reply, Responder};

/// Authentications started (hello answered) but not yet confirmed that a
/// member keeps; more are refused until some finish.
const MAX_PENDING: usize = 1024;

fn array<const N: usize>(bytes: &[u8], field: &str) -> Result<[u8; N], Status> {
    bytes
        .try_into()
        .map_err(|_| Status::invalid_argument(format!("{field}: expected {N} bytes")))
}

struct AuthService {
    me: NodeName,
    key: IdentityKey,
    center: Mutex<CenterClient>,
    pending: Mutex<HashMap<[u8; 32], Responder>>,
}

impl AuthService {
    async fn membership(&self) -> Result<crate::registry::Membership, Status> {
        self.center
            .lock()
            .await
            .members()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))
    }
}

#[tonic::async_trait]
impl MemberAuth for AuthService {
    async fn hello(&self, request: Request<AuthHello>) -> Result<Response<AuthReply>, Status> {
        let (_, cert_name) =
            peer_certificate(&request).map_err(|e| Status::unauthenticated(e.to_string()))?;
        let hello = request.into_inner();
        if hello.from != cert_name {
            return Err(Status::permission_denied(format!(
                "the hello names {} but the TLS certificate is {cert_name}",
                hello.from
            )));
        }
        let hello = Hello {
            from: hello.from,
            nonce: array(&hello.nonce, "nonce")?,
        };
        let membership = self.membership().await?;
        let (responder, reply) = Responder::on_hello(
            &hello,
            self.me.as_str(),
            &self.key,
            &membership,
            &mut rand::rngs::OsRng,
        )
        .map_err(|e| Status::permission_denied(e.to_string()))?;
        let mut pending = self.pending.lock().await;
        if pending.len() >= MAX_PENDING {
            return Err(Status::resource_exhausted(
                "too many authentications in progress; try again shortly",
            ));
        }
        pending.insert(hello.nonce, responder);
        drop(pending);
        Ok(Response::new(AuthReply {
            from: reply.from,
            nonce: reply.nonce.to_vec(),
            signature: reply.signature.to_vec(),
        }))
    }

    async fn confirm(&self, request: Request<AuthConfirm>) -> Result<Response<AuthResult>, Status> {
        let confirm = request.into_inner();
        let nonce: [u8; 32] = array(&confirm.initiator_nonce, "initiator_nonce")?;
        let responder = self.pending.lock().await.remove(&nonce).ok_or_else(|| {
            Status::failed_precondition("no authentication in progress for this nonce")
        })?;
        let membership = self.membership().await?;
        let peer = responder
            .on_confirm(
                &Confirm {
                    signature: array(&confirm.signature, "signature")?,
                },
                &membership,
            )
            .map_err(|e| Status::permission_denied(e.to_string()))?;
        tracing::info!(peer = %peer, "mutually authenticated");
        Ok(Response::new(AuthResult {
            peer: self.me.to_string(),
        }))
    }
}

/// Answers other members' authentication on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    home: NodeHome,
    center: CenterClient,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), OnlineError> {
    let tls = TlsMaterial::load(&home)?;
    let service = AuthService {
        me: home.name().clone(),
        key: home.identity().duplicate(),
        center: Mutex::new(center),
        pending: Mutex::new(HashMap::new()),
    };
    let transport = |e: tonic::transport::Error| OnlineError::Transport {
        peer: "listener".into(),
        reason: e.to_string(),
    };
    tonic::transport::Server::builder()
        .tls_config(tls.server_config())
        .map_err(transport)?
        .add_service(MemberAuthServer::new(service))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(transport)
}

/// Authenticates the member `peer` at `address`, both ways; returns its
/// name once both proofs verified.
pub async fn authenticate(
    home: &NodeHome,
    center: &mut CenterClient,
    peer: &NodeName,
    address: &str,
) -> Result<String, OnlineError> {
    let label = format!("member {peer} at {address}");
    let refused = |s: Status| OnlineError::Refused {
        center: label.clone(),
        reason: s.message().to_owned(),
    };
    let tls = TlsMaterial::load(home)?;
    let channel = Channel::from_shared(format!("https://{address}"))
        .map_err(|e| OnlineError::Transport {
            peer: label.clone(),
            reason: e.to_string(),
        })?
        .tls_config(tls.client_config(peer.as_str()))
        .map_err(|e| OnlineError::Transport {
            peer: label.clone(),
            reason: e.to_string(),
        })?
        .connect()
        .await
        .map_err(|e| OnlineError::Transport {
            peer: label.clone(),
            reason: sotto_net::tls::describe_transport(&e),
        })?;
    let mut client = MemberAuthClient::new(channel);
    let membership = center.members().await?;
    let (initiator, hello) = Initiator::start(home.name().as_str(), &mut rand::rngs::OsRng);
    let reply = client
        .hello(AuthHello {
            from: hello.from.clone(),
            nonce: hello.nonce.to_vec(),
        })
        .await
        .map_err(&refused)?
        .into_inner();
    let bad = |field: &str| OnlineError::BadAnswer {
        center: label.clone(),
        reason: format!("{field} has the wrong length"),
    };
    let reply = Reply {
        from: reply.from,
        nonce: reply
            .nonce
            .as_slice()
            .try_into()
            .map_err(|_| bad("nonce"))?,
        signature: reply
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| bad("signature"))?,
    };
    if reply.from != peer.as_str() {
        return Err(OnlineError::BadAnswer {
            center: label,
            reason: format!("it answered as {}", reply.from),
        });
    }
    let (confirm, name) = initiator
        .on_reply(&reply, &membership, &home.identity().duplicate())
        .map_err(|e| OnlineError::BadAnswer {
            center: label.clone(),
            reason: e.to_string(),
        })?;
    client
        .confirm(AuthConfirm {
            initiator_nonce: hello.nonce.to_vec(),
            signature: confirm.signature.to_vec(),
        })
        .await
        .map_err(&refused)?;
    Ok(name)
}
