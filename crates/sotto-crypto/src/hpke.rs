//! HPKE (RFC 9180) base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256
//! and AES-256-GCM: public-key encryption of small secrets (group keys) to a
//! node. The sealed form is the 32-byte encapsulated key followed by the
//! ciphertext and tag.

use ::hpke::aead::AesGcm256;
use ::hpke::kdf::HkdfSha256;
use ::hpke::kem::X25519HkdfSha256;
use ::hpke::{Deserializable, Kem as KemTrait, OpModeR, OpModeS, Serializable};
use rand_core::{CryptoRng, RngCore};

use crate::CryptoError;

type Kem = X25519HkdfSha256;
const ENCAPPED_LEN: usize = 32;

/// A node's HPKE private key (zeroized on drop by the `hpke` crate).
pub struct HpkeSecretKey(<Kem as KemTrait>::PrivateKey);

/// A node's HPKE public key.
#[derive(Clone, PartialEq, Eq)]
pub struct HpkePublicKey(<Kem as KemTrait>::PublicKey);

impl HpkeSecretKey {
    /// Generates a key pair.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> (Self, HpkePublicKey) {
        let (sk, pk) = Kem::gen_keypair(rng);
        (Self(sk), HpkePublicKey(pk))
    }

    /// Restores a private key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        <Kem as KemTrait>::PrivateKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| CryptoError::BadEncoding {
                what: "HPKE private key",
            })
    }

    /// The 32 private bytes, for a private key file.
    pub fn to_bytes(&self) -> zeroize::Zeroizing<Vec<u8>> {
        zeroize::Zeroizing::new(self.0.to_bytes().to_vec())
    }

    /// The public key.
    pub fn public(&self) -> HpkePublicKey {
        HpkePublicKey(Kem::sk_to_pk(&self.0))
    }

    /// Opens what [`HpkePublicKey::seal`] sealed to this key with the same
    /// `info` and `aad`.
    pub fn open(&self, info: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < ENCAPPED_LEN {
            return Err(CryptoError::BadLength {
                what: "HPKE sealed message",
                expected: ENCAPPED_LEN,
                got: sealed.len(),
            });
        }
        let (encapped, ciphertext) = sealed.split_at(ENCAPPED_LEN);
        let encapped = <Kem as KemTrait>::EncappedKey::from_bytes(encapped).map_err(|_| {
            CryptoError::BadEncoding {
                what: "HPKE encapsulated key",
            }
        })?;
        ::hpke::single_shot_open::<AesGcm256, HkdfSha256, Kem>(
            &OpModeR::Base,
            &self.0,
            &encapped,
            info,
            ciphertext,
            aad,
        )
        .map_err(|_| CryptoError::BadSignature {
            what: "HPKE sealed message",
        })
    }
}

impl std::fmt::Debug for HpkeSecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HpkeSecretKey(redacted)")
    }
}

impl HpkePublicKey {
    /// Decodes a public key.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        <Kem as KemTrait>::PublicKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| CryptoError::BadEncoding {
                what: "HPKE public key",
            })
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes().to_vec()
    }

    /// Seals `plaintext` to this key.
    pub fn seal<R: RngCore + CryptoRng>(
        &self,
        info: &[u8],
        aad: &[u8],
        plaintext: &[u8],
        rng: &mut R,
    ) -> Result<Vec<u8>, CryptoError> {
        let (encapped, ciphertext) = ::hpke::single_shot_seal::<AesGcm256, HkdfSha256, Kem, R>(
            &OpModeS::Base,
            &self.0,
            info,
            plaintext,
            aad,
            rng,
        )
        .map_err(|_| CryptoError::BadEncoding { what: "HPKE seal" })?;
        let mut out = encapped.to_bytes().to_vec();
        out.extend_from_slice(&ciphertext);
        Ok(out)
    }
}

impl std::fmt::Debug for HpkePublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HpkePublicKey({})", hex::encode(self.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn seal_open_and_every_mismatch_refused() {
        let (sk, pk) = HpkeSecretKey::generate(&mut OsRng);
        assert_eq!(sk.public(), pk);
        let sealed = pk
            .seal(b"info", b"aad", b"group key v1", &mut OsRng)
            .expect("seal");
        assert_eq!(
            sk.open(b"info", b"aad", &sealed).expect("open"),
            b"group key v1"
        );
        assert!(sk.open(b"other", b"aad", &sealed).is_err());
        assert!(sk.open(b"info", b"v2", &sealed).is_err());
        let (other, _) = HpkeSecretKey::generate(&mut OsRng);
        assert!(other.open(b"info", b"aad", &sealed).is_err());
        let mut bad = sealed.clone();
        bad[40] ^= 1;
        assert!(sk.open(b"info", b"aad", &bad).is_err());
        let restored = HpkeSecretKey::from_bytes(&sk.to_bytes()).expect("restore");
        assert_eq!(
            restored.open(b"info", b"aad", &sealed).expect("open"),
            b"group key v1"
        );
        assert_eq!(HpkePublicKey::from_bytes(&pk.to_bytes()).expect("pk"), pk);
    }
}
