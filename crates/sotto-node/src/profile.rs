//! Public profiles: a node's name, identity key and BLS keys with proofs of
//! possession, signed by the identity key. A profile is what peers exchange
//! and pin; its fingerprint is what protocol messages refer to.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sotto_crypto::bls::{BlsPublicKey, BlsSecretKey};
use sotto_crypto::hash::FieldHasher;
use sotto_crypto::identity::{IdentityKey, IdentityPublic};
use sotto_crypto::CryptoError;

use crate::{NodeError, NodeName, MIN_BLS_KEYS};

/// Format tag written in every profile file.
pub const PROFILE_FORMAT: &str = "sotto-profile/v1";
const PROFILE_DOMAIN: &str = "sotto/profile/v1";

/// A verified profile: every key decoded, every proof and the signature
/// checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// The node's name.
    pub name: NodeName,
    /// The node's identity key.
    pub identity: IdentityPublic,
    /// The node's BLS signing keys, in signing order (element i uses key i mod k).
    pub bls_keys: Vec<BlsPublicKey>,
    proofs: Vec<[u8; 48]>,
    signature: [u8; 64],
}

/// The JSON form of a profile, as written by `sotto identity export`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicProfile {
    /// Always [`PROFILE_FORMAT`].
    pub format: String,
    /// The node's name.
    pub name: String,
    /// Hex of the 32-byte Ed25519 identity key.
    pub identity_key: String,
    /// The BLS keys with their proofs of possession.
    pub bls_keys: Vec<PublicBlsKey>,
    /// Hex of the identity key's signature over all of the above.
    pub signature: String,
}

/// One BLS key of a profile.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicBlsKey {
    /// Hex of the 96-byte compressed G2 public key.
    pub public: String,
    /// Hex of the 48-byte proof of possession.
    pub proof: String,
}

impl Profile {
    /// Builds and signs the profile of a node from its secret keys.
    pub fn create(name: &NodeName, identity: &IdentityKey, bls: &[BlsSecretKey]) -> Self {
        let bls_keys: Vec<BlsPublicKey> = bls.iter().map(BlsSecretKey::public).collect();
        let proofs: Vec<[u8; 48]> = bls.iter().map(BlsSecretKey::prove_possession).collect();
        let body = signed_body(name, &identity.public(), &bls_keys, &proofs);
        let signature = identity.sign(PROFILE_DOMAIN, &body);
        Self {
            name: name.clone(),
            identity: identity.public(),
            bls_keys,
            proofs,
            signature,
        }
    }

    /// A hash that identifies this exact profile (keys and proofs included).
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut hasher = FieldHasher::new("sotto/profile-fingerprint/v1");
        hasher.field(&signed_body(
            &self.name,
            &self.identity,
            &self.bls_keys,
            &self.proofs,
        ));
        hasher.finish()
    }

    /// The JSON form.
    pub fn to_public(&self) -> PublicProfile {
        PublicProfile {
            format: PROFILE_FORMAT.to_owned(),
            name: self.name.to_string(),
            identity_key: hex::encode(self.identity.to_bytes()),
            bls_keys: self
                .bls_keys
                .iter()
                .zip(&self.proofs)
                .map(|(key, proof)| PublicBlsKey {
                    public: hex::encode(key.to_bytes()),
                    proof: hex::encode(proof),
                })
                .collect(),
            signature: hex::encode(self.signature),
        }
    }

    /// Pretty JSON of the profile.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(&self.to_public())
            .unwrap_or_else(|_| unreachable!("profile fields always serialize"));
        text.push('\n');
        text
    }

    /// Parses and verifies a profile file's contents; `path` names it in errors.
    pub fn from_json(path: &Path, text: &[u8]) -> Result<Self, NodeError> {
        let malformed = |reason: String| NodeError::Malformed {
            path: path.to_owned(),
            reason,
        };
        let public: PublicProfile = serde_json::from_slice(text).map_err(|e| {
            malformed(format!(
                "line {}, column {}: not a sotto profile: {e}",
                e.line(),
                e.column()
            ))
        })?;
        if public.format != PROFILE_FORMAT {
            return Err(malformed(format!(
                "field \"format\": expected {PROFILE_FORMAT:?}, found {:?}",
                public.format
            )));
        }
        let name: NodeName = public.name.parse()?;
        let invalid = |source: CryptoError| NodeError::ProfileInvalid {
            path: path.to_owned(),
            name: name.to_string(),
            source,
        };
        let identity = IdentityPublic::from_bytes(
            &decode_hex("identity_key", &public.identity_key).map_err(invalid)?,
        )
        .map_err(invalid)?;
        if public.bls_keys.len() < MIN_BLS_KEYS {
            return Err(malformed(format!(
                "field \"bls_keys\": {} key(s); at least {MIN_BLS_KEYS} are required",
                public.bls_keys.len()
            )));
        }
        let mut bls_keys = Vec::with_capacity(public.bls_keys.len());
        let mut proofs = Vec::with_capacity(public.bls_keys.len());
        for (index, entry) in public.bls_keys.iter().enumerate() {
            let key = BlsPublicKey::from_bytes(
                &decode_hex("bls_keys.public", &entry.public).map_err(invalid)?,
            )
            .map_err(invalid)?;
            let proof: [u8; 48] = decode_fixed("bls_keys.proof", &entry.proof).map_err(invalid)?;
            if !key.verify_possession(&proof) {
                return Err(invalid(CryptoError::BadProofOfPossession { index }));
            }
            bls_keys.push(key);
            proofs.push(proof);
        }
        let signature: [u8; 64] = decode_fixed("signature", &public.signature).map_err(invalid)?;
        let body = signed_body(&name, &identity, &bls_keys, &proofs);
        identity
            .verify(PROFILE_DOMAIN, &body, &signature, "profile")
            .map_err(invalid)?;
        Ok(Self {
            name,
            identity,
            bls_keys,
            proofs,
            signature,
        })
    }
}

fn signed_body(
    name: &NodeName,
    identity: &IdentityPublic,
    bls_keys: &[BlsPublicKey],
    proofs: &[[u8; 48]],
) -> Vec<u8> {
    let mut hasher = FieldHasher::new(PROFILE_DOMAIN);
    hasher
        .field(name.as_str().as_bytes())
        .field(&identity.to_bytes());
    hasher.field(&(bls_keys.len() as u64).to_be_bytes());
    for (key, proof) in bls_keys.iter().zip(proofs) {
        hasher.field(&key.to_bytes()).field(proof);
    }
    hasher.finish().to_vec()
}

fn decode_hex(what: &'static str, text: &str) -> Result<Vec<u8>, CryptoError> {
    hex::decode(text).map_err(|e| CryptoError::BadHex {
        what,
        reason: e.to_string(),
    })
}

fn decode_fixed<const N: usize>(what: &'static str, text: &str) -> Result<[u8; N], CryptoError> {
    let bytes = decode_hex(what, text)?;
    bytes
        .as_slice()
        .try_into()
        .map_err(|_| CryptoError::BadLength {
            what,
            expected: N,
            got: bytes.len(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    fn sample() -> Profile {
        let identity = IdentityKey::generate(&mut OsRng);
        let bls: Vec<_> = (0..2).map(|_| BlsSecretKey::generate(&mut OsRng)).collect();
        Profile::create(&"bank-a".parse().expect("name"), &identity, &bls)
    }

    #[test]
    fn json_round_trip_verifies() {
        let profile = sample();
        let parsed =
            Profile::from_json(Path::new("p.json"), profile.to_json().as_bytes()).expect("valid");
        assert_eq!(parsed, profile);
        assert_eq!(parsed.fingerprint(), profile.fingerprint());
    }

    #[test]
    fn edited_name_breaks_the_signature() {
        let mut public = sample().to_public();
        public.name = "bank-b".into();
        let text = serde_json::to_vec(&public).expect("json");
        let err = Profile::from_json(Path::new("p.json"), &text).expect_err("must fail");
        assert!(matches!(
            err,
            NodeError::ProfileInvalid {
                source: CryptoError::BadSignature { .. },
                ..
            }
        ));
    }

    #[test]
    fn swapped_proof_is_refused() {
        let mut public = sample().to_public();
        let first = public.bls_keys[0].proof.clone();
        public.bls_keys[0].proof = public.bls_keys[1].proof.clone();
        public.bls_keys[1].proof = first;
        let text = serde_json::to_vec(&public).expect("json");
        let err = Profile::from_json(Path::new("p.json"), &text).expect_err("must fail");
        assert!(matches!(
            err,
            NodeError::ProfileInvalid {
                source: CryptoError::BadProofOfPossession { index: 0 },
                ..
            }
        ));
    }

    #[test]
    fn broken_json_names_line_and_column() {
        let err =
            Profile::from_json(Path::new("p.json"), b"{\n  \"format\": 3\n}").expect_err("bad");
        let text = err.to_string();
        assert!(text.contains("p.json") && text.contains("line 2"), "{text}");
    }
}
