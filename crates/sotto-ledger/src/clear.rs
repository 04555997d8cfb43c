//! Plaintext-mode business nodes (sans-IO). Such a node keeps the values of
//! the transactions that name it in clear, and nobody else sees them on the
//! way:
//!
//! - **Clear copies**: for each plaintext-mode target the enclave seals a
//!   copy of the writes to that node's identity (HPKE to the X25519 form of
//!   the Ed25519 key block 0 names), bound to the ledger, the transaction
//!   and the node. The copy is part of the TEE-signed packet; only the node
//!   opens it.
//! - **Load channel**: a compute enclave reads from such a node by signing a
//!   fresh HPKE key with its member key. The node checks that the signer is
//!   the caller and a current member of the compute group, draws a reply
//!   key, seals it to the fresh key, and sends every value under the reply
//!   key, bound to the ledger, the node, the key id and its version.

use std::collections::BTreeMap;

use prost::Message;
use rand_core::{CryptoRng, RngCore};
use sotto_crypto::hash::FieldHasher;
use sotto_crypto::hpke::{HpkePublicKey, HpkeSecretKey};
use sotto_crypto::identity::{IdentityKey, IdentityPublic};
use sotto_crypto::secret::SecretBytes;
use sotto_crypto::{aead, CryptoError};

use crate::packet::{ClearCopy, Version};

/// HPKE info of a clear copy.
const COPY_INFO: &[u8] = b"sotto/ledger/clear-copy/v1";
/// Domain of an enclave's signature over a load channel request.
pub const CHANNEL_DOMAIN: &str = "sotto/ledger/load-channel/v1";
/// HPKE info of the reply key sealed to a channel key.
const CHANNEL_INFO: &[u8] = b"sotto/ledger/load-channel-key/v1";
/// The channel request format this build writes and accepts.
pub const CHANNEL_FORMAT: u32 = 1;
/// How far a channel request's time may be from the node's clock.
pub const CHANNEL_SKEW_MS: u64 = 120_000;

/// One clear write.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ClearWrite {
    /// The key id.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The value in clear.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// What a clear copy holds.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ClearWrites {
    /// The transaction id.
    #[prost(bytes = "vec", tag = "1")]
    pub tx_id: Vec<u8>,
    /// The node it is for.
    #[prost(string, tag = "2")]
    pub target: String,
    /// The writes that set a value (deletes carry none).
    #[prost(message, repeated, tag = "3")]
    pub writes: Vec<ClearWrite>,
}

/// A compute enclave's request to open a load channel, signed by its member
/// key.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ChannelRequest {
    /// [`CHANNEL_FORMAT`].
    #[prost(uint32, tag = "1")]
    pub format: u32,
    /// The ledger id.
    #[prost(bytes = "vec", tag = "2")]
    pub ledger: Vec<u8>,
    /// The business node asked.
    #[prost(string, tag = "3")]
    pub node: String,
    /// The compute group member asking.
    #[prost(string, tag = "4")]
    pub member: String,
    /// The fresh HPKE public key the reply key is sealed to.
    #[prost(bytes = "vec", tag = "5")]
    pub channel_key: Vec<u8>,
    /// Digest of the key ids asked for, in order.
    #[prost(bytes = "vec", tag = "6")]
    pub keys_digest: Vec<u8>,
    /// When the enclave made it (Unix ms).
    #[prost(uint64, tag = "7")]
    pub time_ms: u64,
}

/// Why a clear copy or a load channel was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClearError {
    /// A clear copy does not open with this node's key, or does not decode.
    #[error("the clear copy does not open with this node's identity key")]
    CopySealed,
    /// A clear copy names another transaction or node than the packet.
    #[error("the clear copy is for another transaction or node")]
    CopyMisplaced,
    /// A clear copy's keys are not the packet's.
    #[error("the clear copy's keys differ from the packet's writes")]
    CopyKeys,
    /// A plaintext-mode node was asked without a load channel.
    #[error("this business node keeps its records in clear: a load must open a load channel")]
    NoChannel,
    /// The channel request does not decode, or its key is not a key.
    #[error("the load channel request is malformed: {0}")]
    Malformed(String),
    /// The channel request's format is not this build's.
    #[error("load channel format {0} is not {CHANNEL_FORMAT}")]
    Format(u32),
    /// The channel request names another ledger.
    #[error("the load channel request names another ledger")]
    WrongLedger,
    /// The channel request names another business node.
    #[error("the load channel request is for business node {0}, not this one")]
    WrongNode(String),
    /// The member in the request is not the caller.
    #[error("the load channel request is by {member}, but {caller} sent it")]
    NotCaller {
        /// The member the request names.
        member: String,
        /// The authenticated caller.
        caller: String,
    },
    /// The member is not a current member of the compute group.
    #[error("{0} is not a current member of the compute group")]
    NotMember(String),
    /// The member's signature over the request does not verify.
    #[error("the load channel request is not signed by member {0}")]
    BadSignature(String),
    /// The request's time is too far from the node's clock.
    #[error("the load channel request was made {0} s away from this node's clock (at most {max} s): clocks differ or it was replayed", max = CHANNEL_SKEW_MS / 1000)]
    Stale(u64),
    /// The keys asked for are not the ones the request signs.
    #[error("the keys asked for are not the ones the load channel request signs")]
    KeysDiffer,
    /// The reply key or a value does not open.
    #[error("a value sent over the load channel does not open")]
    ReplySealed,
}

fn copy_aad(ledger: &[u8; 32], tx_id: &[u8], target: &str) -> [u8; 32] {
    let mut hasher = FieldHasher::new("sotto/ledger/clear-copy-aad/v1");
    hasher.field(ledger).field(tx_id).field(target.as_bytes());
    hasher.finish()
}

/// Seals the value-setting writes of a transaction for `target`.
pub fn seal_copy<R: RngCore + CryptoRng>(
    target: &str,
    identity: &IdentityPublic,
    ledger: &[u8; 32],
    tx_id: &[u8],
    writes: &[([u8; 32], &[u8])],
    rng: &mut R,
) -> Result<ClearCopy, CryptoError> {
    let body = ClearWrites {
        tx_id: tx_id.to_vec(),
        target: target.to_owned(),
        writes: writes
            .iter()
            .map(|(key, value)| ClearWrite {
                key: key.to_vec(),
                value: value.to_vec(),
            })
            .collect(),
    }
    .encode_to_vec();
    let sealed =
        identity
            .to_hpke()?
            .seal(COPY_INFO, &copy_aad(ledger, tx_id, target), &body, rng)?;
    Ok(ClearCopy {
        target: target.to_owned(),
        sealed,
    })
}

/// Opens this node's clear copy; returns each key's value in clear.
pub fn open_copy(
    key: &HpkeSecretKey,
    ledger: &[u8; 32],
    tx_id: &[u8],
    me: &str,
    sealed: &[u8],
) -> Result<BTreeMap<[u8; 32], Vec<u8>>, ClearError> {
    let body = key
        .open(COPY_INFO, &copy_aad(ledger, tx_id, me), sealed)
        .map_err(|_| ClearError::CopySealed)?;
    let copy = ClearWrites::decode(body.as_slice()).map_err(|_| ClearError::CopySealed)?;
    if copy.tx_id != tx_id || copy.target != me {
        return Err(ClearError::CopyMisplaced);
    }
    let mut values = BTreeMap::new();
    for write in copy.writes {
        let id: [u8; 32] = write
            .key
            .as_slice()
            .try_into()
            .map_err(|_| ClearError::CopyKeys)?;
        if values.insert(id, write.value).is_some() {
            return Err(ClearError::CopyKeys);
        }
    }
    Ok(values)
}

/// Digest of the key ids of one load, in order.
pub fn keys_digest(keys: &[[u8; 32]]) -> [u8; 32] {
    let mut hasher = FieldHasher::new("sotto/ledger/load-keys/v1");
    hasher.field(&(keys.len() as u64).to_be_bytes());
    for key in keys {
        hasher.field(key);
    }
    hasher.finish()
}

/// A channel request and the member's signature over it (empty: no
/// channel, for a ciphertext-mode node).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChannelAsk {
    /// The encoded [`ChannelRequest`].
    pub request: Vec<u8>,
    /// The member's signature under [`CHANNEL_DOMAIN`].
    pub signature: Vec<u8>,
}

/// The enclave's half of a channel being opened (its fresh private key).
#[derive(Debug)]
pub struct ChannelSecret {
    key: HpkeSecretKey,
    ledger: [u8; 32],
    node: String,
    request: Vec<u8>,
}

/// The key values travel under, held by both ends of one load. Zeroized on
/// drop.
pub struct ChannelKey {
    key: SecretBytes<32>,
    ledger: [u8; 32],
    node: String,
}

impl std::fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChannelKey(node={}, key=redacted)", self.node)
    }
}

/// Inside the enclave: asks business node `node` for `keys` over a fresh
/// channel.
pub fn ask<R: RngCore + CryptoRng>(
    identity: &IdentityKey,
    member: &str,
    ledger: &[u8; 32],
    node: &str,
    keys: &[[u8; 32]],
    now_ms: u64,
    rng: &mut R,
) -> (ChannelAsk, ChannelSecret) {
    let (key, public) = HpkeSecretKey::generate(rng);
    let request = ChannelRequest {
        format: CHANNEL_FORMAT,
        ledger: ledger.to_vec(),
        node: node.to_owned(),
        member: member.to_owned(),
        channel_key: public.to_bytes(),
        keys_digest: keys_digest(keys).to_vec(),
        time_ms: now_ms,
    }
    .encode_to_vec();
    let signature = identity.sign(CHANNEL_DOMAIN, &request).to_vec();
    (
        ChannelAsk {
            request: request.clone(),
            signature,
        },
        ChannelSecret {
            key,
            ledger: *ledger,
            node: node.to_owned(),
            request,
        },
    )
}

fn reply_aad(request: &[u8]) -> [u8; 32] {
    let mut hasher = FieldHasher::new("sotto/ledger/load-channel-reply/v1");
    hasher.field(request);
    hasher.finish()
}

/// What a business node needs to judge a channel request.
pub struct Judge<'a> {
    /// The ledger id.
    pub ledger: &'a [u8; 32],
    /// This node's name.
    pub me: &'a str,
    /// The caller authenticated by mutual TLS.
    pub caller: &'a str,
    /// The compute group's members now.
    pub members: &'a BTreeMap<String, IdentityPublic>,
    /// The node's clock (Unix ms).
    pub now_ms: u64,
}

impl Judge<'_> {
    /// Checks a channel request for `keys`; on success returns the reply
    /// key and its seal to the enclave's channel key.
    pub fn grant<R: RngCore + CryptoRng>(
        &self,
        ask: &ChannelAsk,
        keys: &[[u8; 32]],
        rng: &mut R,
    ) -> Result<(ChannelKey, Vec<u8>), ClearError> {
        if ask.request.is_empty() {
            return Err(ClearError::NoChannel);
        }
        let request = ChannelRequest::decode(ask.request.as_slice())
            .map_err(|e| ClearError::Malformed(e.to_string()))?;
        if request.format != CHANNEL_FORMAT {
            return Err(ClearError::Format(request.format));
        }
        if request.ledger != self.ledger {
            return Err(ClearError::WrongLedger);
        }
        if request.node != self.me {
            return Err(ClearError::WrongNode(request.node));
        }
        if request.member != self.caller {
            return Err(ClearError::NotCaller {
                member: request.member,
                caller: self.caller.to_owned(),
            });
        }
        let member = self
            .members
            .get(&request.member)
            .ok_or_else(|| ClearError::NotMember(request.member.clone()))?;
        member
            .verify(
                CHANNEL_DOMAIN,
                &ask.request,
                &ask.signature,
                "load channel request",
            )
            .map_err(|_| ClearError::BadSignature(request.member.clone()))?;
        let apart = self.now_ms.abs_diff(request.time_ms);
        if apart > CHANNEL_SKEW_MS {
            return Err(ClearError::Stale(apart / 1000));
        }
        if request.keys_digest != keys_digest(keys) {
            return Err(ClearError::KeysDiffer);
        }
        let channel = HpkePublicKey::from_bytes(&request.channel_key)
            .map_err(|e| ClearError::Malformed(e.to_string()))?;
        let mut reply = [0u8; 32];
        rng.fill_bytes(&mut reply);
        let key = SecretBytes::new(reply);
        let sealed = channel
            .seal(CHANNEL_INFO, &reply_aad(&ask.request), key.expose(), rng)
            .map_err(|e| ClearError::Malformed(e.to_string()))?;
        Ok((
            ChannelKey {
                key,
                ledger: *self.ledger,
                node: self.me.to_owned(),
            },
            sealed,
        ))
    }
}

impl ChannelSecret {
    /// Opens the reply key the business node sealed to this channel.
    pub fn open(&self, sealed_reply_key: &[u8]) -> Result<ChannelKey, ClearError> {
        let key = self
            .key
            .open(CHANNEL_INFO, &reply_aad(&self.request), sealed_reply_key)
            .map_err(|_| ClearError::ReplySealed)?;
        let key = SecretBytes::<32>::from_slice("load channel reply key", &key)
            .map_err(|_| ClearError::ReplySealed)?;
        Ok(ChannelKey {
            key,
            ledger: self.ledger,
            node: self.node.clone(),
        })
    }
}

impl ChannelKey {
    fn aad(&self, key: &[u8; 32], version: Option<Version>) -> [u8; 32] {
        let mut hasher = FieldHasher::new("sotto/ledger/load-channel-value/v1");
        let version = version.unwrap_or_default();
        hasher
            .field(&self.ledger)
            .field(self.node.as_bytes())
            .field(key)
            .field(&version.block.to_be_bytes())
            .field(&version.tx.to_be_bytes());
        hasher.finish()
    }

    /// At the business node: seals the value of `key` at `version`.
    pub fn seal_value<R: RngCore + CryptoRng>(
        &self,
        key: &[u8; 32],
        version: Option<Version>,
        value: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, CryptoError> {
        aead::seal(&self.key, &self.aad(key, version), value, rng)
    }

    /// In the enclave: opens the value of `key` at `version`.
    pub fn open_value(
        &self,
        key: &[u8; 32],
        version: Option<Version>,
        sealed: &[u8],
    ) -> Result<Vec<u8>, ClearError> {
        aead::open(&self.key, &self.aad(key, version), sealed).map_err(|_| ClearError::ReplySealed)
    }
}
