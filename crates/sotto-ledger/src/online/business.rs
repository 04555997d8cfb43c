//! A business node as a process: follows the ordering service's block
//! stream from its height (moving to another orderer when one fails),
//! validates and stores each block ([`crate::store::BusinessStore`]),
//! publishes commit events, and answers compute enclaves of the current
//! group with key versions and values: sealed ones in ciphertext mode, over
//! a load channel in plaintext mode.

use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prost::Message;
use rand_core::OsRng;
use sotto_net::tls::TlsMaterial;
use sotto_node::NodeHome;
use sotto_wire::ledger::business_server::{Business, BusinessServer};
use sotto_wire::ledger::orderer_client::OrdererClient;
use sotto_wire::ledger::{
    CommitEvent, DeliverRequest, Entry, EventsRequest, LoadReply, LoadRequest, StatusReply,
    StatusRequest, TxCode,
};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{caller, channel, check_role, listener_failed, server, tls_for, OnlineError};
use crate::block::Block;
use crate::clear::{ChannelAsk, Judge};
use crate::code::ValidationCode;
use crate::compute::Held;
use crate::config::LedgerConfig;
use crate::packet::Packet;
use crate::store::BusinessStore;
use crate::tx::{Body, Transaction};

/// File name of the business node's store in its home.
pub const DB_FILE: &str = "ledger.redb";
/// The most keys one load may ask for.
pub const MAX_LOAD: usize = 1000;

struct Inner {
    config: LedgerConfig,
    store: RwLock<BusinessStore>,
    events: broadcast::Sender<CommitEvent>,
}

/// A business node whose start-up checks passed: its home is the node
/// block 0 names, its TLS material is the consortium's, and its store
/// (created from block 0 on first start; replayed and checked on every
/// later one) holds this ledger's chain. The binary announces its address
/// only after [`prepare`] returned.
pub struct PreparedBusiness {
    home: NodeHome,
    tls: TlsMaterial,
    inner: Arc<Inner>,
}

/// Runs every start-up check of a business node.
pub fn prepare(home: NodeHome, genesis: &Block) -> Result<PreparedBusiness, OnlineError> {
    let (config, _) = genesis
        .open_genesis("block 0")
        .map_err(|e| OnlineError::Genesis(e.to_string()))?;
    let me = home.name().to_string();
    check_role(
        &home,
        "business node",
        config.business_node(&me).map(|b| &b.member.identity),
    )?;
    let tls = tls_for(&home, &config)?;
    let path = home.dir().join(DB_FILE);
    let store = if path.exists() {
        BusinessStore::open(&path, Some(home.identity()))?
    } else {
        BusinessStore::create(&path, genesis, &me, Some(home.identity()))?
    };
    if store.block(0)?.as_ref() != Some(genesis) {
        return Err(OnlineError::Misconfigured(format!(
            "{} holds the chain of another block 0",
            path.display()
        )));
    }
    tracing::info!(height = store.ledger().tip().number, "business node ready");
    let (events, _) = broadcast::channel(1024);
    let inner = Arc::new(Inner {
        config,
        store: RwLock::new(store),
        events,
    });
    Ok(PreparedBusiness { home, tls, inner })
}

impl PreparedBusiness {
    /// Follows the orderers and serves on `listener` until `shutdown`.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), OnlineError> {
        let PreparedBusiness { home, tls, inner } = self;
        tokio::spawn(follow(Arc::clone(&inner), tls_for(&home, &inner.config)?));
        server(&tls)?
            .add_service(BusinessServer::new(Service { inner }))
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await
            .map_err(listener_failed)
    }
}

fn height(inner: &Inner) -> u64 {
    inner.store.read().map_or(0, |s| s.ledger().tip().number)
}

/// Follows the orderers' block stream for ever, from this node's height.
async fn follow(inner: Arc<Inner>, tls: TlsMaterial) {
    let orderers = inner.config.orderers.clone();
    let mut turn = 0usize;
    loop {
        let Some(orderer) = orderers.get(turn % orderers.len().max(1)) else {
            return;
        };
        turn += 1;
        let address = orderer.address.clone().unwrap_or_default();
        if let Err(e) = follow_one(&inner, &tls, orderer.name.as_str(), &address).await {
            tracing::warn!(orderer = %orderer.name, "block stream: {e}; trying the next orderer");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

async fn follow_one(
    inner: &Inner,
    tls: &TlsMaterial,
    name: &str,
    address: &str,
) -> Result<(), OnlineError> {
    let channel = channel(tls, name, address)?;
    let mut client = OrdererClient::new(channel).max_decoding_message_size(8 << 20);
    let from = height(inner) + 1;
    let mut stream = client
        .deliver(DeliverRequest { from })
        .await
        .map_err(|s| super::call_failed(name, &s))?
        .into_inner();
    while let Some(message) = stream
        .message()
        .await
        .map_err(|s| super::call_failed(name, &s))?
    {
        let block = Block::decode(message.block.as_slice()).map_err(|e| OnlineError::Refused {
            peer: name.to_owned(),
            reason: format!("sent a block that does not decode: {e}"),
        })?;
        let poisoned = || OnlineError::Misconfigured("store poisoned".into());
        // Validate and write under the read lock (Loads and Status go on
        // meanwhile); only the in-memory apply takes the write lock. This
        // task is the only writer, so nothing moves in between.
        let prepared = {
            let store = inner.store.read().map_err(|_| poisoned())?;
            let prepared = store.prepare(&block)?;
            store.persist(&block, &prepared)?;
            prepared
        };
        for tx in &prepared.validated.unopened {
            tracing::error!(
                block = block.header.as_ref().map_or(0, |h| h.number),
                %tx,
                "the clear copy addressed to this node does not open; its values are not kept (the enclave that made it broke its own code)"
            );
        }
        let codes = prepared.validated.codes.clone();
        let commit = prepared.validated.commit_hash;
        let membership_version = {
            let mut store = inner.store.write().map_err(|_| poisoned())?;
            store.apply(prepared);
            store.ledger().group().version
        };
        let mut event = event_of(&block, &codes, commit.to_vec());
        event.membership_version = membership_version;
        let _ = inner.events.send(event);
    }
    Err(OnlineError::Transport {
        peer: name.to_owned(),
        reason: "the block stream ended".into(),
    })
}

/// The commit event of a block: each transaction's id (when it has one) and
/// code at this node, and the commit hash after it (live events only).
fn event_of(block: &Block, codes: &[ValidationCode], commit_hash: Vec<u8>) -> CommitEvent {
    let codes = block
        .transactions
        .iter()
        .zip(codes)
        .map(|(tx, code)| TxCode {
            tx_id: tx_id_of(tx).unwrap_or_default(),
            code: code.number(),
        })
        .collect();
    CommitEvent {
        block: block.header.as_ref().map_or(0, |h| h.number),
        codes,
        commit_hash,
        membership_version: 0,
    }
}

fn tx_id_of(tx: &[u8]) -> Option<Vec<u8>> {
    match Transaction::decode(tx).ok()?.body? {
        Body::Invoke(invoke) => Some(Packet::decode(invoke.packet.as_slice()).ok()?.tx_id),
        Body::Membership(_) => None,
    }
}

struct Service {
    inner: Arc<Inner>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<CommitEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Business for Service {
    async fn load(&self, request: Request<LoadRequest>) -> Result<Response<LoadReply>, Status> {
        let store = self
            .inner
            .store
            .read()
            .map_err(|_| Status::internal("poisoned"))?;
        let ledger = store.ledger();
        let caller = caller(&request, |name| ledger.group().members.get(name).copied())?;
        let LoadRequest {
            keys,
            channel,
            channel_signature,
        } = request.into_inner();
        if keys.len() > MAX_LOAD {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_LOAD} keys per load"
            )));
        }
        let ids = keys
            .iter()
            .map(|key| <[u8; 32]>::try_from(key.as_slice()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| Status::invalid_argument("a key id is 32 bytes"))?;
        let mut rng = OsRng;
        let (channel_key, sealed_reply_key) = if ledger.keeps_clear() {
            let judge = Judge {
                ledger: &ledger.tip().ledger,
                me: ledger.me(),
                caller: &caller,
                members: &ledger.group().members,
                now_ms: super::unix_ms(),
            };
            let ask = ChannelAsk {
                request: channel,
                signature: channel_signature,
            };
            let (key, sealed) = judge
                .grant(&ask, &ids, &mut rng)
                .map_err(|e| Status::permission_denied(e.to_string()))?;
            (Some(key), sealed)
        } else {
            (None, Vec::new())
        };
        let mut entries = Vec::with_capacity(ids.len());
        for id in ids {
            let loaded = ledger.load(&id);
            let (kept, sealed) = match (loaded.held, &channel_key) {
                (Held::Nothing, _) => (false, Vec::new()),
                (Held::Sealed(sealed), _) => (true, sealed),
                (Held::Clear(value), Some(channel)) => (
                    true,
                    channel
                        .seal_value(&id, loaded.version, &value, &mut rng)
                        .map_err(|e| Status::internal(e.to_string()))?,
                ),
                (Held::Clear(_), None) => {
                    return Err(Status::internal("a value in clear without a load channel"))
                }
            };
            entries.push(Entry {
                key: id.to_vec(),
                exists: loaded.version.is_some(),
                block: loaded.version.map_or(0, |v| v.block),
                tx: loaded.version.map_or(0, |v| v.tx),
                kept,
                sealed,
            });
        }
        Ok(Response::new(LoadReply {
            entries,
            sealed_reply_key,
        }))
    }

    type EventsStream = EventStream;

    async fn events(
        &self,
        request: Request<EventsRequest>,
    ) -> Result<Response<Self::EventsStream>, Status> {
        let config = &self.inner.config;
        caller(&request, |name| config.client(name).map(|c| c.identity))?;
        let from = request.into_inner().from;
        let mut live = self.inner.events.subscribe();
        let past = {
            let store = self
                .inner
                .store
                .read()
                .map_err(|_| Status::internal("poisoned"))?;
            let tip = store.ledger().tip().number;
            let mut past = Vec::new();
            for number in from.max(1)..=tip {
                let block = store
                    .block(number)
                    .map_err(|e| Status::internal(e.to_string()))?
                    .ok_or_else(|| Status::internal(format!("block {number} missing")))?;
                let codes = store.ledger().codes(number).unwrap_or_default();
                past.push(event_of(&block, codes, Vec::new()));
            }
            past
        };
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut next = from.max(1);
            for event in past {
                next = event.block + 1;
                if sender.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(event) if event.block < next => {}
                    Ok(event) => {
                        next = event.block + 1;
                        if sender.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = sender
                            .send(Err(Status::resource_exhausted(
                                "fell behind the commit events; reconnect from the last block seen",
                            )))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusReply>, Status> {
        let config = &self.inner.config;
        caller(&request, |name| {
            config
                .client(name)
                .map(|c| c.identity)
                .or_else(|| config.business_node(name).map(|b| b.member.identity))
        })?;
        let store = self
            .inner
            .store
            .read()
            .map_err(|_| Status::internal("poisoned"))?;
        let ledger = store.ledger();
        let mode = config
            .business_node(ledger.me())
            .map_or_else(String::new, |b| b.mode.to_string());
        Ok(Response::new(StatusReply {
            height: ledger.tip().number,
            commit_hash: ledger.commit_hash().to_vec(),
            mode,
            membership_version: ledger.group().version,
            keys: ledger.versions().len() as u64,
        }))
    }
}
