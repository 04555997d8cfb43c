//! An untrusted store-and-forward relay: it accepts a requester's session
//! (mutual TLS with its own consortium certificate), opens the session to
//! the provider named in the `sotto-target` header, and forwards frames both
//! ways. It sees only encrypted, signed elements; integrity rests on the
//! signatures. A [`FrameHook`] lets tests play a compromised relay.

use std::sync::Arc;
use std::time::Duration;

use sotto_net::tls::{peer_certificate, TlsMaterial};
use sotto_node::{NodeHome, NodeName};
use sotto_wire::psi::psi_client::PsiClient;
use sotto_wire::psi::psi_server::{Psi, PsiServer};
use sotto_wire::psi::Frame;
use tokio::net::TcpListener;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use super::OnlineError;

/// Request header naming the provider a relayed session is for.
pub const TARGET_HEADER: &str = "sotto-target";

/// Which way a frame is going through the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the requester to the provider.
    ToProvider,
    /// From the provider to the requester.
    ToRequester,
}

/// Sees every frame passing the relay and returns what to forward instead:
/// the frame itself, nothing (drop), several frames (duplicate, reorder,
/// inject) or altered frames.
pub type FrameHook = Arc<dyn Fn(Direction, Frame) -> Vec<Frame> + Send + Sync>;

/// What a relay serves.
pub struct RelayConfig {
    /// The relay's node home (its certificate).
    pub home: NodeHome,
    /// Providers it forwards to: name and `host:port`.
    pub routes: Vec<(NodeName, String)>,
    /// Optional frame hook (tests).
    pub hook: Option<FrameHook>,
    /// Longest wait to connect to a provider.
    pub connect_timeout: Duration,
}

struct RelayService {
    config: Arc<RelayConfig>,
    tls: Arc<TlsMaterial>,
}

/// Relays sessions arriving on `listener` until `shutdown` completes.
pub async fn serve_relay(
    listener: TcpListener,
    config: RelayConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), OnlineError> {
    let tls = Arc::new(TlsMaterial::load(&config.home)?);
    let server_tls = tls.server_config();
    let service = RelayService {
        config: Arc::new(config),
        tls,
    };
    let transport = |e: tonic::transport::Error| OnlineError::Transport {
        peer: "listener".into(),
        reason: e.to_string(),
    };
    tonic::transport::Server::builder()
        .tls_config(server_tls)
        .map_err(transport)?
        .add_service(PsiServer::new(service))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(transport)
}

fn pass(hook: &Option<FrameHook>, direction: Direction, frame: Frame) -> Vec<Frame> {
    match hook {
        Some(hook) => hook(direction, frame),
        None => vec![frame],
    }
}

impl RelayService {
    async fn connect(&self, target: &NodeName) -> Result<Channel, Status> {
        let address = self
            .config
            .routes
            .iter()
            .find(|(name, _)| name == target)
            .map(|(_, address)| address.clone())
            .ok_or_else(|| Status::not_found(format!("this relay has no route to {target}")))?;
        let unavailable = |e: String| {
            Status::unavailable(format!("relay cannot reach {target} at {address}: {e}"))
        };
        Channel::from_shared(format!("https://{address}"))
            .map_err(|e| unavailable(e.to_string()))?
            .tls_config(self.tls.client_config(target.as_str()))
            .map_err(|e| unavailable(e.to_string()))?
            .connect_timeout(self.config.connect_timeout)
            .connect()
            .await
            .map_err(|e| unavailable(e.to_string()))
    }
}

#[tonic::async_trait]
impl Psi for RelayService {
    type SessionStream = ReceiverStream<Result<Frame, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<Frame>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let target: NodeName = request
            .metadata()
            .get(TARGET_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Status::invalid_argument(format!("missing or invalid {TARGET_HEADER} header"))
            })?;
        let from = peer_certificate(&request).map_or_else(|e| e.to_string(), |(_, name)| name);
        let channel = self.connect(&target).await.inspect_err(|status| {
            tracing::warn!(from = %from, to = %target, "not forwarded: {}", status.message());
        })?;
        tracing::info!(from = %from, to = %target, "forwarding a session");
        let mut from_requester = request.into_inner();
        let (up_tx, up_rx) = tokio::sync::mpsc::channel(32);
        let hook = self.config.hook.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = from_requester.next().await {
                for forwarded in pass(&hook, Direction::ToProvider, frame) {
                    if up_tx.send(forwarded).await.is_err() {
                        return;
                    }
                }
            }
        });
        let mut from_provider = PsiClient::new(channel)
            .session(ReceiverStream::new(up_rx))
            .await?
            .into_inner();
        let (down_tx, down_rx) = tokio::sync::mpsc::channel(32);
        let hook = self.config.hook.clone();
        tokio::spawn(async move {
            while let Some(item) = from_provider.next().await {
                let frames = match item {
                    Ok(frame) => pass(&hook, Direction::ToRequester, frame)
                        .into_iter()
                        .map(Ok)
                        .collect(),
                    Err(status) => vec![Err(status)],
                };
                for f in frames {
                    if down_tx.send(f).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(down_rx)))
    }
}
