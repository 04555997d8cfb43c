//! Node identity: one Ed25519 key per node, used to sign profiles, handshakes,
//! batch headers and receipts. Every signature is domain-separated.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use rand_core::{CryptoRng, RngCore};

use crate::hash::FieldHasher;
use crate::CryptoError;

/// Length of an identity signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// The secret half of a node identity. Zeroized on drop (by ed25519-dalek).
pub struct IdentityKey(SigningKey);

impl IdentityKey {
    /// Generates a fresh identity key.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self(SigningKey::generate(rng))
    }

    /// Restores a key from its 32-byte seed.
    pub fn from_seed(seed: &[u8]) -> Result<Self, CryptoError> {
        let seed: [u8; 32] = seed.try_into().map_err(|_| CryptoError::BadLength {
            what: "identity key",
            expected: 32,
            got: seed.len(),
        })?;
        Ok(Self(SigningKey::from_bytes(&seed)))
    }

    /// The 32-byte seed, for writing to a private key file.
    pub fn to_seed(&self) -> zeroize::Zeroizing<[u8; 32]> {
        zeroize::Zeroizing::new(self.0.to_bytes())
    }

    /// A second handle on the same key, for a component that must own one
    /// (a protocol engine, a server). Both zeroize on drop.
    pub fn duplicate(&self) -> Self {
        Self(SigningKey::from_bytes(&self.0.to_bytes()))
    }

    /// The key as a PKCS#8 PEM document, for use as the node's TLS key.
    pub fn to_pkcs8_pem(&self) -> Result<zeroize::Zeroizing<String>, CryptoError> {
        use ed25519_dalek::pkcs8::{spki::der::pem::LineEnding, EncodePrivateKey};
        self.0
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| zeroize::Zeroizing::new(pem.to_string()))
            .map_err(|_| CryptoError::BadEncoding {
                what: "identity key (PKCS#8)",
            })
    }

    /// The public half.
    pub fn public(&self) -> IdentityPublic {
        IdentityPublic(self.0.verifying_key())
    }

    /// Signs `message` under `domain`.
    pub fn sign(&self, domain: &str, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(&framed(domain, message)).to_bytes()
    }

    /// The same key as an X25519 HPKE private key (the Ed25519 secret
    /// scalar), whose public half is [`IdentityPublic::to_hpke`]: what is
    /// sealed to a node's published identity opens only with its identity
    /// key. Signatures and HPKE use different hashes and domains over the
    /// one scalar (the construction libsodium calls
    /// `crypto_sign_ed25519_sk_to_curve25519`).
    pub fn to_hpke(&self) -> Result<crate::hpke::HpkeSecretKey, CryptoError> {
        let scalar = zeroize::Zeroizing::new(self.0.to_scalar_bytes());
        crate::hpke::HpkeSecretKey::from_bytes(scalar.as_slice())
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey(public={}, secret=redacted)", self.public())
    }
}

/// The public half of a node identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityPublic(VerifyingKey);

impl IdentityPublic {
    /// Length of the encoding in bytes.
    pub const LEN: usize = 32;

    /// Decodes a public key, rejecting invalid and weak points.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        let array: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadLength {
            what: "identity public key",
            expected: 32,
            got: bytes.len(),
        })?;
        let key = VerifyingKey::from_bytes(&array).map_err(|_| CryptoError::BadEncoding {
            what: "identity public key",
        })?;
        if key.is_weak() {
            return Err(CryptoError::BadEncoding {
                what: "identity public key (weak point)",
            });
        }
        Ok(Self(key))
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The X25519 HPKE public key of the same point (its Montgomery
    /// u-coordinate); see [`IdentityKey::to_hpke`].
    pub fn to_hpke(&self) -> Result<crate::hpke::HpkePublicKey, CryptoError> {
        crate::hpke::HpkePublicKey::from_bytes(self.0.to_montgomery().as_bytes())
    }

    /// Verifies a signature made with [`IdentityKey::sign`] under `domain`.
    /// `what` names the signed object in the error.
    pub fn verify(
        &self,
        domain: &str,
        message: &[u8],
        signature: &[u8],
        what: &'static str,
    ) -> Result<(), CryptoError> {
        let signature = ed25519_dalek::Signature::from_slice(signature)
            .map_err(|_| CryptoError::BadSignature { what })?;
        self.0
            .verify_strict(&framed(domain, message), &signature)
            .map_err(|_| CryptoError::BadSignature { what })?;
        Ok(())
    }
}

impl fmt::Display for IdentityPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.to_bytes()))
    }
}

impl fmt::Debug for IdentityPublic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityPublic({self})")
    }
}

fn framed(domain: &str, message: &[u8]) -> [u8; 32] {
    let mut hasher = FieldHasher::new("sotto/identity-signature/v1");
    hasher.field(domain.as_bytes()).field(message);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn signature_verifies_only_under_its_domain_and_message() {
        let key = IdentityKey::generate(&mut OsRng);
        let sig = key.sign("d1", b"msg");
        let public = key.public();
        assert!(public.verify("d1", b"msg", &sig, "test").is_ok());
        assert!(public.verify("d2", b"msg", &sig, "test").is_err());
        assert!(public.verify("d1", b"msh", &sig, "test").is_err());
        let mut bad = sig;
        bad[5] ^= 1;
        assert!(public.verify("d1", b"msg", &bad, "test").is_err());
    }

    #[test]
    fn seed_round_trip_keeps_the_key() {
        let key = IdentityKey::generate(&mut OsRng);
        let again = IdentityKey::from_seed(key.to_seed().as_slice()).expect("32 bytes");
        assert_eq!(key.public(), again.public());
    }

    #[test]
    fn a_seal_to_the_published_identity_opens_only_with_its_key() {
        let key = IdentityKey::generate(&mut OsRng);
        let other = IdentityKey::generate(&mut OsRng);
        let public = key.public().to_hpke().expect("a valid point");
        assert_eq!(
            public,
            key.to_hpke().expect("a scalar").public(),
            "both halves name the same X25519 key"
        );
        let sealed = public
            .seal(b"info", b"aad", b"record", &mut OsRng)
            .expect("seal");
        let opened = key
            .to_hpke()
            .expect("scalar")
            .open(b"info", b"aad", &sealed);
        assert_eq!(opened.expect("opens"), b"record");
        let foreign = other
            .to_hpke()
            .expect("scalar")
            .open(b"info", b"aad", &sealed);
        assert!(foreign.is_err(), "another identity cannot open it");
    }
}
