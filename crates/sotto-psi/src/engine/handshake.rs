//! The signed hello exchange and the salt agreement.

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::group::EcdhScalar;
use sotto_crypto::kdf::EphemeralKey;
use sotto_crypto::secret::SecretBytes;

use super::{
    PeerKeys, Session, SessionParams, SignatureCounts, Signer, Transcript, CLOCK_SKEW,
    HELLO_LIFETIME, MAX_BATCH_SIZE,
};
use crate::error::EngineError;
use crate::wire::{Hello, KeyParams, Reveal, Role, SigningMode, HELLO_DOMAIN, PROTOCOL_VERSION};

/// What a provider accepts from requesters.
#[derive(Clone, Debug)]
pub struct AcceptPolicy {
    /// Signing modes the provider agrees to.
    pub modes: Vec<SigningMode>,
    /// How the provider made its keys; a requester's hello must name the same.
    pub keys: KeyParams,
    /// Whether the provider agrees to sample alignment (both parties write
    /// their matched rows in one common order).
    pub allow_align: bool,
}

impl Default for AcceptPolicy {
    /// Signed modes only (`none` must be allowed explicitly), default keys.
    fn default() -> Self {
        Self {
            modes: vec![SigningMode::Element, SigningMode::Digest],
            keys: KeyParams::default(),
            allow_align: false,
        }
    }
}

/// Refuses a hello written more than [`HELLO_LIFETIME`] ago or more than
/// [`CLOCK_SKEW`] ahead of `now`: a provider remembers accepted sessions for
/// that long, so an older hello could be a replay it no longer recognizes.
fn check_fresh(hello: &Hello, now: u64) -> Result<(), EngineError> {
    let oldest = now.saturating_sub(HELLO_LIFETIME);
    if hello.created < oldest || hello.created > now.saturating_add(CLOCK_SKEW) {
        return Err(EngineError::HelloExpired {
            created: hello.created,
            now,
        });
    }
    Ok(())
}

/// Sample alignment needs both parties to learn the rows: reveal `both`.
fn check_align(align: bool, reveal: Reveal) -> Result<(), EngineError> {
    if align && reveal != Reveal::Both {
        return Err(refuse(format!(
            "aligned output needs reveal `both` (both parties write rows), not `{reveal}`"
        )));
    }
    Ok(())
}

fn check_keys(ours: &KeyParams, theirs: &KeyParams) -> Result<(), EngineError> {
    match ours.first_difference(theirs) {
        Some((parameter, ours, theirs)) => Err(EngineError::ParameterMismatch {
            parameter,
            ours,
            theirs,
        }),
        None => Ok(()),
    }
}

fn refuse(reason: impl Into<String>) -> EngineError {
    EngineError::Handshake(reason.into())
}

fn sign_hello(mut hello: Hello, signer: &Signer<'_>) -> Hello {
    hello.signature = signer.identity.sign(HELLO_DOMAIN, &hello.signed_bytes());
    hello
}

fn check_common(hello: &Hello, peer: &PeerKeys, role: Role) -> Result<(), EngineError> {
    if hello.version != PROTOCOL_VERSION {
        return Err(refuse(format!(
            "peer speaks protocol version {}, this build speaks {PROTOCOL_VERSION}",
            hello.version
        )));
    }
    if hello.role != role {
        return Err(refuse(format!(
            "expected a hello from the {role}, got one from the {}",
            hello.role
        )));
    }
    if hello.sender != peer.identity {
        return Err(refuse(format!(
            "the hello is from identity {}, which is not the pinned peer {}",
            hello.sender, peer.identity
        )));
    }
    peer.identity
        .verify(
            HELLO_DOMAIN,
            &hello.signed_bytes(),
            &hello.signature,
            "hello",
        )
        .map_err(|_| EngineError::BadSignature { what: "hello" })?;
    if hello.profile != peer.fingerprint {
        return Err(refuse(
            "the peer's hello names a profile other than the one pinned (its BLS keys changed?); re-exchange profiles",
        ));
    }
    Ok(())
}

impl Session {
    /// Requester: opens a session with `peer` for `input_size` distinct
    /// identifiers. Returns the session and the hello to send.
    pub fn request<R: RngCore + CryptoRng>(
        params: SessionParams,
        signer: &Signer<'_>,
        peer: &PeerKeys,
        input_size: u64,
        rng: &mut R,
    ) -> Result<(Session, Hello), EngineError> {
        if params.batch_size == 0 || params.batch_size > MAX_BATCH_SIZE {
            return Err(refuse(format!("batch size must be 1..={MAX_BATCH_SIZE}")));
        }
        check_align(params.align, params.reveal)?;
        let ephemeral = EphemeralKey::generate(rng);
        let hello = sign_hello(
            Hello {
                version: PROTOCOL_VERSION,
                sid: params.sid,
                role: Role::Requester,
                group: params.group,
                mode: params.mode,
                reveal: params.reveal,
                batch_size: params.batch_size,
                input_size,
                sender: signer.identity.public(),
                profile: signer.profile,
                ephemeral: ephemeral.public(),
                reply_to: [0; 32],
                created: params.created,
                keys: params.keys,
                align: params.align,
                signature: [0; 64],
            },
            signer,
        );
        let session = Session {
            params,
            role: Role::Requester,
            local: signer.identity.public(),
            peer: peer.identity,
            requester_size: input_size,
            provider_size: 0,
            ephemeral: Some(ephemeral),
            salt: None,
            scalar: EcdhScalar::random(params.group, rng),
            shuffle_seed: random_seed(rng),
            transcript: Transcript {
                requester_hello: Some(hello.digest()),
                ..Transcript::default()
            },
            counts: SignatureCounts {
                made: 1,
                verified: 0,
            },
            alignment: None,
        };
        Ok((session, hello))
    }

    /// Provider: checks the requester's hello against its pinned profile,
    /// the policy (signing modes, key parameters) and the clock (`now`, Unix
    /// seconds), agrees the salt, and returns the session and the accept.
    pub fn accept<R: RngCore + CryptoRng>(
        hello: &Hello,
        signer: &Signer<'_>,
        peer: &PeerKeys,
        input_size: u64,
        policy: &AcceptPolicy,
        now: u64,
        rng: &mut R,
    ) -> Result<(Session, Hello), EngineError> {
        check_common(hello, peer, Role::Requester)?;
        check_fresh(hello, now)?;
        check_keys(&policy.keys, &hello.keys)?;
        check_align(hello.align, hello.reveal)?;
        if hello.align && !policy.allow_align {
            return Err(EngineError::AlignRefused);
        }
        if hello.reply_to != [0; 32] {
            return Err(refuse("a requester's hello must not reply to anything"));
        }
        if !policy.modes.contains(&hello.mode) {
            return Err(refuse(format!(
                "signing mode {} is not allowed by this provider",
                hello.mode
            )));
        }
        if hello.batch_size == 0 || hello.batch_size > MAX_BATCH_SIZE {
            return Err(refuse(format!(
                "batch size {} is outside 1..={MAX_BATCH_SIZE}",
                hello.batch_size
            )));
        }
        let params = SessionParams {
            sid: hello.sid,
            group: hello.group,
            mode: hello.mode,
            reveal: hello.reveal,
            batch_size: hello.batch_size,
            keys: hello.keys,
            created: hello.created,
            align: hello.align,
        };
        let ephemeral = EphemeralKey::generate(rng);
        let salt = ephemeral
            .derive_salt(&hello.ephemeral, &hello.sid)
            .map_err(|e| refuse(e.to_string()))?;
        let accept = sign_hello(
            Hello {
                version: PROTOCOL_VERSION,
                role: Role::Provider,
                input_size,
                sender: signer.identity.public(),
                profile: signer.profile,
                ephemeral: ephemeral.public(),
                reply_to: hello.digest(),
                created: now,
                keys: policy.keys,
                signature: [0; 64],
                ..hello.clone()
            },
            signer,
        );
        let session = Session {
            params,
            role: Role::Provider,
            local: signer.identity.public(),
            peer: peer.identity,
            requester_size: hello.input_size,
            provider_size: input_size,
            ephemeral: None,
            salt: Some(salt),
            scalar: EcdhScalar::random(params.group, rng),
            shuffle_seed: random_seed(rng),
            transcript: Transcript {
                requester_hello: Some(hello.digest()),
                provider_hello: Some(accept.digest()),
                streams: [None; 3],
            },
            counts: SignatureCounts {
                made: 1,
                verified: 1,
            },
            alignment: None,
        };
        Ok((session, accept))
    }

    /// Requester: checks the provider's accept and agrees the salt.
    pub fn on_accept(&mut self, accept: &Hello, peer: &PeerKeys) -> Result<(), EngineError> {
        self.expect_role(Role::Requester, "take an accept")?;
        if accept.sid != self.params.sid {
            return Err(refuse(format!(
                "the accept is for session {}, not {}",
                accept.sid, self.params.sid
            )));
        }
        check_common(accept, peer, Role::Provider)?;
        if Some(accept.reply_to) != self.transcript.requester_hello {
            return Err(refuse("the accept answers a different hello"));
        }
        check_keys(&self.params.keys, &accept.keys)?;
        if (
            accept.mode,
            accept.reveal,
            accept.batch_size,
            accept.group,
            accept.align,
        ) != (
            self.params.mode,
            self.params.reveal,
            self.params.batch_size,
            self.params.group,
            self.params.align,
        ) {
            return Err(refuse("the accept changes the proposed parameters"));
        }
        let ephemeral = self
            .ephemeral
            .take()
            .ok_or_else(|| EngineError::Phase("this session already took an accept".into()))?;
        self.salt = Some(
            ephemeral
                .derive_salt(&accept.ephemeral, &self.params.sid)
                .map_err(|e| refuse(e.to_string()))?,
        );
        self.provider_size = accept.input_size;
        self.transcript.provider_hello = Some(accept.digest());
        self.counts.verified += 1;
        Ok(())
    }
}

fn random_seed<R: RngCore + CryptoRng>(rng: &mut R) -> SecretBytes<32> {
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let secret = SecretBytes::new(seed);
    zeroize::Zeroize::zeroize(&mut seed);
    secret
}
