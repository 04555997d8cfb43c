//! The reply channel that recovered secrets come back under: one ephemeral
//! X25519 agreement between a participant's agent and the root KMS (both
//! halves fresh; the KMS's half signed by its signing key and bound to the
//! participant and the agent's half), from which every answer draws its own
//! symmetric key with a fresh random salt. The KMS keeps channels in memory
//! only, for a bounded time and at most [`MAX_CHANNELS_PER_PARTICIPANT`] per
//! participant; once a channel is gone from both sides, no key that the KMS
//! or the agent keeps opens the answers sent under it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::identity::{IdentityKey, IdentityPublic, SIGNATURE_LEN};
use sotto_crypto::ids::ReplyChannelId;
use sotto_crypto::kdf::{hkdf_key, EphemeralKey};
use sotto_crypto::secret::SecretBytes;

use crate::KmsError;

/// Domain of the KMS's signature over a channel grant.
pub const GRANT_DOMAIN: &str = "sotto/kms/reply-channel/v1";
const CHANNEL_KEY_INFO: &[u8] = b"sotto/kms/reply-channel-key/v1";
const ANSWER_KEY_INFO: &[u8] = b"sotto/kms/answer-key/v1";
const PROTOCOL_VERSION: &[u8] = b"1";

/// How many channels the KMS keeps open per participant; opening one more
/// closes that participant's oldest.
pub const MAX_CHANNELS_PER_PARTICIPANT: usize = 16;

/// How long a channel lives unless the KMS is configured otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

/// The longest lifetime a KMS may give a channel, and an agent accepts.
pub const MAX_TTL: Duration = Duration::from_secs(86_400);

/// How much sooner than the KMS the agent lets a channel go, so that it
/// opens a new one before the KMS would refuse the old.
const AGENT_MARGIN: Duration = Duration::from_secs(5);

pub(crate) fn frame(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

/// An open channel as either side holds it.
pub struct ReplyChannel {
    id: ReplyChannelId,
    secret: SecretBytes<32>,
}

impl ReplyChannel {
    /// The channel's id.
    pub fn id(&self) -> ReplyChannelId {
        self.id
    }

    /// The key of one answer: `HKDF-SHA256(salt, ikm = channel secret,
    /// info = "sotto/kms/answer-key/v1" || context)`, where the salt is the
    /// answer's own random salt and the context everything the answer is for.
    pub fn answer_key(&self, salt: &[u8], context: &[u8]) -> SecretBytes<32> {
        let mut info = ANSWER_KEY_INFO.to_vec();
        info.extend_from_slice(context);
        hkdf_key(Some(salt), self.secret.expose(), &info)
    }
}

impl std::fmt::Debug for ReplyChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReplyChannel({}, secret redacted)", self.id)
    }
}

/// The KMS's answer to a channel request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelGrant {
    /// The channel's id.
    pub channel: ReplyChannelId,
    /// The KMS's ephemeral X25519 public key.
    pub kms_key: [u8; 32],
    /// How long the KMS keeps the channel, in seconds.
    pub ttl_secs: u64,
    /// The KMS signing key's signature over the grant.
    pub signature: [u8; SIGNATURE_LEN],
}

fn bound_fields(
    channel: ReplyChannelId,
    participant: &str,
    agent_key: &[u8],
    kms_key: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    frame(&mut out, PROTOCOL_VERSION);
    frame(&mut out, channel.as_bytes());
    frame(&mut out, participant.as_bytes());
    frame(&mut out, agent_key);
    frame(&mut out, kms_key);
    out
}

fn grant_message(fields: &[u8], ttl_secs: u64) -> Vec<u8> {
    let mut out = fields.to_vec();
    frame(&mut out, &ttl_secs.to_be_bytes());
    out
}

fn channel_secret(
    key: &EphemeralKey,
    peer: &[u8; 32],
    fields: &[u8],
) -> Result<SecretBytes<32>, sotto_crypto::CryptoError> {
    let mut info = CHANNEL_KEY_INFO.to_vec();
    info.extend_from_slice(fields);
    key.derive_key(peer, &info)
}

/// The agent's half of a channel before the KMS answers.
pub struct ChannelRequest {
    key: EphemeralKey,
}

impl ChannelRequest {
    /// A fresh ephemeral key.
    pub fn new<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self {
            key: EphemeralKey::generate(rng),
        }
    }

    /// The public key to send.
    pub fn public(&self) -> [u8; 32] {
        self.key.public()
    }

    /// Checks the KMS's grant against the pinned signing key and this
    /// request, then derives the channel; returns it with how long the agent
    /// may use it (a little less than the KMS keeps it).
    pub fn accept(
        self,
        signer: &IdentityPublic,
        participant: &str,
        grant: &ChannelGrant,
    ) -> Result<(ReplyChannel, Duration), GrantError> {
        let fields = bound_fields(grant.channel, participant, &self.public(), &grant.kms_key);
        signer
            .verify(
                GRANT_DOMAIN,
                &grant_message(&fields, grant.ttl_secs),
                &grant.signature,
                "reply channel grant",
            )
            .map_err(|_| GrantError::NotSigned)?;
        let secret = channel_secret(&self.key, &grant.kms_key, &fields)
            .map_err(|e| GrantError::Agreement(e.to_string()))?;
        let lifetime = Duration::from_secs(grant.ttl_secs)
            .min(MAX_TTL)
            .saturating_sub(AGENT_MARGIN);
        Ok((
            ReplyChannel {
                id: grant.channel,
                secret,
            },
            lifetime,
        ))
    }
}

/// Why the agent refused the KMS's channel grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// The grant is not signed by the pinned KMS signing key over this
    /// request's key, this participant, the channel and its lifetime.
    #[error("the reply channel grant is not signed by the pinned KMS signing key for this request (forged, altered, or for another request or participant)")]
    NotSigned,
    /// The KMS's ephemeral key gives no usable agreement (a low-order key).
    #[error("reply channel: {0}")]
    Agreement(String),
}

struct OpenChannel {
    participant: String,
    channel: Arc<ReplyChannel>,
    expires: Instant,
}

/// The KMS's open channels.
pub struct ReplyChannels {
    ttl: Duration,
    open: HashMap<ReplyChannelId, OpenChannel>,
}

impl ReplyChannels {
    /// No channels yet; each will live `ttl` (at most [`MAX_TTL`]).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl: ttl.min(MAX_TTL),
            open: HashMap::new(),
        }
    }

    /// How long each channel lives.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Answers a channel request from `participant`: a fresh ephemeral key,
    /// the agreement with `agent_key`, and the grant for `ttl` signed by
    /// `signer`. The channel is not kept until [`ReplyChannels::insert`].
    pub fn grant<R: RngCore + CryptoRng>(
        ttl: Duration,
        signer: &IdentityKey,
        participant: &str,
        agent_key: &[u8],
        rng: &mut R,
    ) -> Result<(ChannelGrant, ReplyChannel), KmsError> {
        let malformed = |reason: String| KmsError::Malformed {
            what: "agent_key (reply channel)".into(),
            reason,
        };
        let agent_key: [u8; 32] = agent_key
            .try_into()
            .map_err(|_| malformed(format!("{} bytes, expected 32", agent_key.len())))?;
        let channel = ReplyChannelId::random(rng);
        let key = EphemeralKey::generate(rng);
        let kms_key = key.public();
        let fields = bound_fields(channel, participant, &agent_key, &kms_key);
        let secret =
            channel_secret(&key, &agent_key, &fields).map_err(|e| malformed(e.to_string()))?;
        let ttl_secs = ttl.as_secs();
        let signature = signer.sign(GRANT_DOMAIN, &grant_message(&fields, ttl_secs));
        let grant = ChannelGrant {
            channel,
            kms_key,
            ttl_secs,
            signature,
        };
        Ok((
            grant,
            ReplyChannel {
                id: channel,
                secret,
            },
        ))
    }

    /// Keeps a granted channel for `participant` until `now + ttl`; drops
    /// expired channels and, past the cap, the participant's oldest.
    pub fn insert(&mut self, participant: &str, channel: ReplyChannel, now: Instant) {
        self.open.retain(|_, c| c.expires > now);
        let mine: Vec<(ReplyChannelId, Instant)> = self
            .open
            .iter()
            .filter(|(_, c)| c.participant == participant)
            .map(|(id, c)| (*id, c.expires))
            .collect();
        if mine.len() >= MAX_CHANNELS_PER_PARTICIPANT {
            if let Some((oldest, _)) = mine.iter().min_by_key(|(_, expires)| *expires) {
                self.open.remove(oldest);
            }
        }
        self.open.insert(
            channel.id,
            OpenChannel {
                participant: participant.to_owned(),
                channel: Arc::new(channel),
                expires: now + self.ttl,
            },
        );
    }

    /// The channel `id` if it is open at `now` and belongs to `participant`.
    pub fn get(
        &self,
        participant: &str,
        id: ReplyChannelId,
        now: Instant,
    ) -> Result<Arc<ReplyChannel>, KmsError> {
        match self.open.get(&id) {
            Some(c) if c.expires > now && c.participant == participant => {
                Ok(Arc::clone(&c.channel))
            }
            Some(c) if c.expires > now => Err(KmsError::NotOwner {
                caller: participant.to_owned(),
                owner: c.participant.clone(),
                what: format!("reply channel {id}"),
            }),
            _ => Err(KmsError::UnknownChannel { channel: id }),
        }
    }

    /// How many channels are open (expired ones included until the next
    /// insert).
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no channel is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn open(
        table: &mut ReplyChannels,
        kms: &IdentityKey,
        who: &str,
        now: Instant,
    ) -> (ReplyChannel, Arc<ReplyChannel>) {
        let request = ChannelRequest::new(&mut OsRng);
        let (grant, kept) =
            ReplyChannels::grant(DEFAULT_TTL, kms, who, &request.public(), &mut OsRng)
                .expect("grant");
        table.insert(who, kept, now);
        let (mine, lifetime) = request.accept(&kms.public(), who, &grant).expect("accept");
        assert_eq!(lifetime, DEFAULT_TTL - AGENT_MARGIN);
        let theirs = table.get(who, grant.channel, now).expect("open");
        (mine, theirs)
    }

    #[test]
    fn both_sides_derive_the_same_answer_keys() {
        let kms = IdentityKey::generate(&mut OsRng);
        let mut table = ReplyChannels::new(DEFAULT_TTL);
        let now = Instant::now();
        let (mine, theirs) = open(&mut table, &kms, "bank-a", now);
        assert_eq!(mine.id(), theirs.id());
        assert_eq!(
            mine.answer_key(b"salt", b"ctx"),
            theirs.answer_key(b"salt", b"ctx")
        );
        assert_ne!(
            mine.answer_key(b"salt", b"ctx"),
            mine.answer_key(b"salt2", b"ctx")
        );
        assert_ne!(
            mine.answer_key(b"salt", b"ctx"),
            mine.answer_key(b"salt", b"ctx2")
        );
    }

    #[test]
    fn a_grant_for_another_request_participant_or_signer_is_refused() {
        let kms = IdentityKey::generate(&mut OsRng);
        let grant_to = |signer: &IdentityKey, who: &str, request: &ChannelRequest| {
            ReplyChannels::grant(DEFAULT_TTL, signer, who, &request.public(), &mut OsRng)
                .expect("grant")
                .0
        };
        let (request, other) = (
            ChannelRequest::new(&mut OsRng),
            ChannelRequest::new(&mut OsRng),
        );
        let for_other_request = grant_to(&kms, "bank-a", &other);
        let refused = |request: ChannelRequest, grant: &ChannelGrant| {
            request.accept(&kms.public(), "bank-a", grant).map(|_| ())
        };
        assert_eq!(
            refused(request, &for_other_request),
            Err(GrantError::NotSigned)
        );
        let request = ChannelRequest::new(&mut OsRng);
        let for_bank_b = grant_to(&kms, "bank-b", &request);
        assert_eq!(refused(request, &for_bank_b), Err(GrantError::NotSigned));
        let request = ChannelRequest::new(&mut OsRng);
        let mut longer = grant_to(&kms, "bank-a", &request);
        longer.ttl_secs += 1;
        assert_eq!(refused(request, &longer), Err(GrantError::NotSigned));
        let request = ChannelRequest::new(&mut OsRng);
        let impostor = IdentityKey::generate(&mut OsRng);
        let forged = grant_to(&impostor, "bank-a", &request);
        assert_eq!(refused(request, &forged), Err(GrantError::NotSigned));
        let request = ChannelRequest::new(&mut OsRng);
        let mut low_order = grant_to(&kms, "bank-a", &request);
        low_order.kms_key = [0; 32];
        low_order.signature = kms.sign(
            GRANT_DOMAIN,
            &grant_message(
                &bound_fields(
                    low_order.channel,
                    "bank-a",
                    &request.public(),
                    &low_order.kms_key,
                ),
                low_order.ttl_secs,
            ),
        );
        assert!(matches!(
            refused(request, &low_order),
            Err(GrantError::Agreement(_))
        ));
    }

    #[test]
    fn channels_expire_belong_to_one_participant_and_are_capped() {
        let kms = IdentityKey::generate(&mut OsRng);
        let mut table = ReplyChannels::new(Duration::from_secs(10));
        let now = Instant::now();
        let (first, _) = open(&mut table, &kms, "bank-a", now);
        assert!(matches!(
            table.get("bank-b", first.id(), now),
            Err(KmsError::NotOwner { ref caller, ref owner, ref what })
                if caller == "bank-b" && owner == "bank-a" && *what == format!("reply channel {}", first.id())
        ));
        assert!(matches!(
            table.get("bank-a", first.id(), now + Duration::from_secs(10)),
            Err(KmsError::UnknownChannel { .. })
        ));
        for i in 1..=MAX_CHANNELS_PER_PARTICIPANT {
            let later = now + Duration::from_millis(i as u64);
            open(&mut table, &kms, "bank-a", later);
        }
        assert_eq!(table.len(), MAX_CHANNELS_PER_PARTICIPANT);
        assert!(matches!(
            table.get("bank-a", first.id(), now),
            Err(KmsError::UnknownChannel { .. })
        ));
        open(&mut table, &kms, "bank-b", now);
        assert_eq!(table.len(), MAX_CHANNELS_PER_PARTICIPANT + 1);
        table.insert(
            "bank-c",
            ReplyChannels::grant(
                DEFAULT_TTL,
                &kms,
                "bank-c",
                &ChannelRequest::new(&mut OsRng).public(),
                &mut OsRng,
            )
            .expect("grant")
            .1,
            now + Duration::from_secs(11),
        );
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn lifetimes_are_capped_on_both_sides() {
        let kms = IdentityKey::generate(&mut OsRng);
        let request = ChannelRequest::new(&mut OsRng);
        let (grant, kept) =
            ReplyChannels::grant(Duration::MAX, &kms, "bank-a", &request.public(), &mut OsRng)
                .expect("grant");
        assert_eq!(grant.ttl_secs, u64::MAX);
        let (_, lifetime) = request
            .accept(&kms.public(), "bank-a", &grant)
            .expect("accept");
        assert_eq!(lifetime, MAX_TTL - AGENT_MARGIN);
        let mut table = ReplyChannels::new(Duration::MAX);
        assert_eq!(table.ttl(), MAX_TTL);
        let now = Instant::now();
        table.insert("bank-a", kept, now);
        assert!(matches!(
            table.get("bank-a", grant.channel, now + MAX_TTL),
            Err(KmsError::UnknownChannel { channel }) if channel == grant.channel
        ));
    }

    #[test]
    fn a_malformed_or_low_order_agent_key_is_refused() {
        let kms = IdentityKey::generate(&mut OsRng);
        let grant = |key: &[u8]| ReplyChannels::grant(DEFAULT_TTL, &kms, "bank-a", key, &mut OsRng);
        assert!(matches!(
            grant(&[1; 31]),
            Err(KmsError::Malformed { ref reason, .. }) if reason == "31 bytes, expected 32"
        ));
        assert!(matches!(
            grant(&[0; 32]),
            Err(KmsError::Malformed { ref what, .. }) if what == "agent_key (reply channel)"
        ));
    }
}
