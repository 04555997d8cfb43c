//! An endorser as a process: follows the compute group's membership from
//! the registration center (whose key block 0 names), and endorses packets
//! for clients of the ledger with [`crate::endorse::Endorser`]. It never
//! sees plaintext.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use prost::Message;
use sotto_node::{NodeHome, NodeName};
use sotto_tee::online::node::CenterClient;
use sotto_wire::ledger::endorser_server::{Endorser as EndorserRpc, EndorserServer};
use sotto_wire::ledger::{EndorseReply, EndorseRequest};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::{caller, check_role, listener_failed, server, tls_for, unix_ms, Channels, OnlineError};
use crate::block::Block;
use crate::config::LedgerConfig;
use crate::endorse::Endorser;
use crate::group::ComputeGroup;
use crate::tx::{Body, MembershipUpdate, Transaction};
use sotto_wire::ledger::orderer_client::OrdererClient;
use sotto_wire::ledger::BroadcastRequest;

struct Inner {
    config: LedgerConfig,
    ledger: [u8; 32],
    home: NodeHome,
    group: RwLock<ComputeGroup>,
}

/// Checks that `home` pins the registration center block 0 names.
pub fn check_center(home: &NodeHome, config: &LedgerConfig) -> Result<NodeName, OnlineError> {
    let name = config.center.name.clone();
    let pinned = home.peer(&name)?;
    if pinned.identity != config.center.identity {
        return Err(OnlineError::Misconfigured(format!(
            "the pinned peer {name} is not the registration center block 0 names (another identity key)"
        )));
    }
    Ok(name)
}

/// Follows the center's membership stream into `group` for ever,
/// reconnecting after failures.
pub async fn follow_group(
    home: &NodeHome,
    config: &LedgerConfig,
    center: &NodeName,
    address: &str,
    mut each: impl FnMut(ComputeGroup, &sotto_wire::tee::MembershipUpdate),
) {
    loop {
        let result = async {
            let mut client = CenterClient::connect(home, center.clone(), address).await?;
            client
                .watch_signed(
                    usize::MAX,
                    |membership, update| match ComputeGroup::from_membership(config, membership) {
                        Ok(group) => each(group, update),
                        Err(e) => tracing::warn!("membership v{} refused: {e}", membership.version),
                    },
                )
                .await
        }
        .await;
        if let Err(e) = result {
            tracing::warn!("membership stream from {center}: {e}; reconnecting");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Starts the endorser and serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    home: NodeHome,
    genesis: Block,
    center_address: String,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), OnlineError> {
    let (config, tip) = genesis
        .open_genesis("block 0")
        .map_err(|e| OnlineError::Genesis(e.to_string()))?;
    let me = home.name().to_string();
    check_role(
        &home,
        "endorser",
        config.endorser(&me).map(|(_, e)| &e.identity),
    )?;
    let channels = Arc::new(Channels::new(tls_for(&home, &config)?));
    let center = check_center(&home, &config)?;
    let inner = Arc::new(Inner {
        config,
        ledger: tip.ledger,
        home,
        group: RwLock::new(ComputeGroup::default()),
    });
    let follower = Arc::clone(&inner);
    let (updates, relayed) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(relay_memberships(
        Arc::clone(&inner),
        Arc::clone(&channels),
        relayed,
    ));
    tokio::spawn(async move {
        let inner = &follower;
        follow_group(
            &inner.home,
            &inner.config,
            &center,
            &center_address,
            |group, update| {
                tracing::info!(
                    version = group.version,
                    members = group.members.len(),
                    "compute group"
                );
                if let Ok(mut current) = inner.group.write() {
                    *current = group;
                }
                let _ = updates.send(update.clone());
            },
        )
        .await;
    });
    server(channels.tls())?
        .add_service(EndorserServer::new(Service { inner }))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(listener_failed)
}

/// Puts each membership the center signs on the chain (as a membership
/// update transaction), so business nodes judge packets against the same
/// group at the same height. Every endorser relays; a copy that arrives
/// after the first is marked INVALID_CONFIG_TRANSACTION and changes nothing.
async fn relay_memberships(
    inner: Arc<Inner>,
    channels: Arc<Channels>,
    mut updates: tokio::sync::mpsc::UnboundedReceiver<sotto_wire::tee::MembershipUpdate>,
) {
    while let Some(update) = updates.recv().await {
        let tx = Transaction {
            body: Some(Body::Membership(MembershipUpdate {
                membership: update.membership_json,
                signature: update.signature,
            })),
        }
        .encode_to_vec();
        let deadline = tokio::time::Instant::now() + RELAY_PATIENCE;
        while !relay_once(&inner, &channels, &tx).await {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    "no orderer took the membership update in {} s; it waits for the next change",
                    RELAY_PATIENCE.as_secs()
                );
                break;
            }
            tokio::time::sleep(RELAY_RETRY).await;
        }
    }
}

/// How long an endorser keeps offering a membership update while no
/// orderer takes it (no Raft leader elected, orderers down).
const RELAY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(60);
/// The pause between two rounds over the orderers.
const RELAY_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// Offers one membership transaction to each orderer in turn until one
/// (the Raft leader) takes it.
async fn relay_once(inner: &Inner, channels: &Channels, tx: &[u8]) -> bool {
    for orderer in &inner.config.orderers {
        let address = orderer.address.clone().unwrap_or_default();
        let Ok(channel) = channels.get(orderer.name.as_str(), &address) else {
            continue;
        };
        let request = BroadcastRequest {
            transactions: vec![tx.to_vec()],
        };
        match OrdererClient::new(channel).broadcast(request).await {
            Ok(_) => return true,
            Err(s) => {
                tracing::debug!(orderer = %orderer.name, "membership not relayed: {}", s.message())
            }
        }
    }
    false
}

struct Service {
    inner: Arc<Inner>,
}

#[tonic::async_trait]
impl EndorserRpc for Service {
    async fn endorse(
        &self,
        request: Request<EndorseRequest>,
    ) -> Result<Response<EndorseReply>, Status> {
        let inner = &self.inner;
        caller(&request, |name| {
            inner.config.client(name).map(|c| c.identity)
        })?;
        let EndorseRequest {
            packet,
            tee_signature,
        } = request.into_inner();
        let group = inner
            .group
            .read()
            .map_err(|_| Status::internal("poisoned"))?
            .clone();
        let endorser = Endorser {
            config: &inner.config,
            ledger: inner.ledger,
            name: inner.home.name().as_str(),
            key: inner.home.identity(),
        };
        Ok(Response::new(
            match endorser.endorse(&group, &packet, &tee_signature, unix_ms()) {
                Ok(endorsement) => EndorseReply {
                    endorsement: endorsement.encode_to_vec(),
                    refusal: String::new(),
                },
                Err(refusal) => {
                    tracing::info!("refused a packet: {refusal}");
                    EndorseReply {
                        endorsement: Vec::new(),
                        refusal: refusal.to_string(),
                    }
                }
            },
        ))
    }
}
