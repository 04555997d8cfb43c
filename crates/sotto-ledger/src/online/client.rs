//! The client library an institution's application calls: it fetches and
//! checks the group's envelope key, seals proposals, asks a compute node to
//! run them, collects endorsements that satisfy the contract's policy,
//! submits to the ordering service and waits for the commit code at the
//! target business node; queries stop after the compute node's answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use rand::rngs::OsRng;
use rand::RngCore;
use sotto_crypto::hpke::HpkePublicKey;
use sotto_crypto::ids::TxId;
use sotto_node::NodeHome;
use sotto_wire::ledger::business_client::BusinessClient;
use sotto_wire::ledger::compute_client::ComputeClient;
use sotto_wire::ledger::endorser_client::EndorserClient;
use sotto_wire::ledger::orderer_client::OrdererClient;
use sotto_wire::ledger::{
    BroadcastRequest, DeliverRequest, EndorseRequest, EnvelopeKeyRequest, EventsRequest,
    ExecuteRequest, StatusReply, StatusRequest,
};
use tokio::sync::oneshot;
use tonic::transport::Channel;

use super::compute::{check_envelope_key, EnvelopeKey};
use super::{call_failed, check_role, tls_for, unix_ms, Channels, OnlineError};
use crate::block::Block;
use crate::code::ValidationCode;
use crate::config::LedgerConfig;
use crate::packet::Endorsement;
use crate::request::{Proposal, REQUEST_FORMAT};
use crate::tx::{Body, Invoke, Transaction};

/// How long a client waits for its transaction's commit event.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a proposal stays valid for ordering.
pub const PROPOSAL_LIFETIME_MS: u64 = 60_000;
/// How long a broadcast keeps trying while no orderer takes it (a Raft
/// election takes about a second).
pub const ORDERING_PATIENCE: Duration = Duration::from_secs(15);
/// The pause between two rounds over the orderers.
pub const ORDERING_RETRY: Duration = Duration::from_millis(200);

/// One call of a contract function.
#[derive(Clone, Debug)]
pub struct CallSpec {
    /// The contract.
    pub contract: String,
    /// The function.
    pub function: String,
    /// Its arguments (JSON).
    pub args: Vec<u8>,
    /// The business nodes that keep the writes (the first one serves reads).
    pub targets: Vec<String>,
}

/// A call run by an enclave and endorsed, not yet submitted.
#[derive(Clone, Debug)]
pub struct Endorsed {
    /// The transaction id.
    pub tx_id: TxId,
    /// The packet.
    pub packet: Vec<u8>,
    /// The enclave's signature over it.
    pub tee_signature: Vec<u8>,
    /// Endorsements that satisfy the contract's policy.
    pub endorsements: Vec<Endorsement>,
    /// The contract's response (JSON).
    pub response: Vec<u8>,
}

/// What an invoke came to.
#[derive(Clone, Debug)]
pub struct Committed {
    /// The transaction id.
    pub tx_id: TxId,
    /// The block it is in.
    pub block: u64,
    /// Its code at the first target.
    pub code: ValidationCode,
    /// The contract's response (JSON).
    pub response: Vec<u8>,
}

/// A ledger client for one institution.
pub struct LedgerClient {
    home: NodeHome,
    config: LedgerConfig,
    ledger: [u8; 32],
    compute: Vec<(String, String)>,
    next_compute: usize,
    channels: Channels,
    envelope_keys: HashMap<String, EnvelopeKey>,
    watchers: HashMap<String, Arc<Watcher>>,
    /// The orderer that took the last broadcast (index in block 0).
    ordering_leader: std::sync::atomic::AtomicUsize,
}

/// One commit-event stream of a business node, and the transactions
/// waiting for their code in it.
#[derive(Default)]
struct Watcher {
    waiting: Mutex<HashMap<TxId, oneshot::Sender<(u64, u32)>>>,
    closed: std::sync::atomic::AtomicBool,
    /// The compute group's membership version on the chain, as the last
    /// event (or the status call that opened the stream) gave it.
    membership_version: std::sync::atomic::AtomicU64,
}

impl Watcher {
    fn expect(&self, tx: TxId, done: oneshot::Sender<(u64, u32)>) -> Result<(), OnlineError> {
        self.waiting
            .lock()
            .map_err(|_| OnlineError::Misconfigured("watcher poisoned".into()))?
            .insert(tx, done);
        Ok(())
    }

    fn forget(&self, tx: &TxId) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(tx);
        }
    }

    fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Hands each code to the transaction waiting for it, until the stream
    /// ends; then the waiting transactions learn that it ended.
    async fn run(self: Arc<Self>, mut stream: tonic::Streaming<sotto_wire::ledger::CommitEvent>) {
        while let Ok(Some(event)) = stream.message().await {
            self.membership_version.fetch_max(
                event.membership_version,
                std::sync::atomic::Ordering::AcqRel,
            );
            let Ok(mut waiting) = self.waiting.lock() else {
                break;
            };
            for code in &event.codes {
                let Ok(id) = <[u8; 16]>::try_from(code.tx_id.as_slice()) else {
                    continue;
                };
                if let Some(done) = waiting.remove(&TxId::from_bytes(id)) {
                    let _ = done.send((event.block, code.code));
                }
            }
        }
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.clear();
        }
    }
}

/// A contract's refusal, read from its sealed response.
fn refusal(response: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(response)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(response).into_owned())
}

impl LedgerClient {
    /// A client for the institution of `home`, a client in block 0, using
    /// the compute nodes `compute` (name, host:port).
    pub fn new(
        home: NodeHome,
        genesis: &Block,
        compute: Vec<(String, String)>,
    ) -> Result<Self, OnlineError> {
        let (config, tip) = genesis
            .open_genesis("block 0")
            .map_err(|e| OnlineError::Genesis(e.to_string()))?;
        check_role(
            &home,
            "client",
            config.client(home.name().as_str()).map(|c| &c.identity),
        )?;
        if compute.is_empty() {
            return Err(OnlineError::Misconfigured(
                "name at least one compute node (--compute NAME@HOST:PORT)".into(),
            ));
        }
        Ok(Self {
            channels: Channels::new(tls_for(&home, &config)?),
            home,
            config,
            ledger: tip.ledger,
            compute,
            next_compute: 0,
            envelope_keys: HashMap::new(),
            watchers: HashMap::new(),
            ordering_leader: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn channel(&self, name: &str, address: &str) -> Result<Channel, OnlineError> {
        self.channels.get(name, address)
    }

    /// The ledger configuration.
    pub fn config(&self) -> &LedgerConfig {
        &self.config
    }

    fn compute_client(
        &mut self,
    ) -> Result<(String, ComputeClient<tonic::transport::Channel>), OnlineError> {
        let (name, address) = self.compute[self.next_compute % self.compute.len()].clone();
        self.next_compute += 1;
        let client =
            ComputeClient::new(self.channel(&name, &address)?).max_decoding_message_size(8 << 20);
        Ok((name, client))
    }

    /// The envelope key `name` vouches for: fetched and checked once, then
    /// reused while its membership is no older than the chain's.
    async fn envelope_key(
        &mut self,
        name: &str,
        compute: &mut ComputeClient<Channel>,
        on_chain: u64,
    ) -> Result<(u64, HpkePublicKey), OnlineError> {
        if let Some(checked) = self
            .envelope_keys
            .get(name)
            .filter(|k| k.membership_version >= on_chain)
        {
            return Ok((checked.version, checked.key.clone()));
        }
        let reply = compute
            .envelope_key(EnvelopeKeyRequest {})
            .await
            .map_err(|s| call_failed(name, &s))?
            .into_inner();
        let checked =
            check_envelope_key(&self.config, &self.ledger, &reply, on_chain).map_err(|reason| {
                self.envelope_keys.remove(name);
                OnlineError::Refused {
                    peer: name.to_owned(),
                    reason,
                }
            })?;
        self.envelope_keys.insert(name.to_owned(), checked.clone());
        Ok((checked.version, checked.key))
    }

    /// Seals `call` and has a compute node run it: the packet, its TEE
    /// signature and the response; a contract's refusal is an error.
    /// `on_chain` is the membership version the target business node has.
    async fn execute(
        &mut self,
        call: &CallSpec,
        on_chain: u64,
    ) -> Result<(TxId, Vec<u8>, Vec<u8>, Vec<u8>), OnlineError> {
        let (name, mut compute) = self.compute_client()?;
        let (version, envelope) = self.envelope_key(&name, &mut compute, on_chain).await?;
        let mut id = [0u8; 16];
        OsRng.fill_bytes(&mut id);
        let now = unix_ms();
        let proposal = Proposal {
            format: REQUEST_FORMAT,
            ledger: self.ledger.to_vec(),
            tx_id: id.to_vec(),
            client: self.home.name().to_string(),
            contract: call.contract.clone(),
            contract_version: self
                .config
                .contract(&call.contract)
                .map_or(0, |c| c.version),
            function: call.function.clone(),
            args: call.args.clone(),
            targets: call.targets.clone(),
            time_ms: now,
            expires_ms: now + PROPOSAL_LIFETIME_MS,
        };
        let (request, tx_key) = proposal
            .seal(self.home.identity(), &envelope, version, &mut OsRng)
            .map_err(|e| OnlineError::Misconfigured(format!("sealing the request: {e}")))?;
        let reply = compute
            .execute(ExecuteRequest {
                request: request.encode_to_vec(),
            })
            .await
            .map_err(|s| {
                // A rotated group key: fetch the envelope key again next time.
                self.envelope_keys.remove(&name);
                call_failed(&name, &s)
            })?
            .into_inner();
        let response =
            tx_key
                .open_response(&id, &reply.response)
                .map_err(|e| OnlineError::Refused {
                    peer: name.clone(),
                    reason: e.to_string(),
                })?;
        if reply.refused {
            return Err(OnlineError::Refused {
                peer: format!("contract {}", call.contract),
                reason: refusal(&response),
            });
        }
        Ok((
            TxId::from_bytes(id),
            reply.packet,
            reply.tee_signature,
            response,
        ))
    }

    /// Runs a query: the contract's response, nothing ordered.
    pub async fn query(&mut self, call: &CallSpec) -> Result<Vec<u8>, OnlineError> {
        let target = call.targets.first().cloned().unwrap_or_default();
        let on_chain = self.status(&target).await?.membership_version;
        Ok(self.execute(call, on_chain).await?.3)
    }

    /// Runs and endorses a call without submitting it: for an application
    /// that submits later or through its own channel (with
    /// [`Self::transaction`] and [`Self::broadcast`]). A packet expires
    /// [`PROPOSAL_LIFETIME_MS`] after the proposal was made.
    pub async fn prepare(&mut self, call: &CallSpec) -> Result<Endorsed, OnlineError> {
        let target = call.targets.first().cloned().unwrap_or_default();
        let on_chain = self.status(&target).await?.membership_version;
        let (tx_id, packet, tee_signature, response) = self.execute(call, on_chain).await?;
        let endorsements = self
            .endorse(&call.contract, &packet, &tee_signature)
            .await?;
        Ok(Endorsed {
            tx_id,
            packet,
            tee_signature,
            endorsements,
            response,
        })
    }

    /// The transaction of an endorsed call, signed by this client.
    pub fn transaction(&self, endorsed: &Endorsed) -> Vec<u8> {
        let invoke = Invoke::sign(
            self.home.identity(),
            endorsed.packet.clone(),
            endorsed.tee_signature.clone(),
            endorsed.endorsements.clone(),
        );
        Transaction {
            body: Some(Body::Invoke(invoke)),
        }
        .encode_to_vec()
    }

    /// Runs, endorses, orders and commits a call; returns its code at the
    /// first target once that node committed it.
    pub async fn invoke(&mut self, call: &CallSpec) -> Result<Committed, OnlineError> {
        let target = call.targets.first().cloned().unwrap_or_default();
        let watcher = self.watcher(&target).await?;
        let on_chain = watcher
            .membership_version
            .load(std::sync::atomic::Ordering::Acquire);
        let (tx_id, packet, tee_signature, response) = self.execute(call, on_chain).await?;
        let endorsements = self
            .endorse(&call.contract, &packet, &tee_signature)
            .await?;
        let invoke = Invoke::sign(self.home.identity(), packet, tee_signature, endorsements);
        let tx = Transaction {
            body: Some(Body::Invoke(invoke)),
        }
        .encode_to_vec();
        let (done, committed) = oneshot::channel();
        watcher.expect(tx_id, done)?;
        if let Err(e) = self.broadcast(vec![tx]).await {
            watcher.forget(&tx_id);
            return Err(e);
        }
        let (block, code) = tokio::time::timeout(COMMIT_TIMEOUT, committed)
            .await
            .map_err(|_| {
                watcher.forget(&tx_id);
                OnlineError::Transport {
                    peer: target.clone(),
                    reason: format!(
                        "no commit event for {tx_id} within {} s",
                        COMMIT_TIMEOUT.as_secs()
                    ),
                }
            })?
            .map_err(|_| OnlineError::Transport {
                peer: target.clone(),
                reason: "the commit event stream ended".into(),
            })?;
        let code = ValidationCode::from_number(code).ok_or_else(|| OnlineError::Refused {
            peer: target.clone(),
            reason: format!("unknown validation code {code}"),
        })?;
        Ok(Committed {
            tx_id,
            block,
            code,
            response,
        })
    }

    /// One endorser's endorsement, or why not.
    async fn ask_endorser(
        &self,
        index: usize,
        packet: &[u8],
        tee_signature: &[u8],
    ) -> Result<Endorsement, String> {
        let endorser = &self.config.endorsers[index];
        let name = endorser.name.to_string();
        let address = endorser.address.clone().unwrap_or_default();
        let reply = EndorserClient::new(self.channel(&name, &address).map_err(|e| e.to_string())?)
            .endorse(EndorseRequest {
                packet: packet.to_vec(),
                tee_signature: tee_signature.to_vec(),
            })
            .await
            .map_err(|s| call_failed(&name, &s).to_string())?
            .into_inner();
        if !reply.refusal.is_empty() {
            return Err(format!("{name}: {}", reply.refusal));
        }
        Endorsement::decode(reply.endorsement.as_slice())
            .map_err(|e| format!("{name}: endorsement does not decode: {e}"))
    }

    /// Endorsements from the endorsers the contract's policy names, until
    /// they satisfy it.
    pub async fn endorse(
        &self,
        contract: &str,
        packet: &[u8],
        tee_signature: &[u8],
    ) -> Result<Vec<Endorsement>, OnlineError> {
        let policy = &self
            .config
            .contract(contract)
            .ok_or_else(|| {
                OnlineError::Misconfigured(format!("contract {contract} is not in block 0"))
            })?
            .policy;
        let named = policy
            .principals()
            .iter()
            .fold(0u64, |set, p| set | self.config.endorsers_of(p));
        let satisfied = |set: u64| policy.satisfied_by(&|p| self.config.endorsers_of(p), set);
        let candidates: Vec<usize> = (0..self.config.endorsers.len())
            .filter(|i| named & (1 << i) != 0)
            .collect();
        // Ask the first endorsers that could satisfy the policy all at
        // once; only if some refuse, ask the others.
        let mut first = 0u64;
        for &i in &candidates {
            if satisfied(first) {
                break;
            }
            first |= 1 << i;
        }
        let (asked_first, asked_later): (Vec<usize>, Vec<usize>) =
            candidates.into_iter().partition(|i| first & (1 << i) != 0);
        let mut endorsements = Vec::new();
        let mut have = 0u64;
        let mut refusals = Vec::new();
        for round in [asked_first, asked_later] {
            let replies = futures_util::future::join_all(
                round
                    .iter()
                    .map(|&i| self.ask_endorser(i, packet, tee_signature)),
            )
            .await;
            for (index, reply) in round.into_iter().zip(replies) {
                match reply {
                    Ok(e) => {
                        endorsements.push(e);
                        have |= 1 << index;
                    }
                    Err(e) => refusals.push(e),
                }
            }
            if satisfied(have) {
                return Ok(endorsements);
            }
        }
        Err(OnlineError::Refused {
            peer: "endorsers".into(),
            reason: format!(
                "the policy {policy} is not satisfied: {}",
                refusals.join("; ")
            ),
        })
    }

    /// The commit-event watcher of `target`, subscribed from the node's
    /// height + 1 on first use and kept for every later call.
    async fn watcher(&mut self, target: &str) -> Result<Arc<Watcher>, OnlineError> {
        if let Some(w) = self.watchers.get(target).filter(|w| !w.is_closed()) {
            return Ok(Arc::clone(w));
        }
        let status = self.status(target).await?;
        let (height, membership_version) = (status.height, status.membership_version);
        let stream = self
            .business(target)?
            .events(EventsRequest { from: height + 1 })
            .await
            .map_err(|s| call_failed(target, &s))?
            .into_inner();
        let watcher = Arc::new(Watcher::default());
        watcher
            .membership_version
            .store(membership_version, std::sync::atomic::Ordering::Release);
        tokio::spawn(Arc::clone(&watcher).run(stream));
        self.watchers
            .insert(target.to_owned(), Arc::clone(&watcher));
        Ok(watcher)
    }

    fn business(
        &self,
        name: &str,
    ) -> Result<BusinessClient<tonic::transport::Channel>, OnlineError> {
        let node = self.config.business_node(name).ok_or_else(|| {
            OnlineError::Misconfigured(format!("{name} is not a business node in block 0"))
        })?;
        let address = node.member.address.clone().unwrap_or_default();
        Ok(BusinessClient::new(self.channel(name, &address)?))
    }

    /// Submits transactions to the ordering service: first to the orderer
    /// that took the last broadcast, then to the others in turn. Only the
    /// Raft leader takes them; while no orderer does (an election after the
    /// leader failed), it tries again every [`ORDERING_RETRY`] until
    /// [`ORDERING_PATIENCE`] has passed.
    pub async fn broadcast(&self, transactions: Vec<Vec<u8>>) -> Result<(), OnlineError> {
        let deadline = tokio::time::Instant::now() + ORDERING_PATIENCE;
        let count = self.config.orderers.len();
        loop {
            let mut failures = Vec::new();
            let mut lasting = false;
            let first = self
                .ordering_leader
                .load(std::sync::atomic::Ordering::Relaxed);
            for turn in 0..count {
                let index = (first + turn) % count;
                let Some(orderer) = self.config.orderers.get(index) else {
                    continue;
                };
                match self.broadcast_to(orderer, &transactions).await {
                    Ok(()) => {
                        self.ordering_leader
                            .store(index, std::sync::atomic::Ordering::Relaxed);
                        return Ok(());
                    }
                    Err((e, passing)) => {
                        lasting |= !passing;
                        failures.push(e.to_string());
                    }
                }
            }
            if lasting || tokio::time::Instant::now() + ORDERING_RETRY > deadline {
                return Err(OnlineError::Transport {
                    peer: "ordering service".into(),
                    reason: failures.join("; "),
                });
            }
            tokio::time::sleep(ORDERING_RETRY).await;
        }
    }

    /// One broadcast to one orderer; a failure says whether it may pass
    /// (the orderer is not the leader, or not reachable now) or will not
    /// (the transactions were refused).
    async fn broadcast_to(
        &self,
        orderer: &crate::config::Member,
        transactions: &[Vec<u8>],
    ) -> Result<(), (OnlineError, bool)> {
        let name = orderer.name.to_string();
        let address = orderer.address.clone().unwrap_or_default();
        let channel = self.channel(&name, &address).map_err(|e| (e, true))?;
        OrdererClient::new(channel)
            .max_encoding_message_size(8 << 20)
            .broadcast(BroadcastRequest {
                transactions: transactions.to_vec(),
            })
            .await
            .map_err(|s| {
                let passing = matches!(
                    s.code(),
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::DeadlineExceeded
                );
                (call_failed(&name, &s), passing)
            })?;
        Ok(())
    }

    /// A business node's status.
    pub async fn status(&self, node: &str) -> Result<StatusReply, OnlineError> {
        Ok(self
            .business(node)?
            .status(StatusRequest {})
            .await
            .map_err(|s| call_failed(node, &s))?
            .into_inner())
    }

    /// The block at or after `from` in which business node `node` has
    /// transaction `tx_id`, and the code it gave it there; waits up to
    /// `patience` for that block.
    pub async fn code_of(
        &self,
        node: &str,
        tx_id: &TxId,
        from: u64,
        patience: Duration,
    ) -> Result<(u64, ValidationCode), OnlineError> {
        let mut stream = self
            .business(node)?
            .events(EventsRequest { from })
            .await
            .map_err(|s| call_failed(node, &s))?
            .into_inner();
        let search = async {
            while let Some(event) = stream.message().await.map_err(|s| call_failed(node, &s))? {
                let found = event
                    .codes
                    .iter()
                    .find(|c| c.tx_id.as_slice() == tx_id.as_bytes().as_slice());
                if let Some(code) = found {
                    let code = ValidationCode::from_number(code.code).ok_or_else(|| {
                        OnlineError::Refused {
                            peer: node.to_owned(),
                            reason: format!("unknown validation code {}", code.code),
                        }
                    })?;
                    return Ok((event.block, code));
                }
            }
            Err(OnlineError::Transport {
                peer: node.to_owned(),
                reason: "the commit event stream ended".into(),
            })
        };
        tokio::time::timeout(patience, search)
            .await
            .map_err(|_| OnlineError::Transport {
                peer: node.to_owned(),
                reason: format!("{tx_id} not committed within {} s", patience.as_secs()),
            })?
    }

    /// An orderer's view of the Raft group and its chain.
    pub async fn orderer_status(
        &self,
        name: &str,
    ) -> Result<sotto_wire::ledger::OrdererStatusReply, OnlineError> {
        let orderer = self.config.orderer(name).ok_or_else(|| {
            OnlineError::Misconfigured(format!("{name} is not an orderer in block 0"))
        })?;
        let address = orderer.address.clone().unwrap_or_default();
        Ok(OrdererClient::new(self.channel(name, &address)?)
            .status(sotto_wire::ledger::OrdererStatusRequest {})
            .await
            .map_err(|s| call_failed(name, &s))?
            .into_inner())
    }

    /// Block `number` from the first orderer that has it.
    pub async fn block(&self, number: u64) -> Result<Block, OnlineError> {
        let mut failures = Vec::new();
        for orderer in &self.config.orderers {
            let name = orderer.name.to_string();
            let address = orderer.address.clone().unwrap_or_default();
            let result = async {
                let mut stream = OrdererClient::new(self.channel(&name, &address)?)
                    .max_decoding_message_size(8 << 20)
                    .deliver(DeliverRequest { from: number })
                    .await
                    .map_err(|s| call_failed(&name, &s))?
                    .into_inner();
                let message = tokio::time::timeout(Duration::from_secs(2), stream.message())
                    .await
                    .map_err(|_| OnlineError::Refused {
                        peer: name.clone(),
                        reason: format!("block {number} is not cut yet"),
                    })?
                    .map_err(|s| call_failed(&name, &s))?
                    .ok_or_else(|| OnlineError::Refused {
                        peer: name.clone(),
                        reason: format!("no block {number}"),
                    })?;
                Block::decode(message.block.as_slice()).map_err(|e| OnlineError::Refused {
                    peer: name.clone(),
                    reason: format!("block {number} does not decode: {e}"),
                })
            }
            .await;
            match result {
                Ok(block) => return Ok(block),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Err(OnlineError::Transport {
            peer: "ordering service".into(),
            reason: failures.join("; "),
        })
    }
}
