//! The root KMS engine, free of I/O: answers public key requests,
//! recoveries and rewraps from the key ring, checks ownership against the
//! caller's authenticated name and the per-participant rate limit, and
//! prepares key changes. Every answer comes with the audit event the driver
//! must append; key changes come back as records the driver persists before
//! applying them.

use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::identity::{IdentityKey, IdentityPublic};
use zeroize::Zeroizing;

use crate::audit::AuditEvent;
use crate::escrow::{self, Envelope, KeyRef};
use crate::keys::{KeyId, KeyRecord, KeyRing};
use crate::limiter::RateLimiter;
use crate::reply::{self, PublicKeyStatement, SealedAnswer};
use crate::reply_channel::{ChannelGrant, ReplyChannels};
use crate::KmsError;
use sotto_crypto::ids::ReplyChannelId;

/// An engine answer and the audit event it produced, if any.
pub struct Answer<T> {
    /// What to send back.
    pub result: Result<T, KmsError>,
    /// What to append to the audit log first.
    pub audit: Option<AuditEvent>,
}

/// A public key answer: a signed statement, or the same sealed to the
/// caller's channel key.
pub enum PublicKeyAnswer {
    /// Statement JSON and signature.
    Plain(reply::SignedStatement),
    /// Statement and signature sealed to the channel key.
    Sealed(Vec<u8>),
}

/// A prepared key change and its audit event.
pub struct KeyChange {
    /// The record to persist, then apply.
    pub record: KeyRecord,
    /// The audit event.
    pub audit: AuditEvent,
}

/// The root KMS's state and rules.
pub struct KmsEngine {
    ring: RwLock<KeyRing>,
    signing: IdentityKey,
    limiter: Mutex<RateLimiter>,
    channels: Mutex<ReplyChannels>,
}

fn poisoned() -> KmsError {
    KmsError::Corrupt("a KMS lock was poisoned by an earlier panic".into())
}

/// Parses an escrowed envelope received from a peer.
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope, KmsError> {
    serde_json::from_slice(bytes).map_err(|e| KmsError::Malformed {
        what: "envelope".into(),
        reason: format!("line {}, column {}: {e}", e.line(), e.column()),
    })
}

/// Parses a reply channel id received from a peer.
pub fn parse_channel(bytes: &[u8]) -> Result<ReplyChannelId, KmsError> {
    let bytes: [u8; ReplyChannelId::LEN] = bytes.try_into().map_err(|_| KmsError::Malformed {
        what: "channel".into(),
        reason: format!(
            "{} bytes, expected a {}-byte reply channel id",
            bytes.len(),
            ReplyChannelId::LEN
        ),
    })?;
    Ok(ReplyChannelId::from_bytes(bytes))
}

fn layer_name(layer: &KeyRef) -> String {
    layer.to_string()
}

impl KmsEngine {
    /// An engine over `ring`, signing with `signing`, allowing each
    /// participant `rate` recoveries per second with bursts of `burst`;
    /// reply channels live [`crate::reply_channel::DEFAULT_TTL`].
    pub fn new(ring: KeyRing, signing: IdentityKey, rate: u32, burst: u32) -> Self {
        Self {
            ring: RwLock::new(ring),
            signing,
            limiter: Mutex::new(RateLimiter::new(rate, burst)),
            channels: Mutex::new(ReplyChannels::new(crate::reply_channel::DEFAULT_TTL)),
        }
    }

    /// The same engine with reply channels that live `ttl`.
    pub fn with_channel_ttl(self, ttl: Duration) -> Self {
        Self {
            channels: Mutex::new(ReplyChannels::new(ttl)),
            ..self
        }
    }

    /// The public half of the KMS signing key.
    pub fn signing_public(&self) -> IdentityPublic {
        self.signing.public()
    }

    /// The signing key's seed and every key record, for the sealed bundle.
    pub fn snapshot(&self) -> Result<(Zeroizing<[u8; 32]>, Vec<KeyRecord>), KmsError> {
        let ring = self.ring.read().map_err(|_| poisoned())?;
        Ok((self.signing.to_seed(), ring.records()))
    }

    /// Every key pair version's public description.
    pub fn key_infos(&self) -> Result<Vec<crate::keys::KeyInfo>, KmsError> {
        Ok(self.ring.read().map_err(|_| poisoned())?.infos())
    }

    /// A public key for `caller`, optionally sealed to its channel key.
    pub fn public_key<R: RngCore + CryptoRng>(
        &self,
        caller: &str,
        key_id: &str,
        version: Option<u32>,
        channel_key: Option<&[u8]>,
        rng: &mut R,
    ) -> Answer<PublicKeyAnswer> {
        let statement = (|| {
            let id: KeyId = key_id.parse()?;
            let ring = self.ring.read().map_err(|_| poisoned())?;
            Ok::<_, KmsError>(PublicKeyStatement {
                version: 1,
                key: ring.info(&id, version)?.clone(),
                to: caller.to_owned(),
            })
        })();
        let statement = match statement {
            Ok(s) => s,
            Err(e) => {
                return Answer {
                    result: Err(e),
                    audit: None,
                }
            }
        };
        let signed = reply::sign_statement(&self.signing, &statement);
        let audit = Some(AuditEvent::PublicKeyHandedOut {
            key_id: statement.key.key_id.clone(),
            version: statement.key.version,
            to: caller.to_owned(),
            channel: channel_key.is_some(),
        });
        let result = match channel_key {
            None => Ok(PublicKeyAnswer::Plain(signed)),
            Some(key) => reply::seal_to_channel(key, &signed, rng).map(PublicKeyAnswer::Sealed),
        };
        Answer { result, audit }
    }

    fn check_ownership(&self, caller: &str, envelope: &Envelope) -> Result<(), KmsError> {
        if envelope.header.owner != caller {
            return Err(KmsError::NotOwner {
                caller: caller.to_owned(),
                owner: envelope.header.owner.clone(),
                what: format!("secret {}", envelope.header.secret_id),
            });
        }
        for layer in &envelope.layers {
            let id: KeyId = layer.key_id.parse()?;
            if id.owner().as_str() != caller {
                return Err(KmsError::NotOwner {
                    caller: caller.to_owned(),
                    owner: id.owner().to_string(),
                    what: format!("key {id}"),
                });
            }
        }
        Ok(())
    }

    fn open(&self, envelope: &Envelope) -> Result<Zeroizing<Vec<u8>>, KmsError> {
        let ring = self.ring.read().map_err(|_| poisoned())?;
        let mut keys = Vec::with_capacity(envelope.layers.len());
        for layer in envelope.layers.iter().rev() {
            let id: KeyId = layer.key_id.parse()?;
            keys.push(ring.secret_for_decryption(&id, layer.version)?);
        }
        Ok(escrow::open(envelope, &keys)?)
    }

    fn rate_check(&self, caller: &str, now: Instant) -> Result<(), KmsError> {
        let mut limiter = self.limiter.lock().map_err(|_| poisoned())?;
        if limiter.try_take(caller, now) {
            return Ok(());
        }
        let (rate, burst) = limiter.limits();
        Err(KmsError::RateLimited {
            participant: caller.to_owned(),
            rate,
            burst,
        })
    }

    /// Opens a reply channel for `caller` with its ephemeral `agent_key`.
    pub fn open_channel<R: RngCore + CryptoRng>(
        &self,
        caller: &str,
        agent_key: &[u8],
        now: Instant,
        rng: &mut R,
    ) -> Answer<ChannelGrant> {
        let granted = self
            .channels
            .lock()
            .map(|table| table.ttl())
            .map_err(|_| poisoned())
            .and_then(|ttl| ReplyChannels::grant(ttl, &self.signing, caller, agent_key, rng));
        let result = granted.and_then(|(grant, channel)| {
            self.channels
                .lock()
                .map_err(|_| poisoned())?
                .insert(caller, channel, now);
            Ok(grant)
        });
        let audit = result.as_ref().ok().map(|grant| AuditEvent::ChannelOpened {
            participant: caller.to_owned(),
            channel: grant.channel.to_string(),
            ttl_secs: grant.ttl_secs,
        });
        Answer { result, audit }
    }

    /// Recovers an escrowed secret for `caller`: its reply channel, the rate
    /// limit, ownership of the envelope and of every key it names,
    /// decryption, then the secret signed and sealed under a fresh key of
    /// the channel.
    pub fn recover<R: RngCore + CryptoRng>(
        &self,
        caller: &str,
        envelope: &[u8],
        channel: &[u8],
        now: Instant,
        rng: &mut R,
    ) -> Answer<SealedAnswer> {
        let envelope = match parse_envelope(envelope) {
            Ok(e) => e,
            Err(e) => return refused_recovery(caller, None, e),
        };
        let channel = match parse_channel(channel) {
            Ok(c) => c,
            Err(e) => return refused_recovery(caller, Some(&envelope), e),
        };
        let result = self
            .channels
            .lock()
            .map_err(|_| poisoned())
            .and_then(|table| table.get(caller, channel, now))
            .and_then(|channel| {
                self.rate_check(caller, now)?;
                self.check_ownership(caller, &envelope)?;
                let secret = self.open(&envelope)?;
                reply::seal_recovered(&self.signing, &envelope, &channel, &secret, rng)
            });
        match result {
            Ok(sealed) => Answer {
                result: Ok(sealed),
                audit: Some(AuditEvent::RecoveryGranted {
                    requester: caller.to_owned(),
                    owner: envelope.header.owner.clone(),
                    secret_id: envelope.header.secret_id.clone(),
                    keys: envelope.layers.iter().map(layer_name).collect(),
                    channel: channel.to_string(),
                }),
            },
            Err(e) => refused_recovery(caller, Some(&envelope), e),
        }
    }

    /// Re-seals an escrowed secret to the newest active version of each of
    /// its keys, for its owner or the operator; the plaintext stays here.
    pub fn rewrap<R: RngCore + CryptoRng>(
        &self,
        caller: &str,
        is_operator: bool,
        envelope: &[u8],
        rng: &mut R,
    ) -> Answer<Envelope> {
        let result = parse_envelope(envelope).and_then(|envelope| {
            let owner = envelope.header.owner.clone();
            let check_as = if is_operator { owner.as_str() } else { caller };
            self.check_ownership(check_as, &envelope)?;
            let secret = self.open(&envelope)?;
            let ring = self.ring.read().map_err(|_| poisoned())?;
            let mut chain = Vec::with_capacity(envelope.layers.len());
            for layer in &envelope.layers {
                let id: KeyId = layer.key_id.parse()?;
                let (version, public) = ring.public_for_encryption(&id)?;
                chain.push((
                    KeyRef {
                        key_id: layer.key_id.clone(),
                        version,
                    },
                    public,
                ));
            }
            let rewrapped = escrow::seal(envelope.header.clone(), &secret, &chain, rng)?;
            Ok((envelope, rewrapped))
        });
        match result {
            Ok((old, new)) => Answer {
                audit: Some(AuditEvent::Rewrapped {
                    requester: caller.to_owned(),
                    owner: old.header.owner.clone(),
                    secret_id: old.header.secret_id.clone(),
                    from: old.layers.iter().map(layer_name).collect(),
                    to: new.layers.iter().map(layer_name).collect(),
                }),
                result: Ok(new),
            },
            Err(e) => Answer {
                audit: Some(AuditEvent::RewrapRefused {
                    requester: caller.to_owned(),
                    reason: e.to_string(),
                }),
                result: Err(e),
            },
        }
    }

    /// Prepares a new key pair (`rotate` false) or a new version of one.
    pub fn prepare_key<R: RngCore + CryptoRng>(
        &self,
        id: &KeyId,
        rotate: bool,
        now: u64,
        rng: &mut R,
    ) -> Result<KeyChange, KmsError> {
        let record = self
            .ring
            .read()
            .map_err(|_| poisoned())?
            .prepare_create(id, rotate, now, rng)?;
        let (key_id, version) = (record.info.key_id.clone(), record.info.version);
        let audit = if rotate {
            AuditEvent::Rotated { key_id, version }
        } else {
            AuditEvent::KeyCreated { key_id, version }
        };
        Ok(KeyChange { record, audit })
    }

    /// Prepares the retirement of a key version.
    pub fn prepare_retire(&self, id: &KeyId, version: u32) -> Result<KeyChange, KmsError> {
        let record = self
            .ring
            .read()
            .map_err(|_| poisoned())?
            .prepare_retire(id, version)?;
        Ok(KeyChange {
            record,
            audit: AuditEvent::Retired {
                key_id: id.to_string(),
                version,
            },
        })
    }

    /// Applies a persisted key change.
    pub fn apply(&self, record: KeyRecord) -> Result<(), KmsError> {
        self.ring.write().map_err(|_| poisoned())?.apply(record)
    }
}

fn refused_recovery<T>(caller: &str, envelope: Option<&Envelope>, e: KmsError) -> Answer<T> {
    Answer {
        audit: Some(AuditEvent::RecoveryRefused {
            requester: caller.to_owned(),
            owner: envelope.map(|e| e.header.owner.clone()).unwrap_or_default(),
            secret_id: envelope
                .map(|e| e.header.secret_id.clone())
                .unwrap_or_default(),
            reason: e.to_string(),
        }),
        result: Err(e),
    }
}
