//! The ordering service as a process: accepts transactions from the
//! ledger's clients, endorsers (which relay the center's membership
//! updates) and registration center, cuts blocks by count, bytes or
//! timeout (block 0's settings), stores them in redb and delivers them from
//! any height. It checks who submits and that each transaction decodes,
//! not the business content. This is the single-orderer service (Fabric's
//! "solo"): one process orders; a Raft group is the next step and will sit
//! behind the same gRPC service.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use sotto_crypto::identity::IdentityKey;
use sotto_node::NodeHome;
use sotto_wire::ledger::orderer_server::{Orderer, OrdererServer};
use sotto_wire::ledger::{BlockMessage, BroadcastReply, BroadcastRequest, DeliverRequest};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch, Notify};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{caller, check_role, listener_failed, server, tls_for, unix_ms, OnlineError};
use crate::block::{Block, ChainTip};
use crate::config::LedgerConfig;
use crate::tx::Transaction;

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
/// File name of the orderer's block store in its home.
pub const DB_FILE: &str = "ledger-orderer.redb";
/// The most transactions one broadcast may carry.
pub const MAX_BROADCAST: usize = 1000;
/// The most transactions waiting for a block; a broadcast beyond it is
/// refused as busy (the client submits it again later) rather than held in
/// memory without bound.
pub const MAX_PENDING: usize = 100_000;

/// Transactions waiting for the next block, oldest first.
#[derive(Default)]
struct Pending {
    queue: VecDeque<(Vec<u8>, Option<oneshot::Sender<u64>>)>,
    bytes: usize,
    since: Option<Instant>,
}

struct Inner {
    config: LedgerConfig,
    name: String,
    key: IdentityKey,
    db: Database,
    path: PathBuf,
    tip: Mutex<ChainTip>,
    pending: Mutex<Pending>,
    arrived: Notify,
    height: watch::Sender<u64>,
}

/// Starts the orderer: opens (or creates) its store from block 0, checks
/// the stored chain, and serves until `shutdown`.
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
    let tls = tls_for(&home, &config)?;
    let path = home.dir().join(DB_FILE);
    let db = Database::create(&path).map_err(|e| OnlineError::Database {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let tip = open_chain(&db, &path, &config, &genesis, tip0)?;
    let (height, _) = watch::channel(tip.number);
    let inner = Arc::new(Inner {
        name: home.name().to_string(),
        key: home.identity().duplicate(),
        config,
        db,
        path,
        tip: Mutex::new(tip),
        pending: Mutex::new(Pending::default()),
        arrived: Notify::new(),
        height,
    });
    tracing::info!(height = tip.number, "orderer ready");
    tokio::spawn(cutter(Arc::clone(&inner)));
    server(&tls)?
        .add_service(OrdererServer::new(Service { inner }).max_decoding_message_size(8 << 20))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(listener_failed)
}

/// Stores block 0 in a new store, or checks a stored chain against it.
fn open_chain(
    db: &Database,
    path: &std::path::Path,
    config: &LedgerConfig,
    genesis: &Block,
    tip0: ChainTip,
) -> Result<ChainTip, OnlineError> {
    let err = |reason: String| OnlineError::Database {
        path: path.to_owned(),
        reason,
    };
    let tx = db.begin_write().map_err(|e| err(e.to_string()))?;
    let mut tip = tip0;
    {
        let mut blocks = tx.open_table(BLOCKS).map_err(|e| err(e.to_string()))?;
        let stored_genesis = blocks
            .get(0)
            .map_err(|e| err(e.to_string()))?
            .map(|v| v.value().to_vec());
        match stored_genesis {
            None => {
                blocks
                    .insert(0, genesis.encode_to_vec().as_slice())
                    .map_err(|e| err(e.to_string()))?;
            }
            Some(bytes) if bytes == genesis.encode_to_vec() => {}
            Some(_) => {
                return Err(OnlineError::Misconfigured(format!(
                    "{} holds the chain of another block 0; give this orderer its own home",
                    path.display()
                )))
            }
        }
        let count = blocks.len().map_err(|e| err(e.to_string()))?;
        for number in 1..count {
            let bytes = blocks
                .get(number)
                .map_err(|e| err(e.to_string()))?
                .ok_or_else(|| err(format!("block {number} is missing")))?;
            let block =
                Block::decode(bytes.value()).map_err(|e| err(format!("block {number}: {e}")))?;
            tip = tip
                .check_next(config, &block)
                .map_err(|e| err(format!("stored {e}")))?;
        }
    }
    tx.commit().map_err(|e| err(e.to_string()))?;
    Ok(tip)
}

/// Cuts a block whenever the pending transactions reach the count or byte
/// limit, or the oldest has waited the block timeout.
async fn cutter(inner: Arc<Inner>) {
    let timeout = Duration::from_millis(u64::from(inner.config.blocks.timeout_ms));
    loop {
        let deadline = {
            let pending = inner.pending.lock().map_or(None, |p| p.since);
            deadline_of(pending, timeout)
        };
        match deadline {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = inner.arrived.notified() => {}
                }
            }
            None => inner.arrived.notified().await,
        }
        while let Some(batch) = take_batch(&inner, timeout) {
            if let Err(e) = cut(&inner, batch) {
                tracing::error!("cutting a block failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn deadline_of(since: Option<Instant>, timeout: Duration) -> Option<Instant> {
    since.map(|s| s + timeout)
}

type Batch = Vec<(Vec<u8>, Option<oneshot::Sender<u64>>)>;

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

/// Cuts, stores and announces one block; answers the waiting broadcasts.
fn cut(inner: &Inner, batch: Batch) -> Result<(), OnlineError> {
    let err = |reason: String| OnlineError::Database {
        path: inner.path.clone(),
        reason,
    };
    let mut tip = inner.tip.lock().map_err(|_| err("poisoned".into()))?;
    let (transactions, waiters): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let block = Block::cut(&tip, &inner.name, &inner.key, unix_ms(), transactions);
    let next = tip
        .check_next(&inner.config, &block)
        .map_err(|e| err(e.to_string()))?;
    let tx = inner.db.begin_write().map_err(|e| err(e.to_string()))?;
    {
        let mut blocks = tx.open_table(BLOCKS).map_err(|e| err(e.to_string()))?;
        blocks
            .insert(next.number, block.encode_to_vec().as_slice())
            .map_err(|e| err(e.to_string()))?;
    }
    tx.commit().map_err(|e| err(e.to_string()))?;
    *tip = next;
    inner.height.send_replace(next.number);
    for waiter in waiters.into_iter().flatten() {
        let _ = waiter.send(next.number);
    }
    Ok(())
}

fn stored_block(inner: &Inner, number: u64) -> Result<Option<Vec<u8>>, Status> {
    let tx = inner
        .db
        .begin_read()
        .map_err(|e| Status::internal(e.to_string()))?;
    let blocks = tx
        .open_table(BLOCKS)
        .map_err(|e| Status::internal(e.to_string()))?;
    let value = blocks
        .get(number)
        .map_err(|e| Status::internal(e.to_string()))?;
    Ok(value.map(|v| v.value().to_vec()))
}

struct Service {
    inner: Arc<Inner>,
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
        stored.await.map_err(|_| {
            Status::unavailable(
                "the orderer stopped before storing the transactions; submit them again",
            )
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
            let mut height = inner.height.subscribe();
            loop {
                while next <= *height.borrow_and_update() {
                    let block = match stored_block(&inner, next) {
                        Ok(Some(block)) => Ok(BlockMessage { block }),
                        Ok(None) => Err(Status::internal(format!("block {next} is missing"))),
                        Err(e) => Err(e),
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
}
