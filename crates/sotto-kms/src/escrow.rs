//! Escrow envelopes: a secret sealed with HPKE to a root KMS key pair, with
//! its kind, owner, key id and version as associated data, so the KMS can
//! check ownership before it decrypts and no envelope can be passed off as
//! another's. Layered escrow seals again to each further key of a chain
//! (every private key is needed; recovery peels the layers in reverse);
//! mirrored escrow seals the same secret separately to a second key.

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sotto_crypto::hpke::{HpkePublicKey, HpkeSecretKey};
use zeroize::Zeroizing;

const INFO: &[u8] = b"sotto/kms/escrow/v1";

/// What a secret is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretKind {
    /// A business flow's root key.
    BusinessRootKey,
    /// A key derived from a business root key.
    BusinessSubKey,
    /// An intermediate result.
    IntermediateResult,
    /// A final result.
    FinalResult,
    /// Session state.
    Session,
    /// A password.
    Password,
    /// An authorization file.
    AuthorizationFile,
    /// A peer's interaction id.
    InteractionId,
    /// Anything else.
    Other,
}

impl SecretKind {
    /// Every kind, in the spec's order.
    pub const ALL: [SecretKind; 9] = [
        SecretKind::BusinessRootKey,
        SecretKind::BusinessSubKey,
        SecretKind::IntermediateResult,
        SecretKind::FinalResult,
        SecretKind::Session,
        SecretKind::Password,
        SecretKind::AuthorizationFile,
        SecretKind::InteractionId,
        SecretKind::Other,
    ];

    /// The kind's name as written in files and on the command line.
    pub fn label(self) -> &'static str {
        match self {
            SecretKind::BusinessRootKey => "business-root-key",
            SecretKind::BusinessSubKey => "business-sub-key",
            SecretKind::IntermediateResult => "intermediate-result",
            SecretKind::FinalResult => "final-result",
            SecretKind::Session => "session",
            SecretKind::Password => "password",
            SecretKind::AuthorizationFile => "authorization-file",
            SecretKind::InteractionId => "interaction-id",
            SecretKind::Other => "other",
        }
    }
}

impl std::str::FromStr for SecretKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.label() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.label()).collect();
                format!("unknown secret kind {s:?}; one of {}", names.join(", "))
            })
    }
}

impl std::fmt::Display for SecretKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Which KMS key pair an envelope layer is sealed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRef {
    /// The key id.
    pub key_id: String,
    /// Its version.
    pub version: u32,
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@v{}", self.key_id, self.version)
    }
}

/// The associated data of every layer: kind, owner, secret id and the key
/// the layer is sealed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscrowHeader {
    /// What the secret is.
    pub kind: SecretKind,
    /// The owning participant (its node name).
    pub owner: String,
    /// The secret's name in the owner's store.
    pub secret_id: String,
}

impl EscrowHeader {
    fn aad(&self, key: &KeyRef, layer: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let kind = self.kind.label();
        let layer = (layer as u64).to_be_bytes();
        let version = key.version.to_be_bytes();
        for field in [
            kind.as_bytes(),
            self.owner.as_bytes(),
            self.secret_id.as_bytes(),
            key.key_id.as_bytes(),
            &version,
            &layer,
        ] {
            out.extend_from_slice(&(field.len() as u32).to_be_bytes());
            out.extend_from_slice(field);
        }
        out
    }
}

/// An escrowed secret: its header, the keys of its layers (innermost
/// first) and the outermost ciphertext.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Kind, owner and secret id.
    pub header: EscrowHeader,
    /// The key of each layer, innermost first.
    pub layers: Vec<KeyRef>,
    /// The sealed bytes (hex in JSON).
    #[serde(with = "hex_bytes")]
    pub ciphertext: Vec<u8>,
}

mod hex_bytes {
    pub fn serialize<S: serde::Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        hex::decode(text).map_err(serde::de::Error::custom)
    }
}

/// Why an envelope could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EscrowError {
    /// No key to seal to.
    #[error("a layered escrow needs at least one key")]
    NoKeys,
    /// A layer does not open: tampered, truncated, sealed to another key,
    /// or carrying another owner's header.
    #[error("layer {layer} (key {key_id} v{version}) does not open: altered, truncated, or not this owner's secret")]
    Layer {
        /// The layer, from the outside in (0 = outermost).
        layer: usize,
        /// Its key id.
        key_id: String,
        /// Its key version.
        version: u32,
    },
    /// The caller gave a different number of keys than the envelope has layers.
    #[error("the envelope has {expected} layers but {given} keys were given")]
    LayerCount {
        /// Layers.
        expected: usize,
        /// Keys given.
        given: usize,
    },
}

/// Seals `secret` to each key of `chain` in turn (the first key seals the
/// secret, each next key seals the previous ciphertext).
pub fn seal<R: RngCore + CryptoRng>(
    header: EscrowHeader,
    secret: &[u8],
    chain: &[(KeyRef, HpkePublicKey)],
    rng: &mut R,
) -> Result<Envelope, EscrowError> {
    if chain.is_empty() {
        return Err(EscrowError::NoKeys);
    }
    let mut data = Zeroizing::new(secret.to_vec());
    for (layer, (key_ref, key)) in chain.iter().enumerate() {
        let sealed = key
            .seal(INFO, &header.aad(key_ref, layer), &data, rng)
            .map_err(|_| EscrowError::NoKeys)?;
        data = Zeroizing::new(sealed);
    }
    Ok(Envelope {
        header,
        layers: chain.iter().map(|(k, _)| k.clone()).collect(),
        ciphertext: data.to_vec(),
    })
}

/// Seals the same secret separately to a primary chain and a mirror chain;
/// either envelope recovers it.
pub fn seal_mirrored<R: RngCore + CryptoRng>(
    header: &EscrowHeader,
    secret: &[u8],
    primary: &[(KeyRef, HpkePublicKey)],
    mirror: &[(KeyRef, HpkePublicKey)],
    rng: &mut R,
) -> Result<(Envelope, Envelope), EscrowError> {
    Ok((
        seal(header.clone(), secret, primary, rng)?,
        seal(header.clone(), secret, mirror, rng)?,
    ))
}

/// Opens an envelope with the private key of every layer, outermost first
/// (the reverse of the chain it was sealed to).
pub fn open(
    envelope: &Envelope,
    keys: &[&HpkeSecretKey],
) -> Result<Zeroizing<Vec<u8>>, EscrowError> {
    if envelope.layers.is_empty() {
        return Err(EscrowError::NoKeys);
    }
    if keys.len() != envelope.layers.len() {
        return Err(EscrowError::LayerCount {
            expected: envelope.layers.len(),
            given: keys.len(),
        });
    }
    let mut data = Zeroizing::new(envelope.ciphertext.clone());
    for (depth, key) in keys.iter().enumerate() {
        let layer = envelope.layers.len() - 1 - depth;
        let key_ref = &envelope.layers[layer];
        let opened = key
            .open(INFO, &envelope.header.aad(key_ref, layer), &data)
            .map_err(|_| EscrowError::Layer {
                layer: depth,
                key_id: key_ref.key_id.clone(),
                version: key_ref.version,
            })?;
        data = Zeroizing::new(opened);
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn kinds_parse_from_their_labels_only_and_keys_print_with_their_version() {
        for kind in SecretKind::ALL {
            assert_eq!(kind.label().parse::<SecretKind>(), Ok(kind));
            assert_eq!(kind.to_string(), kind.label());
        }
        let err = "token".parse::<SecretKind>().expect_err("unknown");
        assert!(
            err.starts_with("unknown secret kind \"token\"; one of "),
            "{err}"
        );
        assert!(
            SecretKind::ALL.iter().all(|k| err.contains(k.label())),
            "{err}"
        );
        let key = KeyRef {
            key_id: "bank-a/escrow".into(),
            version: 3,
        };
        assert_eq!(key.to_string(), "bank-a/escrow@v3");
    }

    fn key(id: &str) -> (HpkeSecretKey, (KeyRef, HpkePublicKey)) {
        let (sk, pk) = HpkeSecretKey::generate(&mut OsRng);
        (
            sk,
            (
                KeyRef {
                    key_id: id.into(),
                    version: 1,
                },
                pk,
            ),
        )
    }

    fn header() -> EscrowHeader {
        EscrowHeader {
            kind: SecretKind::BusinessRootKey,
            owner: "bank-a".into(),
            secret_id: "flow-7".into(),
        }
    }

    #[test]
    fn layered_escrow_needs_every_key_in_reverse_order() {
        let (k1, p1) = key("root-1");
        let (k2, p2) = key("root-2");
        let (k3, p3) = key("root-3");
        let env = seal(header(), b"secret", &[p1, p2, p3], &mut OsRng).expect("seal");
        assert_eq!(
            open(&env, &[&k3, &k2, &k1]).expect("open").as_slice(),
            b"secret"
        );
        assert!(matches!(
            open(&env, &[&k1, &k2, &k3]),
            Err(EscrowError::Layer { layer: 0, .. })
        ));
        assert!(matches!(
            open(&env, &[&k3, &k2]),
            Err(EscrowError::LayerCount { .. })
        ));
        let json = serde_json::to_string(&env).expect("json");
        let back: Envelope = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, env);
    }

    #[test]
    fn tampered_truncated_or_foreign_envelopes_are_refused() {
        let (k1, p1) = key("root-1");
        let env = seal(header(), b"secret", &[p1], &mut OsRng).expect("seal");
        let layer_fails = |version: u32| {
            Err(EscrowError::Layer {
                layer: 0,
                key_id: "root-1".into(),
                version,
            })
        };
        let mut tampered = env.clone();
        tampered.ciphertext[40] ^= 1;
        assert_eq!(open(&tampered, &[&k1]), layer_fails(1));
        let mut truncated = env.clone();
        truncated.ciphertext.truncate(20);
        assert_eq!(open(&truncated, &[&k1]), layer_fails(1));
        let mut foreign = env.clone();
        foreign.header.owner = "bank-b".into();
        assert_eq!(open(&foreign, &[&k1]), layer_fails(1));
        let mut relabeled = env.clone();
        relabeled.header.kind = SecretKind::Password;
        assert_eq!(open(&relabeled, &[&k1]), layer_fails(1));
        let mut renamed = env.clone();
        renamed.header.secret_id = "other".into();
        assert_eq!(open(&renamed, &[&k1]), layer_fails(1));
        let mut other_version = env.clone();
        other_version.layers[0].version = 2;
        assert_eq!(open(&other_version, &[&k1]), layer_fails(2));
        // An envelope naming no key would hand back its "ciphertext" as is.
        let mut unsealed = env;
        unsealed.layers.clear();
        unsealed.ciphertext = b"attacker's choice".to_vec();
        assert_eq!(open(&unsealed, &[]), Err(EscrowError::NoKeys));
    }

    #[test]
    fn either_mirror_copy_recovers() {
        let (k1, p1) = key("site-a");
        let (k2, p2) = key("site-b");
        let (a, b) = seal_mirrored(&header(), b"secret", &[p1], &[p2], &mut OsRng).expect("seal");
        assert_eq!(open(&a, &[&k1]).expect("a").as_slice(), b"secret");
        assert_eq!(open(&b, &[&k2]).expect("b").as_slice(), b"secret");
        assert_eq!(
            open(&a, &[&k2]),
            Err(EscrowError::Layer {
                layer: 0,
                key_id: "site-a".into(),
                version: 1
            })
        );
    }
}
