//! What the KMS signs and how its answers travel: public key statements
//! signed by the KMS signing key (optionally sealed to the caller's
//! ephemeral key), and recovered secrets signed and sealed to the agent's
//! ephemeral reply key. Each signature is domain-separated and binds the
//! protocol version, the owner, the secret id, its kind, every key peeled
//! and the reply key, so an answer cannot be replayed to another request.

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sotto_crypto::hash::sha256;
use sotto_crypto::hpke::{HpkePublicKey, HpkeSecretKey};
use sotto_crypto::identity::{IdentityKey, IdentityPublic, SIGNATURE_LEN};
use zeroize::Zeroizing;

use crate::escrow::Envelope;
use crate::keys::KeyInfo;
use crate::KmsError;

/// Domain of public key statements.
pub const PUBLIC_KEY_DOMAIN: &str = "sotto/kms/public-key/v1";
/// Domain of recovered secrets.
pub const RECOVERED_DOMAIN: &str = "sotto/kms/recovered/v1";
const REPLY_INFO: &[u8] = b"sotto/kms/reply/v1";
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

fn frame(out: &mut Vec<u8>, field: &[u8]) {
    out.extend_from_slice(&(field.len() as u64).to_be_bytes());
    out.extend_from_slice(field);
}

/// The fields a recovery answer is bound to (everything but the secret).
fn reply_context(envelope: &Envelope, reply_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    frame(&mut out, PROTOCOL_VERSION);
    frame(&mut out, envelope.header.owner.as_bytes());
    frame(&mut out, envelope.header.secret_id.as_bytes());
    frame(&mut out, envelope.header.kind.label().as_bytes());
    for layer in &envelope.layers {
        frame(&mut out, layer.key_id.as_bytes());
        frame(&mut out, &layer.version.to_be_bytes());
    }
    frame(&mut out, reply_key);
    out
}

fn recovered_message(context: &[u8], secret: &[u8]) -> Vec<u8> {
    let mut out = context.to_vec();
    frame(&mut out, &sha256(secret));
    out
}

/// At the KMS: signs a recovered secret and seals signature and secret to
/// the agent's reply key.
pub fn seal_recovered<R: RngCore + CryptoRng>(
    signer: &IdentityKey,
    envelope: &Envelope,
    reply_key: &[u8],
    secret: &[u8],
    rng: &mut R,
) -> Result<Vec<u8>, KmsError> {
    let key = HpkePublicKey::from_bytes(reply_key).map_err(|e| KmsError::Malformed {
        what: "reply_key".into(),
        reason: e.to_string(),
    })?;
    let context = reply_context(envelope, reply_key);
    let signature = signer.sign(RECOVERED_DOMAIN, &recovered_message(&context, secret));
    let mut body = Zeroizing::new(Vec::with_capacity(SIGNATURE_LEN + secret.len()));
    body.extend_from_slice(&signature);
    body.extend_from_slice(secret);
    key.seal(REPLY_INFO, &context, &body, rng)
        .map_err(|e| KmsError::Corrupt(e.to_string()))
}

/// At the agent: opens the answer with the ephemeral reply key and checks
/// the KMS's signature over the secret and the request it answers.
pub fn open_recovered(
    signer: &IdentityPublic,
    envelope: &Envelope,
    reply_key: &HpkeSecretKey,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, String> {
    let context = reply_context(envelope, &reply_key.public().to_bytes());
    let body = Zeroizing::new(
        reply_key
            .open(REPLY_INFO, &context, sealed)
            .map_err(|_| "the answer does not open with this request's reply key (altered, or for another request)".to_owned())?,
    );
    if body.len() < SIGNATURE_LEN {
        return Err("the answer is too short to hold a signature".into());
    }
    let (signature, secret) = body.split_at(SIGNATURE_LEN);
    signer
        .verify(
            RECOVERED_DOMAIN,
            &recovered_message(&context, secret),
            signature,
            "recovered secret",
        )
        .map_err(|e| format!("{e} (not signed by the pinned KMS signing key)"))?;
    Ok(Zeroizing::new(secret.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::escrow::{EscrowHeader, KeyRef, SecretKind};
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

    #[test]
    fn recovered_secret_opens_only_for_its_request_and_signer() {
        let kms = IdentityKey::generate(&mut OsRng);
        let (reply, reply_pub) = HpkeSecretKey::generate(&mut OsRng);
        let env = envelope("pw");
        let sealed = seal_recovered(&kms, &env, &reply_pub.to_bytes(), b"hunter2", &mut OsRng)
            .expect("seal");
        assert_eq!(
            open_recovered(&kms.public(), &env, &reply, &sealed)
                .expect("open")
                .as_slice(),
            b"hunter2"
        );
        let impostor = IdentityKey::generate(&mut OsRng);
        assert!(open_recovered(&impostor.public(), &env, &reply, &sealed).is_err());
        assert!(open_recovered(&kms.public(), &envelope("other"), &reply, &sealed).is_err());
        let (other_reply, _) = HpkeSecretKey::generate(&mut OsRng);
        assert!(open_recovered(&kms.public(), &env, &other_reply, &sealed).is_err());
        let forged = seal_recovered(&impostor, &env, &reply_pub.to_bytes(), b"evil", &mut OsRng)
            .expect("seal");
        assert!(open_recovered(&kms.public(), &env, &reply, &forged)
            .expect_err("forged")
            .contains("not signed by the pinned KMS signing key"));
    }
}
