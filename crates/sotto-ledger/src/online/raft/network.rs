//! Raft messages between orderers over their mutual-TLS gRPC: the client
//! side openraft calls ([`RaftPeers`]) and the `OrdererRaft` service that
//! hands received messages to the local Raft node ([`RaftService`]). A
//! message is accepted only from an orderer of block 0, only for this
//! orderer's ledger (the ledger id travels with every message, so a group
//! of another ledger sharing names and keys cannot reach this one), and
//! only if the leader (or candidate) it speaks for is that orderer: one
//! orderer cannot speak for another.

use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{EmptyNode, Raft};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sotto_wire::ledger::orderer_raft_client::OrdererRaftClient;
use sotto_wire::ledger::orderer_raft_server::OrdererRaft;
use sotto_wire::ledger::RaftMessage;
use tonic::{Request, Response, Status};

use super::{from_cbor, node_id, orderer_of, to_cbor, OrderingRaft, RaftId};
use crate::config::LedgerConfig;
use crate::online::{caller, Channels};

/// The largest Raft message, encoded (a few blocks).
pub const MAX_MESSAGE: usize = 64 << 20;

type Failure<E> = RPCError<RaftId, EmptyNode, RaftError<RaftId, E>>;

/// Opens links to the other orderers of block 0.
pub struct RaftPeers {
    config: LedgerConfig,
    ledger: [u8; 32],
    channels: Arc<Channels>,
}

impl RaftPeers {
    /// Links for the group of `ledger`, made with `channels` (this
    /// orderer's TLS material).
    pub fn new(config: LedgerConfig, ledger: [u8; 32], channels: Arc<Channels>) -> Self {
        Self {
            config,
            ledger,
            channels,
        }
    }
}

impl RaftNetworkFactory<OrderingRaft> for RaftPeers {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: RaftId, _node: &EmptyNode) -> RaftPeer {
        let peer = orderer_of(&self.config, target)
            .map(|o| (o.name.to_string(), o.address.clone().unwrap_or_default()));
        RaftPeer {
            target,
            peer,
            ledger: self.ledger,
            channels: Arc::clone(&self.channels),
        }
    }
}

/// A link to one orderer.
pub struct RaftPeer {
    target: RaftId,
    peer: Option<(String, String)>,
    ledger: [u8; 32],
    channels: Arc<Channels>,
}

#[derive(Clone, Copy)]
enum Call {
    Append,
    Vote,
    Snapshot,
}

impl RaftPeer {
    async fn call<Q: Serialize, A: DeserializeOwned, E>(
        &self,
        call: Call,
        request: &Q,
        option: &RPCOption,
    ) -> Result<A, Failure<E>>
    where
        E: std::error::Error + DeserializeOwned,
    {
        let unreachable = |reason: String| {
            RPCError::Unreachable(Unreachable::new(&std::io::Error::other(reason)))
        };
        let Some((name, address)) = &self.peer else {
            return Err(unreachable(format!(
                "Raft node {} is not an orderer of block 0",
                self.target
            )));
        };
        let body = to_cbor(request)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        let channel = self
            .channels
            .get(name, address)
            .map_err(|e| unreachable(e.to_string()))?;
        let mut client = OrdererRaftClient::new(channel)
            .max_encoding_message_size(MAX_MESSAGE)
            .max_decoding_message_size(MAX_MESSAGE);
        let message = RaftMessage {
            body,
            ledger: self.ledger.to_vec(),
        };
        let sent = async {
            match call {
                Call::Append => client.append_entries(message).await,
                Call::Vote => client.vote(message).await,
                Call::Snapshot => client.install_snapshot(message).await,
            }
        };
        let reply = tokio::time::timeout(option.hard_ttl(), sent)
            .await
            .map_err(|_| unreachable(format!("{name} did not answer in time")))?
            .map_err(|s| match s.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                    unreachable(format!("{name}: {}", s.message()))
                }
                _ => RPCError::Network(NetworkError::new(&s)),
            })?
            .into_inner();
        let answer: Result<A, RaftError<RaftId, E>> = from_cbor(&reply.body)
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        answer.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<OrderingRaft> for RaftPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<OrderingRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, Failure<openraft::error::Infallible>> {
        self.call(Call::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<OrderingRaft>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<RaftId>, Failure<InstallSnapshotError>> {
        self.call(Call::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, Failure<openraft::error::Infallible>> {
        self.call(Call::Vote, &rpc, &option).await
    }
}

/// The `OrdererRaft` service of one orderer.
pub struct RaftService {
    raft: Raft<OrderingRaft>,
    config: LedgerConfig,
    ledger: [u8; 32],
}

impl RaftService {
    /// The service handing messages of `ledger`'s group to `raft`.
    pub fn new(raft: Raft<OrderingRaft>, config: LedgerConfig, ledger: [u8; 32]) -> Self {
        Self {
            raft,
            config,
            ledger,
        }
    }

    /// A reply of this ledger's group.
    fn encode<T: Serialize>(&self, reply: &T) -> Result<Response<RaftMessage>, Status> {
        to_cbor(reply)
            .map(|body| {
                Response::new(RaftMessage {
                    body,
                    ledger: self.ledger.to_vec(),
                })
            })
            .map_err(Status::internal)
    }

    /// The Raft node id of the calling orderer, once the message is known
    /// to be for this ledger.
    fn sender(&self, request: &Request<RaftMessage>) -> Result<RaftId, Status> {
        let config = &self.config;
        let name = caller(request, |name| config.orderer(name).map(|o| o.identity))?;
        if request.get_ref().ledger != self.ledger {
            return Err(Status::failed_precondition(format!(
                "{name} sent a Raft message for ledger {}; this orderer orders ledger {}",
                hex::encode(&request.get_ref().ledger),
                hex::encode(self.ledger)
            )));
        }
        node_id(config, &name)
            .ok_or_else(|| Status::permission_denied(format!("{name} is not an orderer")))
    }
}

/// Refuses a message whose leader or candidate is not the caller.
pub fn check_speaker(caller: RaftId, speaks_for: RaftId) -> Result<(), Status> {
    if caller == speaks_for {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "Raft node {caller} sent a message for node {speaks_for}; an orderer speaks only for itself"
        )))
    }
}

fn decode<T: DeserializeOwned>(message: &RaftMessage) -> Result<T, Status> {
    from_cbor(&message.body)
        .map_err(|e| Status::invalid_argument(format!("not a Raft message: {e}")))
}

#[tonic::async_trait]
impl OrdererRaft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let from = self.sender(&request)?;
        let rpc: AppendEntriesRequest<OrderingRaft> = decode(request.get_ref())?;
        check_speaker(from, rpc.vote.leader_id.node_id)?;
        self.encode(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let from = self.sender(&request)?;
        let rpc: VoteRequest<RaftId> = decode(request.get_ref())?;
        check_speaker(from, rpc.vote.leader_id.node_id)?;
        self.encode(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let from = self.sender(&request)?;
        let rpc: InstallSnapshotRequest<OrderingRaft> = decode(request.get_ref())?;
        check_speaker(from, rpc.vote.leader_id.node_id)?;
        self.encode(&self.raft.install_snapshot(rpc).await)
    }
}
