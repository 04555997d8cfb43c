//! The PSI protocol engine, sans-IO: it takes messages and returns messages,
//! and knows nothing of files or sockets. One [`Session`] type serves both
//! roles; each method states which role calls it and in which phase.
//!
//! Flow (requester A, provider B):
//! 1. A: [`Session::request`] → hello. B: [`Session::accept`] → hello (accept).
//!    A: [`Session::on_accept`]. Both now hold the salt.
//! 2. A: [`Session::encrypt_batch`] for each batch of round 1 (stream u).
//! 3. B: a [`StreamReceiver`] checks every round-1 batch; then
//!    [`Session::reencrypt_batch`] (stream w) and [`Session::encrypt_batch`]
//!    (stream v).
//! 4. A: receivers for w and v, then a [`Matcher`] gives the intersection.
//! 5. Reveal `both`: A re-encrypts v into stream z; B matches z against w.
//! 6. Each side signs a [`Receipt`](crate::wire::Receipt) over the transcript.

mod alignment;
mod batches;
mod handshake;
mod matching;
mod receipts;
mod state;

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::bls::{BlsPublicKey, BlsSecretKey};
use sotto_crypto::group::{EcdhScalar, GroupId};
use sotto_crypto::hash::FieldHasher;
use sotto_crypto::identity::{IdentityKey, IdentityPublic};
use sotto_crypto::ids::SessionId;
use sotto_crypto::kdf::EphemeralKey;
use sotto_crypto::secret::SecretBytes;
use sotto_node::{NodeHome, Profile};

use crate::error::EngineError;
use crate::wire::{KeyParams, Reveal, Role, SigningMode, StreamKind};

pub use alignment::{alignment_digest, KeyTag, PseudonymKey};
pub use batches::{OutgoingChain, StreamReceiver};
pub use handshake::AcceptPolicy;
pub use matching::{shuffle_order, Matcher, TRUNCATED_LEN};

/// The largest batch size a peer may negotiate.
pub const MAX_BATCH_SIZE: u32 = 1 << 20;
/// The default batch size.
pub const DEFAULT_BATCH_SIZE: u32 = 4096;

/// What the requester proposes for a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionParams {
    /// Session id.
    pub sid: SessionId,
    /// PSI group.
    pub group: GroupId,
    /// Signing mode.
    pub mode: SigningMode,
    /// Reveal mode.
    pub reveal: Reveal,
    /// Elements per batch.
    pub batch_size: u32,
    /// How identifiers become keys; both parties must use the same.
    pub keys: KeyParams,
    /// When the requester opened the session, Unix seconds.
    pub created: u64,
    /// Sample alignment: both parties write their matched rows in ascending
    /// order of the normalized key (reveal `both` only).
    pub align: bool,
}

/// How long a requester's hello may be accepted after it was written, in
/// seconds (7 days): an offline hello may travel by slow channels, but a
/// provider must remember every session it accepted for at least this long
/// (plus [`CLOCK_SKEW`]) to refuse replays.
pub const HELLO_LIFETIME: u64 = 7 * 24 * 3600;
/// How far ahead of the provider's clock a hello's time may be, in seconds.
pub const CLOCK_SKEW: u64 = 600;

/// The local party's keys, borrowed from its node home.
pub struct Signer<'a> {
    /// Identity key.
    pub identity: &'a IdentityKey,
    /// BLS keys, used in turn (element i by key i mod k).
    pub bls: &'a [BlsSecretKey],
    /// Fingerprint of the local profile.
    pub profile: [u8; 32],
}

impl<'a> Signer<'a> {
    /// The signer of a node home: its keys and its profile's fingerprint.
    pub fn for_home(home: &'a NodeHome) -> Self {
        Self {
            identity: home.identity(),
            bls: home.bls_keys(),
            profile: home.profile().fingerprint(),
        }
    }
}

impl SessionParams {
    /// Parameters of a new session over `group` with a fresh random id,
    /// opened at `now` (Unix seconds).
    pub fn fresh<R: RngCore + CryptoRng>(
        group: GroupId,
        mode: SigningMode,
        reveal: Reveal,
        batch_size: u32,
        keys: KeyParams,
        now: u64,
        rng: &mut R,
    ) -> Self {
        Self {
            sid: SessionId::random(rng),
            group,
            mode,
            reveal,
            batch_size,
            keys,
            created: now,
            align: false,
        }
    }
}

/// The peer's public keys, from its pinned profile.
#[derive(Clone, Debug)]
pub struct PeerKeys {
    /// Identity key.
    pub identity: IdentityPublic,
    /// BLS keys, in signing order.
    pub bls: Vec<BlsPublicKey>,
    /// Profile fingerprint.
    pub fingerprint: [u8; 32],
}

impl From<&Profile> for PeerKeys {
    fn from(profile: &Profile) -> Self {
        Self {
            identity: profile.identity,
            bls: profile.bls_keys.clone(),
            fingerprint: profile.fingerprint(),
        }
    }
}

/// Counters reported at the end of a session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SignatureCounts {
    /// BLS and identity signatures made.
    pub made: u64,
    /// BLS and identity signatures verified.
    pub verified: u64,
}

/// The transcript: both hellos and the header chain of every stream of rounds
/// 1 and 2, in a fixed order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Transcript {
    requester_hello: Option<[u8; 32]>,
    provider_hello: Option<[u8; 32]>,
    streams: [Option<[u8; 32]>; 3],
}

impl Transcript {
    fn slot(&mut self, kind: StreamKind) -> Option<&mut Option<[u8; 32]>> {
        match kind {
            StreamKind::RequesterEncrypted => Some(&mut self.streams[0]),
            StreamKind::Reencrypted => Some(&mut self.streams[1]),
            StreamKind::ProviderEncrypted => Some(&mut self.streams[2]),
            StreamKind::RevealBack => None,
        }
    }

    fn hash(&self) -> Option<[u8; 32]> {
        let mut hasher = FieldHasher::new("sotto/psi/transcript/v1");
        hasher
            .field(&self.requester_hello?)
            .field(&self.provider_hello?);
        for stream in &self.streams {
            hasher.field(stream.as_ref()?);
        }
        Some(hasher.finish())
    }
}

/// One party's view of one PSI session. Holds the session's secrets (salt,
/// scalar, shuffle seed, ephemeral key), all zeroized on drop.
#[derive(Debug)]
pub struct Session {
    params: SessionParams,
    role: Role,
    local: IdentityPublic,
    peer: IdentityPublic,
    requester_size: u64,
    provider_size: u64,
    ephemeral: Option<EphemeralKey>,
    salt: Option<SecretBytes<32>>,
    scalar: EcdhScalar,
    shuffle_seed: SecretBytes<32>,
    transcript: Transcript,
    counts: SignatureCounts,
    alignment: Option<[u8; 32]>,
}

impl Session {
    /// The negotiated parameters.
    pub fn params(&self) -> &SessionParams {
        &self.params
    }

    /// This party's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The peer's identity key.
    pub fn peer(&self) -> &IdentityPublic {
        &self.peer
    }

    /// Distinct identifiers of the requester.
    pub fn requester_size(&self) -> u64 {
        self.requester_size
    }

    /// Distinct identifiers of the provider.
    pub fn provider_size(&self) -> u64 {
        self.provider_size
    }

    /// Number of distinct identifiers this party encrypts.
    pub fn local_size(&self) -> u64 {
        match self.role {
            Role::Requester => self.requester_size,
            Role::Provider => self.provider_size,
        }
    }

    /// Signature counters so far.
    pub fn counts(&self) -> SignatureCounts {
        self.counts
    }

    /// The secret seed of this party's shuffle.
    pub fn shuffle_seed(&self) -> &SecretBytes<32> {
        &self.shuffle_seed
    }

    /// The transcript hash, once rounds 1 and 2 are complete.
    pub fn transcript_hash(&self) -> Option<[u8; 32]> {
        self.transcript.hash()
    }

    /// Records the header chain of a completed stream of rounds 1-2.
    pub fn record_stream(&mut self, kind: StreamKind, chain: [u8; 32]) {
        if let Some(slot) = self.transcript.slot(kind) {
            *slot = Some(chain);
        }
    }

    fn salt(&self) -> Result<&SecretBytes<32>, EngineError> {
        self.salt.as_ref().ok_or_else(|| {
            EngineError::Phase("the salt is not agreed yet: the handshake is not complete".into())
        })
    }

    fn expect_role(&self, role: Role, action: &str) -> Result<(), EngineError> {
        if self.role != role {
            return Err(EngineError::Phase(format!(
                "only the {role} can {action}; this party is the {}",
                self.role
            )));
        }
        Ok(())
    }
}
