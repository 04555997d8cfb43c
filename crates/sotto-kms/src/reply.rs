//! What the KMS signs and how its answers travel: public key statements
//! signed by the KMS signing key (optionally sealed to the caller's
//! ephemeral key), and recovered secrets signed and sealed under a fresh
//! key of the agent's reply channel. Each signature is domain-separated and
//! binds the protocol version, the owner, the secret id, its kind, every
//! key peeled, the reply channel and the answer's salt, so an answer cannot
//! be passed off as the answer to another request.

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sotto_crypto::aead;
use sotto_crypto::hash::sha256;
use sotto_crypto::hpke::{HpkePublicKey, HpkeSecretKey};
use sotto_crypto::identity::{IdentityKey, IdentityPublic, SIGNATURE_LEN};
use zeroize::Zeroizing;

use crate::escrow::Envelope;
use crate::keys::KeyInfo;
use crate::reply_channel::{frame, ReplyChannel};
use crate::KmsError;

/// Length of the random salt each recovery answer carries.
pub const ANSWER_SALT_LEN: usize = 32;

/// Domain of public key statements.
pub const PUBLIC_KEY_DOMAIN: &str = "sotto/kms/public-key/v1";
/// Domain of recovered secrets.
pub const RECOVERED_DOMAIN: &str = "sotto/kms/recovered/v1";
const CHANNEL_INFO: &[u8] = b"sotto/kms/channel/v1";
const PROTOCOL_VERSION: &[u8] = b"1";

/// A public key as the KMS states it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeyStatement {
    /// Protocol version (1).
    pub version: u32,
    /// The key pair version's description.
    pub key: KeyInfo,
    /// Who asked (the statement is for this caller).
    pub to: String,
}

impl PublicKeyStatement {
    /// The HPKE public key stated.
    pub fn public_key(&self) -> Result<HpkePublicKey, KmsError> {
        let bytes = hex::decode(&self.key.public_key).map_err(|e| KmsError::Malformed {
            what: format!("public key of {}", self.key.key_id),
            reason: e.to_string(),
        })?;
        HpkePublicKey::from_bytes(&bytes).map_err(|e| KmsError::Malformed {
            what: format!("public key of {}", self.key.key_id),
            reason: e.to_string(),
        })
    }
}

/// A signed statement in the form it travels.
pub struct SignedStatement {
    /// JSON of the statement.
    pub json: Vec<u8>,
    /// Signature by the KMS signing key.
    pub signature: [u8; SIGNATURE_LEN],
}

/// Signs a public key statement.
pub fn sign_statement(key: &IdentityKey, statement: &PublicKeyStatement) -> SignedStatement {
    let json = serde_json::to_vec(statement).unwrap_or_default();
    let signature = key.sign(PUBLIC_KEY_DOMAIN, &json);
    SignedStatement { json, signature }
}

/// Verifies a public key statement with the pinned KMS signing key.
pub fn verify_statement(
    signer: &IdentityPublic,
    json: &[u8],
    signature: &[u8],
) -> Result<PublicKeyStatement, String> {
    signer
        .verify(PUBLIC_KEY_DOMAIN, json, signature, "public key statement")
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(json).map_err(|e| format!("statement: {e}"))
}

/// Seals a signed statement to a caller's ephemeral channel key.
pub fn seal_to_channel<R: RngCore + CryptoRng>(
    channel_key: &[u8],
    signed: &SignedStatement,
    rng: &mut R,
) -> Result<Vec<u8>, KmsError> {
    let key = HpkePublicKey::from_bytes(channel_key).map_err(|e| KmsError::Malformed {
        what: "channel_key".into(),
        reason: e.to_string(),
    })?;
    let mut body = signed.signature.to_vec();
    body.extend_from_slice(&signed.json);
    key.seal(CHANNEL_INFO, b"", &body, rng)
        .map_err(|e| KmsError::Corrupt(e.to_string()))
}

/// Opens a statement sealed to this caller's channel key, as (json, signature).
pub fn open_channel(key: &HpkeSecretKey, sealed: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let body = key
        .open(CHANNEL_INFO, b"", sealed)
        .map_err(|e| format!("channel does not open: {e}"))?;
    if body.len() < SIGNATURE_LEN {
        return Err("channel answer is too short".into());
    }
    let (signature, json) = body.split_at(SIGNATURE_LEN);
    Ok((json.to_vec(), signature.to_vec()))
}

/// The fields a recovery answer is bound to (everything but the secret).
fn reply_context(envelope: &Envelope, channel: &ReplyChannel, salt: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame(&mut out, PROTOCOL_VERSION);
    frame(&mut out, envelope.header.owner.as_bytes());
    frame(&mut out, envelope.header.secret_id.as_bytes());
    frame(&mut out, envelope.header.kind.label().as_bytes());
    for layer in &envelope.layers {
        frame(&mut out, layer.key_id.as_bytes());
        frame(&mut out, &layer.version.to_be_bytes());
    }
    frame(&mut out, channel.id().as_bytes());
    frame(&mut out, salt);
    out
}

fn recovered_message(context: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut out = context.to_vec();
    frame(&mut out, &sha256(secret));
    out
}

/// A recovered secret as it travels: the answer's salt, and signature and
/// secret sealed with AES-256-GCM under the answer's key.
pub struct SealedAnswer {
    /// The random salt the answer key is drawn with.
    pub salt: [u8; ANSWER_SALT_LEN],
    /// Nonce, ciphertext and tag.
    pub sealed: Vec<u8>,
}

/// At the KMS: signs a recovered secret and seals signature and secret
/// under a fresh key of `channel`.
pub fn seal_recovered<R: RngCore + CryptoRng>(
    signer: &IdentityKey,
    envelope: &Envelope,
    channel: &ReplyChannel,
    secret: &[u8],
    rng: &mut R,
) -> Result<SealedAnswer, KmsError> {
    let mut salt = [0u8; ANSWER_SALT_LEN];
    rng.fill_bytes(&mut salt);
    let context = reply_context(envelope, channel, &salt);
    let signature = signer.sign(RECOVERED_DOMAIN, &recovered_message(&context, secret));
    let mut body = Zeroizing::new(Vec::with_capacity(SIGNATURE_LEN + secret.len()));
    body.extend_from_slice(&signature);
    body.extend_from_slice(secret);
    let key = channel.answer_key(&salt, &context);
    let sealed =
        aead::seal(&key, &context, &body, rng).map_err(|e| KmsError::Corrupt(e.to_string()))?;
    Ok(SealedAnswer { salt, sealed })
}

/// Why a recovery answer was refused by the agent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The salt that draws the answer's key has the wrong length.
    #[error("the answer's salt is {len} bytes, expected {ANSWER_SALT_LEN}")]
    SaltLength {
        /// Its length.
        len: usize,
    },
    /// The answer does not decrypt under the key drawn from this request's
    /// channel and salt: altered, or for another request or channel.
    #[error("the answer does not open with this request's reply channel (altered, or for another request)")]
    DoesNotOpen,
    /// The decrypted answer cannot hold a signature.
    #[error("the answer is too short to hold a signature")]
    TooShort,
    /// The secret is not signed by the pinned KMS signing key for this
    /// request.
    #[error("the recovered secret is not signed by the pinned KMS signing key")]
    NotSigned,
}

/// At the agent: opens the answer with the reply channel and checks the
/// KMS's signature over the secret and the request it answers.
pub fn open_recovered(
    signer: &IdentityPublic,
    envelope: &Envelope,
    channel: &ReplyChannel,
    salt: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, AnswerError> {
    if salt.len() != ANSWER_SALT_LEN {
        return Err(AnswerError::SaltLength { len: salt.len() });
    }
    let context = reply_context(envelope, channel, salt);
    let key = channel.answer_key(salt, &context);
    let body =
        Zeroizing::new(aead::open(&key, &context, sealed).map_err(|_| AnswerError::DoesNotOpen)?);
    if body.len() < SIGNATURE_LEN {
        return Err(AnswerError::TooShort);
    }
    let (signature, secret) = body.split_at(SIGNATURE_LEN);
    signer
        .verify(
            RECOVERED_DOMAIN,
            &recovered_message(&context, secret),
            signature,
            "recovered secret",
        )
        .map_err(|_| AnswerError::NotSigned)?;
    Ok(Zeroizing::new(secret.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escrow::{EscrowHeader, KeyRef, SecretKind};
    use crate::reply_channel::{ChannelRequest, ReplyChannels, DEFAULT_TTL};
    use rand_core::OsRng;

    fn envelope(secret_id: &str) -> Envelope {
        Envelope {
            header: EscrowHeader {
                kind: SecretKind::Password,
                owner: "bank-a".into(),
                secret_id: secret_id.into(),
            },
            layers: vec![KeyRef {
                key_id: "bank-a/escrow".into(),
                version: 1,
            }],
            ciphertext: vec![1, 2, 3],
        }
    }

    fn channel(kms: &IdentityKey) -> (ReplyChannel, ReplyChannel) {
        let request = ChannelRequest::new(&mut OsRng);
        let (grant, kept) =
            ReplyChannels::grant(DEFAULT_TTL, kms, "bank-a", &request.public(), &mut OsRng)
                .expect("grant");
        let (mine, _) = request
            .accept(&kms.public(), "bank-a", &grant)
            .expect("accept");
        (mine, kept)
    }

    #[test]
    fn recovered_secret_opens_only_for_its_request_channel_and_signer() {
        let kms = IdentityKey::generate(&mut OsRng);
        let (mine, theirs) = channel(&kms);
        let env = envelope("pw");
        let answer = seal_recovered(&kms, &env, &theirs, b"hunter2", &mut OsRng).expect("seal");
        let open =
            |signer: &IdentityPublic,
             env: &Envelope,
             ch: &ReplyChannel,
             salt: &[u8],
             sealed: &[u8]| { open_recovered(signer, env, ch, salt, sealed) };
        assert_eq!(
            open(&kms.public(), &env, &mine, &answer.salt, &answer.sealed)
                .expect("open")
                .as_slice(),
            b"hunter2"
        );
        let impostor = IdentityKey::generate(&mut OsRng);
        let refused =
            |signer: &IdentityPublic,
             env: &Envelope,
             ch: &ReplyChannel,
             salt: &[u8],
             sealed: &[u8]| { open(signer, env, ch, salt, sealed).map(|_| ()) };
        assert_eq!(
            refused(
                &impostor.public(),
                &env,
                &mine,
                &answer.salt,
                &answer.sealed
            ),
            Err(AnswerError::NotSigned)
        );
        assert_eq!(
            refused(
                &kms.public(),
                &envelope("other"),
                &mine,
                &answer.salt,
                &answer.sealed
            ),
            Err(AnswerError::DoesNotOpen)
        );
        let (other_channel, _) = channel(&kms);
        assert_eq!(
            refused(
                &kms.public(),
                &env,
                &other_channel,
                &answer.salt,
                &answer.sealed
            ),
            Err(AnswerError::DoesNotOpen)
        );
        let mut salt = answer.salt;
        salt[0] ^= 1;
        assert_eq!(
            refused(&kms.public(), &env, &mine, &salt, &answer.sealed),
            Err(AnswerError::DoesNotOpen)
        );
        assert_eq!(
            refused(
                &kms.public(),
                &env,
                &mine,
                &answer.salt[..31],
                &answer.sealed
            ),
            Err(AnswerError::SaltLength { len: 31 })
        );
        let mut sealed = answer.sealed.clone();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(
            refused(&kms.public(), &env, &mine, &answer.salt, &sealed),
            Err(AnswerError::DoesNotOpen)
        );
        let forged = seal_recovered(&impostor, &env, &theirs, b"evil", &mut OsRng).expect("seal");
        assert_eq!(
            refused(&kms.public(), &env, &mine, &forged.salt, &forged.sealed),
            Err(AnswerError::NotSigned)
        );
    }

    /// Seals `body` as an answer would be sealed, under the channel's key
    /// for `salt`: what a party holding the channel secret could send.
    fn sealed_as_answer(env: &Envelope, ch: &ReplyChannel, salt: &[u8], body: &[u8]) -> Vec<u8> {
        let context = reply_context(env, ch, salt);
        aead::seal(&ch.answer_key(salt, &context), &context, body, &mut OsRng).expect("seal")
    }

    /// The KMS's signature binds the secret itself, not only the request: a
    /// genuine signature resealed beside another secret by someone holding
    /// the channel secret is refused. Bodies too short for a signature are
    /// refused as such; one of exactly a signature's length is checked.
    #[test]
    fn the_signature_binds_the_secret_and_short_bodies_are_refused() {
        let kms = IdentityKey::generate(&mut OsRng);
        let (mine, theirs) = channel(&kms);
        let env = envelope("pw");
        let answer = seal_recovered(&kms, &env, &theirs, b"hunter2", &mut OsRng).expect("seal");
        let context = reply_context(&env, &theirs, &answer.salt);
        let body = aead::open(
            &theirs.answer_key(&answer.salt, &context),
            &context,
            &answer.sealed,
        )
        .expect("open");
        let mut swapped = body[..SIGNATURE_LEN].to_vec();
        swapped.extend_from_slice(b"hunter3");
        let open = |body: &[u8]| {
            let sealed = sealed_as_answer(&env, &theirs, &answer.salt, body);
            open_recovered(&kms.public(), &env, &mine, &answer.salt, &sealed).map(|_| ())
        };
        open(&body).expect("the genuine body opens");
        assert_eq!(open(&swapped), Err(AnswerError::NotSigned));
        assert_eq!(open(&[7; 10]), Err(AnswerError::TooShort));
        assert_eq!(open(&[7; SIGNATURE_LEN - 1]), Err(AnswerError::TooShort));
        assert_eq!(open(&[7; SIGNATURE_LEN]), Err(AnswerError::NotSigned));
    }

    #[test]
    fn channel_statements_shorter_than_a_signature_are_refused() {
        let (sk, pk) = HpkeSecretKey::generate(&mut OsRng);
        let seal = |body: &[u8]| pk.seal(CHANNEL_INFO, b"", body, &mut OsRng).expect("seal");
        let too_short = Err("channel answer is too short".to_owned());
        assert_eq!(open_channel(&sk, &seal(&[1; 10])), too_short);
        assert_eq!(open_channel(&sk, &seal(&[1; SIGNATURE_LEN - 1])), too_short);
        assert_eq!(
            open_channel(&sk, &seal(&[1; SIGNATURE_LEN])),
            Ok((Vec::new(), vec![1; SIGNATURE_LEN]))
        );
        let mut body = vec![2; SIGNATURE_LEN];
        body.extend_from_slice(b"{}");
        assert_eq!(
            open_channel(&sk, &seal(&body)),
            Ok((b"{}".to_vec(), vec![2; SIGNATURE_LEN]))
        );
    }

    #[test]
    fn every_answer_has_its_own_salt_and_key() {
        let kms = IdentityKey::generate(&mut OsRng);
        let (_, theirs) = channel(&kms);
        let env = envelope("pw");
        let a = seal_recovered(&kms, &env, &theirs, b"same", &mut OsRng).expect("seal");
        let b = seal_recovered(&kms, &env, &theirs, b"same", &mut OsRng).expect("seal");
        assert_ne!(a.salt, b.salt);
        assert_ne!(a.sealed, b.sealed);
    }
}
