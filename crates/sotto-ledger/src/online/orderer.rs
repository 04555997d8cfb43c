//! The ordering service as a process: accepts transactions from the
//! ledger's clients, endorsers (which relay the center's membership
//! updates) and registration center, cuts blocks by count, bytes or
//! timeout (block 0's settings) and delivers them from any height. The
//! orderers of block 0 form one Raft group ([`super::raft`]): only the
//! leader takes broadcasts and cuts blocks, each block is one Raft entry,
//! and a broadcast is answered once the block holding it is committed by a
//! majority and stored. Every orderer delivers the committed chain. An
//! orderer checks who submits and that each transaction decodes, not the
//! business content.

use std::collections::{BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{Raft, ServerState};
use prost::Message;
use redb::Database;
use sotto_crypto::identity::IdentityKey;
use sotto_node::NodeHome;
use sotto_wire::ledger::orderer_raft_server::OrdererRaftServer;
use sotto_wire::ledger::orderer_server::{Orderer, OrdererServer};
use sotto_wire::ledger::{
    BlockMessage, BroadcastReply, BroadcastRequest, DeliverRequest, OrdererStatusReply,
    OrdererStatusRequest,
};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, Notify};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::raft::chain::{Chain, ChainMachine};
use super::raft::log::RaftLog;
use super::raft::network::{RaftPeers, RaftService, MAX_MESSAGE};
use super::raft::{
    node_id, orderer_of, settings, AppliedBlock, OrderingRaft, ProposedBlock, RaftId,
};
use super::{caller, check_role, listener_failed, server, tls_for, unix_ms, Channels, OnlineError};
use crate::block::{Block, ChainTip};
use crate::config::LedgerConfig;
use crate::tx::Transaction;

/// File name of the orderer's block store in its home.
pub const DB_FILE: &str = "ledger-orderer.redb";
/// The most transactions one broadcast may carry.
pub const MAX_BROADCAST: usize = 1000;
/// The most transactions waiting for a block; a broadcast beyond it is
/// refused as busy (the client submits it again later) rather than held in
/// memory without bound.
pub const MAX_PENDING: usize = 100_000;

/// What a broadcast learns once its transactions are ordered: the block
/// holding them, or why they were not ordered.
type Outcome = Result<u64, String>;

/// Transactions waiting for the next block, oldest first.
#[derive(Default)]
struct Pending {
    queue: VecDeque<(Vec<u8>, Option<oneshot::Sender<Outcome>>)>,
    bytes: usize,
    since: Option<Instant>,
}

struct Inner {
    config: LedgerConfig,
    name: String,
    key: IdentityKey,
    chain: Arc<Chain>,
    raft: Raft<OrderingRaft>,
    pending: Mutex<Pending>,
    arrived: Notify,
}

/// Starts the orderer: opens (or creates) its store from block 0, checks
/// the stored chain, joins the Raft group of block 0's orderers, and
/// serves until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    home: NodeHome,
    genesis: Block,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), OnlineError> {
    let (config, tip0) = genesis
        .open_genesis("block 0")
        .map_err(|e| OnlineError::Genesis(e.to_string()))?;
    check_role(
        &home,
        "orderer",
        config.orderer(home.name().as_str()).map(|o| &o.identity),
    )?;
    let channels = Arc::new(Channels::new(tls_for(&home, &config)?));
    let path = home.dir().join(DB_FILE);
    let db = Database::create(&path).map_err(|e| OnlineError::Database {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let db = Arc::new(db);
    let chain = Arc::new(Chain::open(
        Arc::clone(&db),
        &path,
        config.clone(),
        &genesis,
        tip0,
    )?);
    let id = node_id(&config, home.name().as_str()).ok_or_else(|| {
        OnlineError::Misconfigured(format!("{} is not an orderer in block 0", home.name()))
    })?;
    let raft = start_raft(id, &config, &tip0.ledger, db, &chain, Arc::clone(&channels)).await?;
    let height = chain.tip()?.number;
    let inner = Arc::new(Inner {
        name: home.name().to_string(),
        key: home.identity().duplicate(),
        config: config.clone(),
        chain,
        raft: raft.clone(),
        pending: Mutex::new(Pending::default()),
        arrived: Notify::new(),
    });
    tracing::info!(height, raft_id = id, "orderer ready");
    let cutting = tokio::spawn(cutter(Arc::clone(&inner)));
    let served = server(channels.tls())?
        .add_service(OrdererServer::new(Service { inner }).max_decoding_message_size(8 << 20))
        .add_service(
            OrdererRaftServer::new(RaftService::new(raft.clone(), config, tip0.ledger))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
        )
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(listener_failed);
    cutting.abort();
    if let Err(e) = raft.shutdown().await {
        tracing::warn!("Raft did not stop cleanly: {e}");
    }
    served
}

/// Starts this orderer's Raft node on its log and chain; on a first start
/// (empty log) it proposes the group of every orderer in block 0 (each
/// orderer does the same, which openraft allows).
async fn start_raft(
    id: RaftId,
    config: &LedgerConfig,
    ledger: &[u8; 32],
    db: Arc<Database>,
    chain: &Arc<Chain>,
    channels: Arc<Channels>,
) -> Result<Raft<OrderingRaft>, OnlineError> {
    let failed = |e: &dyn std::fmt::Display| OnlineError::Misconfigured(format!("Raft: {e}"));
    let raft = Raft::new(
        id,
        Arc::new(settings(ledger)?),
        RaftPeers::new(config.clone(), *ledger, channels),
        RaftLog::new(db),
        ChainMachine::new(Arc::clone(chain)),
    )
    .await
    .map_err(|e| failed(&e))?;
    let members: BTreeSet<RaftId> = (1..=config.orderers.len() as u64).collect();
    match raft.initialize(members).await {
        Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(raft),
        Err(e) => Err(failed(&e)),
    }
}

/// Cuts a block whenever the pending transactions reach the count or byte
/// limit, or the oldest has waited the block timeout, and keeps up to
/// [`IN_FLIGHT`] blocks proposed to the Raft group at once, each cut on the
/// one before it. Broadcasts are answered in block order as their blocks
/// are applied. If a proposal fails or is refused (the chain moved: a
/// former leader's block won), no new block is proposed until the flight
/// is empty; then the refused batches are cut again, in order, on the
/// applied chain.
async fn cutter(inner: Arc<Inner>) {
    let timeout = Duration::from_millis(u64::from(inner.config.blocks.timeout_ms));
    let mut flight = Flight::default();
    loop {
        flight.launch_ready(&inner, timeout);
        let deadline = inner
            .pending
            .lock()
            .map_or(None, |p| p.since)
            .map(|since| since + timeout);
        tokio::select! {
            Some((proposal, result)) = flight.running.next(), if !flight.running.is_empty() => {
                flight.settle(proposal, result);
            }
            () = sleep_until_some(deadline) => {}
            () = inner.arrived.notified() => {}
        }
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The most blocks proposed and not yet applied at once.
const IN_FLIGHT: usize = 4;

/// The most times a batch is cut again because the chain moved under it
/// (a block of a former leader committed first).
const RECUTS: usize = 3;

/// A batch of transactions on its way into a block.
struct Proposal {
    batch: Batch,
    cuts: usize,
}

type Proposed = std::pin::Pin<
    Box<dyn std::future::Future<Output = (Proposal, Result<AppliedBlock, String>)> + Send>,
>;

/// The blocks proposed and not yet applied, and what to do after them.
#[derive(Default)]
struct Flight {
    running: futures_util::stream::FuturesOrdered<Proposed>,
    /// The tip the next block extends; `None`: the applied chain's tip.
    next_tip: Option<ChainTip>,
    /// Set when a proposal failed: nothing new until the flight is empty.
    resync: bool,
    /// Refused batches to cut again, in order, once the flight is empty.
    again: Vec<Proposal>,
}

impl Flight {
    /// Proposes what may be proposed now.
    fn launch_ready(&mut self, inner: &Arc<Inner>, timeout: Duration) {
        if self.resync {
            if !self.running.is_empty() {
                return;
            }
            self.resync = false;
            self.next_tip = None;
            for proposal in std::mem::take(&mut self.again) {
                self.launch(inner, proposal);
            }
        }
        while self.running.len() < IN_FLIGHT && !self.resync {
            let Some(batch) = take_batch(inner, timeout) else {
                break;
            };
            self.launch(inner, Proposal { batch, cuts: 0 });
        }
    }

    /// Cuts the proposal's block on the next tip and proposes it.
    fn launch(&mut self, inner: &Arc<Inner>, mut proposal: Proposal) {
        if proposal.cuts >= RECUTS {
            answer(
                proposal.batch,
                Err(format!("the chain moved under {RECUTS} cuts of this block")),
            );
            return;
        }
        let tip = match self.next_tip.map_or_else(|| inner.chain.tip(), Ok) {
            Ok(tip) => tip,
            Err(e) => return answer(proposal.batch, Err(e.to_string())),
        };
        let transactions = proposal.batch.iter().map(|(tx, _)| tx.clone()).collect();
        let block = Block::cut(&tip, &inner.name, &inner.key, unix_ms(), transactions);
        match tip.check_next(&inner.config, &block) {
            Ok(next) => self.next_tip = Some(next),
            Err(e) => return answer(proposal.batch, Err(e.to_string())),
        }
        proposal.cuts += 1;
        let inner = Arc::clone(inner);
        self.running.push_back(Box::pin(async move {
            let proposed = ProposedBlock {
                block: block.encode_to_vec(),
            };
            let result = inner
                .raft
                .client_write(proposed)
                .await
                .map(|r| r.data)
                .map_err(|e| not_ordered(&inner.config, &e));
            (proposal, result)
        }));
    }

    /// Answers a proposal's broadcasts once its block is applied, or keeps
    /// it to cut again, or answers why it was not ordered.
    fn settle(&mut self, proposal: Proposal, result: Result<AppliedBlock, String>) {
        match result {
            Ok(AppliedBlock {
                number: Some(number),
                ..
            }) => answer(proposal.batch, Ok(number)),
            Ok(AppliedBlock { refused, .. }) => {
                tracing::info!(
                    "a proposed block was refused ({}); cutting it again",
                    refused.unwrap_or_default()
                );
                self.resync = true;
                self.again.push(proposal);
            }
            Err(reason) => {
                self.resync = true;
                answer(proposal.batch, Err(reason));
            }
        }
    }
}

/// Answers every broadcast waiting on `batch`.
fn answer(batch: Batch, outcome: Outcome) {
    if let Err(reason) = &outcome {
        tracing::warn!("a block was not ordered: {reason}");
    }
    for waiter in batch.into_iter().filter_map(|(_, w)| w) {
        let _ = waiter.send(outcome.clone());
    }
}

type Batch = Vec<(Vec<u8>, Option<oneshot::Sender<Outcome>>)>;

/// The transactions of the next block, if it is time to cut one.
fn take_batch(inner: &Inner, timeout: Duration) -> Option<Batch> {
    let limits = inner.config.blocks;
    let mut pending = inner.pending.lock().ok()?;
    let due = pending.since.is_some_and(|s| s.elapsed() >= timeout);
    let full = pending.queue.len() >= limits.max_transactions as usize
        || pending.bytes >= limits.max_bytes as usize;
    if pending.queue.is_empty() || !(due || full) {
        return None;
    }
    let mut batch = Vec::new();
    let mut bytes = 0;
    while let Some((tx, _)) = pending.queue.front() {
        let fits = batch.len() < limits.max_transactions as usize
            && bytes + tx.len() <= limits.max_bytes as usize;
        if !fits && !batch.is_empty() {
            break;
        }
        let Some(entry) = pending.queue.pop_front() else {
            break;
        };
        bytes += entry.0.len();
        batch.push(entry);
    }
    pending.bytes -= bytes;
    pending.since = if pending.queue.is_empty() {
        None
    } else {
        Some(Instant::now())
    };
    Some(batch)
}

/// Why a proposal was not ordered, in words.
fn not_ordered(
    config: &LedgerConfig,
    error: &RaftError<RaftId, ClientWriteError<RaftId, openraft::EmptyNode>>,
) -> String {
    match error {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            format!(
                "this orderer lost the Raft leadership ({})",
                leader_words(config, f.leader_id)
            )
        }
        other => format!("Raft: {other}"),
    }
}

/// Who leads the ordering group, in words.
fn leader_words(config: &LedgerConfig, leader: Option<RaftId>) -> String {
    match leader.and_then(|id| orderer_of(config, id)) {
        Some(o) => format!("the leader is {}", o.name),
        None => "no leader is elected yet".into(),
    }
}

struct Service {
    inner: Arc<Inner>,
}

impl Service {
    /// Refuses a broadcast unless this orderer leads the Raft group, and
    /// names the leader for the caller to try.
    fn leading(&self) -> Result<(), Status> {
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        if metrics.state == ServerState::Leader {
            return Ok(());
        }
        Err(Status::unavailable(format!(
            "{} does not order now: {}",
            self.inner.name,
            leader_words(&self.inner.config, metrics.current_leader)
        )))
    }
}

type BlockStream = Pin<Box<dyn Stream<Item = Result<BlockMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Orderer for Service {
    async fn broadcast(
        &self,
        request: Request<BroadcastRequest>,
    ) -> Result<Response<BroadcastReply>, Status> {
        let config = &self.inner.config;
        let who = caller(&request, |name| {
            config
                .client(name)
                .map(|c| c.identity)
                .or_else(|| config.endorser(name).map(|(_, e)| e.identity))
                .or_else(|| (config.center.name.as_str() == name).then_some(config.center.identity))
        })?;
        let transactions = request.into_inner().transactions;
        if transactions.is_empty() || transactions.len() > MAX_BROADCAST {
            return Err(Status::invalid_argument(format!(
                "a broadcast carries 1 to {MAX_BROADCAST} transactions"
            )));
        }
        let max = config.blocks.max_bytes as usize;
        for (i, tx) in transactions.iter().enumerate() {
            if tx.len() > max || Transaction::decode(tx.as_slice()).is_err() {
                return Err(Status::invalid_argument(format!(
                    "transaction {i} from {who} does not decode or is larger than a block ({max} bytes)"
                )));
            }
        }
        self.leading()?;
        let count = transactions.len();
        let (done, stored) = oneshot::channel();
        {
            let mut pending = self
                .inner
                .pending
                .lock()
                .map_err(|_| Status::internal("poisoned"))?;
            if pending.queue.len() + count > MAX_PENDING {
                return Err(Status::unavailable(format!(
                    "the orderer holds {MAX_PENDING} transactions waiting for blocks; submit again shortly"
                )));
            }
            for tx in transactions {
                pending.bytes += tx.len();
                pending.since.get_or_insert_with(Instant::now);
                pending.queue.push_back((tx, None));
            }
            // Blocks are cut in arrival order: once the last of these is
            // stored, all of them are.
            if let Some(entry) = pending.queue.back_mut() {
                entry.1 = Some(done);
            }
        }
        self.inner.arrived.notify_one();
        stored
            .await
            .map_err(|_| {
                Status::unavailable(
                    "the orderer stopped before storing the transactions; submit them again",
                )
            })?
            .map_err(|reason| {
                Status::unavailable(format!(
                    "{} did not order the transactions: {reason}; submit them again",
                    self.inner.name
                ))
            })?;
        Ok(Response::new(BroadcastReply {
            accepted: count as u64,
        }))
    }

    type DeliverStream = BlockStream;

    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<Self::DeliverStream>, Status> {
        let config = &self.inner.config;
        caller(&request, |name| {
            config
                .business_node(name)
                .map(|b| b.member.identity)
                .or_else(|| config.orderer(name).map(|o| o.identity))
                .or_else(|| config.client(name).map(|c| c.identity))
        })?;
        let mut next = request.into_inner().from;
        let inner = Arc::clone(&self.inner);
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut height = inner.chain.height();
            loop {
                while next <= *height.borrow_and_update() {
                    let block = match inner.chain.block(next) {
                        Ok(Some(block)) => Ok(BlockMessage { block }),
                        Ok(None) => Err(Status::internal(format!("block {next} is missing"))),
                        Err(e) => Err(Status::internal(e.to_string())),
                    };
                    let failed = block.is_err();
                    if sender.send(block).await.is_err() || failed {
                        return;
                    }
                    next += 1;
                }
                if height.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn status(
        &self,
        request: Request<OrdererStatusRequest>,
    ) -> Result<Response<OrdererStatusReply>, Status> {
        let config = &self.inner.config;
        caller(&request, |name| config.member_identity(name))?;
        let height = self
            .inner
            .chain
            .tip()
            .map_err(|e| Status::internal(e.to_string()))?
            .number;
        let metrics = self.inner.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics
            .current_leader
            .and_then(|id| orderer_of(config, id))
            .map(|o| o.name.to_string())
            .unwrap_or_default();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        Ok(Response::new(OrdererStatusReply {
            height,
            leader,
            term: metrics.current_term,
            role: role.into(),
        }))
    }
}
