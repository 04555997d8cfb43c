//! A compute node as a process: an enclave of the registration center's
//! group that derives the ledger keys from the group keys it is given,
//! publishes the envelope public key (signed by itself, with the center's
//! signed membership), and runs encrypted requests with
//! [`crate::compute::Enclave`], loading state from the target business node
//! (over a load channel when that node keeps its records in clear).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rand::rngs::OsRng;
use sotto_crypto::hash::FieldHasher;
use sotto_crypto::hpke::HpkePublicKey;
use sotto_crypto::identity::IdentityPublic;
use sotto_crypto::secret::SecretBytes;
use sotto_node::NodeHome;
use sotto_tee::online::node::CenterClient;
use sotto_wire::ledger::business_client::BusinessClient;
use sotto_wire::ledger::compute_server::{Compute, ComputeServer};
use sotto_wire::ledger::{
    EnvelopeKeyReply, EnvelopeKeyRequest, ExecuteReply, ExecuteRequest, LoadRequest,
};
use sotto_wire::tee::MembershipUpdate;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

use super::endorser::{check_center, follow_group};
use super::{caller, listener_failed, server, tls_for, unix_ms, Channels, OnlineError};
use crate::block::Block;
use crate::clear::{self, ChannelAsk};
use crate::compute::{Enclave, Held, Loaded, Outcome};
use crate::config::{LedgerConfig, StorageMode};
use crate::contracts::{builtin, Contract};
use crate::keys::LedgerKeys;
use crate::packet::Version;
use crate::request::Request as LedgerRequest;

/// Domain of a member's signature over the envelope public key.
pub const ENVELOPE_KEY_DOMAIN: &str = "sotto/ledger/envelope-key/v1";
/// The most load rounds one request may take (each round loads every key
/// the contract asked for so far).
pub const MAX_ROUNDS: usize = 16;

/// What a member signs to vouch for the envelope key.
pub fn envelope_statement(ledger: &[u8; 32], version: u64, public_key: &[u8]) -> [u8; 32] {
    let mut hasher = FieldHasher::new(ENVELOPE_KEY_DOMAIN);
    hasher
        .field(ledger)
        .field(&version.to_be_bytes())
        .field(public_key);
    hasher.finish()
}

struct Keys {
    keys: Arc<LedgerKeys>,
    membership: MembershipUpdate,
}

struct Inner {
    config: LedgerConfig,
    ledger: [u8; 32],
    home: NodeHome,
    channels: Channels,
    measurement: Vec<u8>,
    contracts: Vec<Box<dyn Contract>>,
    keys: RwLock<Option<Keys>>,
}

/// Fetches every group key version up to `current` and derives the keys.
async fn ledger_keys(
    client: &mut CenterClient,
    home: &NodeHome,
    current: u64,
) -> Result<LedgerKeys, OnlineError> {
    let mut group_keys = Vec::new();
    for version in 1..=current {
        let (v, key) = client.group_key_version(home, version).await?;
        let key =
            SecretBytes::<32>::from_slice("group key", &key).map_err(|e| OnlineError::Refused {
                peer: "registration center".into(),
                reason: e.to_string(),
            })?;
        group_keys.push((v, key));
    }
    LedgerKeys::from_group_keys(&group_keys)
        .map_err(|e| OnlineError::Misconfigured(format!("group keys: {e}")))
}

/// Starts the compute node (its home registered with the center first,
/// `sotto node register`) and serves until `shutdown`. `measurement` is
/// this enclave's, as its evidence states it.
pub async fn serve(
    listener: TcpListener,
    home: NodeHome,
    genesis: Block,
    center_address: String,
    measurement: Vec<u8>,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), OnlineError> {
    let (config, tip) = genesis
        .open_genesis("block 0")
        .map_err(|e| OnlineError::Genesis(e.to_string()))?;
    let center = check_center(&home, &config)?;
    let inner = Arc::new(Inner {
        channels: Channels::new(tls_for(&home, &config)?),
        config,
        ledger: tip.ledger,
        home,
        measurement,
        contracts: builtin(),
        keys: RwLock::new(None),
    });
    refresh_keys(&inner, &center, &center_address).await?;
    let follower = Arc::clone(&inner);
    tokio::spawn(async move {
        let inner = &follower;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = {
            let inner = Arc::clone(inner);
            let (center, address) = (center.clone(), center_address.clone());
            async move {
                follow_group(
                    &inner.home,
                    &inner.config,
                    &center,
                    &address,
                    |_, update| {
                        let _ = tx.send(update.clone());
                    },
                )
                .await;
            }
        };
        tokio::spawn(watcher);
        while let Some(update) = rx.recv().await {
            let stale = inner
                .keys
                .read()
                .map_or(true, |k| k.as_ref().is_none_or(|k| k.membership != update));
            if stale {
                if let Err(e) = refresh_keys(inner, &center, &center_address).await {
                    tracing::warn!("keys not refreshed: {e}");
                }
            }
        }
    });
    server(inner.channels.tls())?
        .add_service(ComputeServer::new(Service { inner }))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await
        .map_err(listener_failed)
}

/// Reads the membership and, when the group key moved on, the keys.
async fn refresh_keys(
    inner: &Inner,
    center: &sotto_node::NodeName,
    address: &str,
) -> Result<(), OnlineError> {
    let mut client = CenterClient::connect(&inner.home, center.clone(), address).await?;
    let (membership, update) = client.members_signed().await?;
    let me = inner.home.name().as_str();
    if !membership.members.iter().any(|m| m.0 == me) {
        return Err(OnlineError::Misconfigured(format!(
            "{me} is not a member of the compute group; register it first (`sotto node register`)"
        )));
    }
    let current = inner
        .keys
        .read()
        .ok()
        .and_then(|k| k.as_ref().map(|k| Arc::clone(&k.keys)));
    let keys = match current {
        Some(keys) if keys.current() == membership.group_key_version => keys,
        _ => Arc::new(ledger_keys(&mut client, &inner.home, membership.group_key_version).await?),
    };
    tracing::info!(
        version = keys.current(),
        membership = membership.version,
        "ledger keys ready"
    );
    if let Ok(mut slot) = inner.keys.write() {
        *slot = Some(Keys {
            keys,
            membership: update,
        });
    }
    Ok(())
}

struct Service {
    inner: Arc<Inner>,
}

impl Service {
    fn keys(&self) -> Result<(Arc<LedgerKeys>, MembershipUpdate), Status> {
        let guard = self
            .inner
            .keys
            .read()
            .map_err(|_| Status::internal("poisoned"))?;
        let keys = guard
            .as_ref()
            .ok_or_else(|| Status::unavailable("this compute node has no ledger keys yet"))?;
        Ok((Arc::clone(&keys.keys), keys.membership.clone()))
    }

    /// Loads `ids` from business node `target` (over a load channel when
    /// the node keeps its records in clear).
    async fn load(
        &self,
        target: &str,
        ids: &[[u8; 32]],
    ) -> Result<Vec<([u8; 32], Loaded)>, Status> {
        let node =
            self.inner.config.business_node(target).ok_or_else(|| {
                Status::invalid_argument(format!("{target} is not a business node"))
            })?;
        let address = node.member.address.clone().unwrap_or_default();
        let channel = self
            .inner
            .channels
            .get(target, &address)
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (ask, secret) = match node.mode {
            StorageMode::Ciphertext => (ChannelAsk::default(), None),
            StorageMode::Plaintext => {
                let (ask, secret) = clear::ask(
                    self.inner.home.identity(),
                    self.inner.home.name().as_str(),
                    &self.inner.ledger,
                    target,
                    ids,
                    unix_ms(),
                    &mut OsRng,
                );
                (ask, Some(secret))
            }
        };
        let reply = BusinessClient::new(channel)
            .max_decoding_message_size(8 << 20)
            .load(LoadRequest {
                keys: ids.iter().map(|k| k.to_vec()).collect(),
                channel: ask.request,
                channel_signature: ask.signature,
            })
            .await
            .map_err(|s| {
                Status::unavailable(format!("loading state from {target}: {}", s.message()))
            })?
            .into_inner();
        let channel_key = secret
            .map(|s| s.open(&reply.sealed_reply_key))
            .transpose()
            .map_err(|e| Status::internal(format!("{target}: {e}")))?;
        reply
            .entries
            .into_iter()
            .map(|e| {
                let key: [u8; 32] = e.key.as_slice().try_into().map_err(|_| {
                    Status::internal(format!("{target} answered a key id that is not 32 bytes"))
                })?;
                let version = e.exists.then_some(Version {
                    block: e.block,
                    tx: e.tx,
                });
                let held = match (e.kept, &channel_key) {
                    (false, _) => Held::Nothing,
                    (true, None) => Held::Sealed(e.sealed),
                    (true, Some(channel)) => Held::Clear(
                        channel
                            .open_value(&key, version, &e.sealed)
                            .map_err(|e| Status::internal(format!("{target}: {e}")))?,
                    ),
                };
                Ok((key, Loaded { version, held }))
            })
            .collect()
    }
}

#[tonic::async_trait]
impl Compute for Service {
    async fn envelope_key(
        &self,
        request: Request<EnvelopeKeyRequest>,
    ) -> Result<Response<EnvelopeKeyReply>, Status> {
        let inner = &self.inner;
        caller(&request, |name| {
            inner.config.client(name).map(|c| c.identity)
        })?;
        let (keys, membership) = self.keys()?;
        let version = keys.current();
        let public_key = keys
            .envelope_public(version)
            .ok_or_else(|| Status::unavailable("no envelope key"))?
            .to_bytes();
        let signature = inner
            .home
            .identity()
            .sign(
                ENVELOPE_KEY_DOMAIN,
                &envelope_statement(&inner.ledger, version, &public_key),
            )
            .to_vec();
        Ok(Response::new(EnvelopeKeyReply {
            version,
            public_key,
            member: inner.home.name().to_string(),
            signature,
            membership: membership.membership_json,
            membership_signature: membership.signature,
        }))
    }

    async fn execute(
        &self,
        request: Request<ExecuteRequest>,
    ) -> Result<Response<ExecuteReply>, Status> {
        let inner = &self.inner;
        caller(&request, |name| {
            inner.config.client(name).map(|c| c.identity)
        })?;
        let bytes = request.into_inner().request;
        let ledger_request = <LedgerRequest as prost::Message>::decode(bytes.as_slice())
            .map_err(|e| Status::invalid_argument(format!("the request does not decode: {e}")))?;
        let (keys, _) = self.keys()?;
        let enclave = Enclave {
            config: &inner.config,
            ledger: inner.ledger,
            member: inner.home.name().as_str(),
            identity: inner.home.identity(),
            measurement: &inner.measurement,
            keys: &keys,
            contracts: &inner.contracts,
        };
        let opened = enclave
            .open(&ledger_request)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let target = opened.proposal.targets.first().cloned().unwrap_or_default();
        let mut loaded: HashMap<[u8; 32], Loaded> = HashMap::new();
        for _ in 0..MAX_ROUNDS {
            let outcome = {
                let mut rng = OsRng;
                enclave.run(&opened, &loaded, &mut rng)
            }
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
            match outcome {
                Outcome::Fetch(ids) => {
                    for (key, value) in self.load(&target, &ids).await? {
                        loaded.insert(key, value);
                    }
                }
                Outcome::Executed {
                    packet,
                    tee_signature,
                    response,
                } => {
                    return Ok(Response::new(ExecuteReply {
                        packet,
                        tee_signature,
                        response,
                        refused: false,
                    }))
                }
                Outcome::Refused { response } => {
                    return Ok(Response::new(ExecuteReply {
                        response,
                        refused: true,
                        ..ExecuteReply::default()
                    }))
                }
            }
        }
        Err(Status::resource_exhausted(format!(
            "the contract asked for state in more than {MAX_ROUNDS} rounds"
        )))
    }
}

/// An envelope public key a client checked.
#[derive(Clone, Debug)]
pub struct EnvelopeKey {
    /// Its group key version.
    pub version: u64,
    /// The key.
    pub key: HpkePublicKey,
    /// The membership version it was vouched for under.
    pub membership_version: u64,
}

/// Checks an envelope key reply: the membership is the center's (key from
/// block 0) and no older than the one on the chain (`on_chain`: a revoked
/// enclave can only show an older one), the signer an active member of
/// it, its signature valid.
pub fn check_envelope_key(
    config: &LedgerConfig,
    ledger: &[u8; 32],
    reply: &EnvelopeKeyReply,
    on_chain: u64,
) -> Result<EnvelopeKey, String> {
    let update = MembershipUpdate {
        membership_json: reply.membership.clone(),
        signature: reply.membership_signature.clone(),
    };
    let membership = sotto_tee::online::center::open_update(&update, &config.center.identity)
        .map_err(|e| format!("the membership is not the registration center's: {e}"))?;
    if membership.version < on_chain {
        return Err(format!(
            "{} shows membership v{}, older than v{on_chain} on the ledger: it is not a current member (revoked, or out of date)",
            reply.member, membership.version
        ));
    }
    let (_, identity, _) = membership
        .members
        .iter()
        .find(|m| m.0 == reply.member)
        .ok_or_else(|| format!("{} is not a member of the compute group", reply.member))?;
    let identity = hex::decode(identity)
        .ok()
        .and_then(|b| IdentityPublic::from_bytes(&b).ok())
        .ok_or_else(|| {
            format!(
                "{}'s identity key in the membership does not decode",
                reply.member
            )
        })?;
    identity
        .verify(
            ENVELOPE_KEY_DOMAIN,
            &envelope_statement(ledger, reply.version, &reply.public_key),
            &reply.signature,
            "envelope key",
        )
        .map_err(|_| format!("the envelope key is not signed by {}", reply.member))?;
    let key =
        HpkePublicKey::from_bytes(&reply.public_key).map_err(|e| format!("envelope key: {e}"))?;
    Ok(EnvelopeKey {
        version: reply.version,
        key,
        membership_version: membership.version,
    })
}
