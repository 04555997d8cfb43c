//! BLS12-381 signatures in the min_sig setting (blst): 48-byte signatures in
//! G1, 96-byte public keys in G2, each key published with a proof of
//! possession.
//!
//! Verification of many messages signed by the same key uses one aggregate
//! check, `e(Σσ_i, g2) = e(ΣH(m_i), pk)`: one hash-to-curve per message and two
//! Miller loops per key, instead of two pairings per message. When the
//! aggregate fails, [`find_invalid`] bisects to name the failing items.

use std::fmt;

use blst::min_sig::{AggregateSignature, PublicKey, SecretKey, Signature};
use blst::{blst_fp12, blst_p1, blst_p1_affine, blst_p2_affine, BLST_ERROR};
use rand_core::{CryptoRng, RngCore};
use rayon::prelude::*;
use zeroize::Zeroizing;

use crate::CryptoError;

/// Length of a compressed signature.
pub const SIGNATURE_LEN: usize = 48;
/// Length of a compressed public key.
pub const PUBLIC_KEY_LEN: usize = 96;
/// Ciphersuite tag for signatures on messages (proof-of-possession scheme).
const SIG_DST: &[u8] = b"BLS_SIG_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";
/// Ciphersuite tag for proofs of possession.
const POP_DST: &[u8] = b"BLS_POP_BLS12381G1_XMD:SHA-256_SSWU_RO_POP_";

/// A compressed BLS signature.
pub type SignatureBytes = [u8; SIGNATURE_LEN];

/// A BLS secret key. blst zeroizes it on drop.
pub struct BlsSecretKey(SecretKey);

impl BlsSecretKey {
    /// Generates a key from 32 bytes of fresh randomness.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut ikm = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(ikm.as_mut());
        // key_gen only fails for ikm shorter than 32 bytes.
        match SecretKey::key_gen(ikm.as_ref(), &[]) {
            Ok(key) => Self(key),
            Err(_) => unreachable!("key_gen accepts 32 bytes of ikm"),
        }
    }

    /// Restores a key from its 32-byte big-endian encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::BadLength {
                what: "BLS secret key",
                expected: 32,
                got: bytes.len(),
            });
        }
        SecretKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| CryptoError::BadEncoding {
                what: "BLS secret key",
            })
    }

    /// The 32-byte encoding, for a private key file.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key.
    pub fn public(&self) -> BlsPublicKey {
        BlsPublicKey(self.0.sk_to_pk())
    }

    /// Signs a message (hash to G1, then multiply by the key).
    pub fn sign(&self, message: &[u8]) -> SignatureBytes {
        self.0.sign(message, SIG_DST, &[]).compress()
    }

    /// Proves possession of this key by signing its own public key under a
    /// separate ciphersuite tag.
    pub fn prove_possession(&self) -> SignatureBytes {
        let public = self.public().to_bytes();
        self.0.sign(&public, POP_DST, &[]).compress()
    }
}

impl fmt::Debug for BlsSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BlsSecretKey(redacted)")
    }
}

/// A validated BLS public key (in G2, not the identity).
#[derive(Clone, PartialEq, Eq)]
pub struct BlsPublicKey(PublicKey);

impl BlsPublicKey {
    /// Decodes a compressed public key, checking the subgroup and rejecting the
    /// identity.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != PUBLIC_KEY_LEN {
            return Err(CryptoError::BadLength {
                what: "BLS public key",
                expected: PUBLIC_KEY_LEN,
                got: bytes.len(),
            });
        }
        PublicKey::key_validate(bytes)
            .map(Self)
            .map_err(|_| CryptoError::BadEncoding {
                what: "BLS public key",
            })
    }

    /// The 96-byte compressed encoding.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.compress()
    }

    /// Checks a proof of possession made by [`BlsSecretKey::prove_possession`].
    pub fn verify_possession(&self, proof: &[u8]) -> bool {
        let Ok(signature) = Signature::from_bytes(proof) else {
            return false;
        };
        let public = self.to_bytes();
        signature.verify(true, &public, POP_DST, &[], &self.0, false) == BLST_ERROR::BLST_SUCCESS
    }

    /// Verifies one signature on one message (two pairings).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_bytes(signature) else {
            return false;
        };
        signature.verify(true, message, SIG_DST, &[], &self.0, false) == BLST_ERROR::BLST_SUCCESS
    }

    fn affine(&self) -> &blst_p2_affine {
        (&self.0).into()
    }
}

impl fmt::Debug for BlsPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlsPublicKey({})", hex::encode(self.to_bytes()))
    }
}

/// A message hashed to G1, ready to be summed with others.
#[derive(Clone, Copy)]
pub struct MessagePoint(blst_p1);

/// Hashes a message to G1 under the signature ciphersuite.
pub fn hash_message(message: &[u8]) -> MessagePoint {
    let mut point = blst_p1::default();
    // SAFETY: blst reads `message` and the DST within the given lengths and
    // writes one point to `point`; the aug pointer is null with length 0.
    unsafe {
        blst::blst_hash_to_g1(
            &mut point,
            message.as_ptr(),
            message.len(),
            SIG_DST.as_ptr(),
            SIG_DST.len(),
            std::ptr::null(),
            0,
        );
    }
    MessagePoint(point)
}

/// One item to verify: which key of the signer's set signed it, its hashed
/// message and its signature.
pub struct SignedItem<'a> {
    /// Index of the signing key in the key set.
    pub key: usize,
    /// The message hashed with [`hash_message`].
    pub hash: MessagePoint,
    /// The compressed signature.
    pub signature: &'a [u8],
}

/// Verifies every item against `keys` by per-key aggregation and returns the
/// indices (into `items`) of the items that fail, in ascending order. An empty
/// result means every signature is valid. Items naming a key outside `keys`
/// fail.
pub fn find_invalid(keys: &[BlsPublicKey], items: &[SignedItem<'_>]) -> Vec<usize> {
    let decoded: Vec<Option<blst_p1_affine>> = items
        .par_iter()
        .map(|item| Signature::from_bytes(item.signature).ok().map(Into::into))
        .collect();
    let mut bad: Vec<usize> = Vec::new();
    let mut per_key: Vec<Vec<usize>> = vec![Vec::new(); keys.len()];
    for (index, item) in items.iter().enumerate() {
        match (per_key.get_mut(item.key), decoded[index]) {
            (Some(list), Some(_)) => list.push(index),
            _ => bad.push(index),
        }
    }
    let failing: Vec<Vec<usize>> = per_key
        .par_iter()
        .enumerate()
        .map(|(key, indices)| bisect(&keys[key], items, &decoded, indices))
        .collect();
    bad.extend(failing.into_iter().flatten());
    bad.sort_unstable();
    bad
}

fn bisect(
    key: &BlsPublicKey,
    items: &[SignedItem<'_>],
    decoded: &[Option<blst_p1_affine>],
    indices: &[usize],
) -> Vec<usize> {
    if indices.is_empty() || aggregate_holds(key, items, decoded, indices) {
        return Vec::new();
    }
    if indices.len() == 1 {
        return indices.to_vec();
    }
    let (left, right) = indices.split_at(indices.len() / 2);
    let mut bad = bisect(key, items, decoded, left);
    bad.extend(bisect(key, items, decoded, right));
    bad
}

fn aggregate_holds(
    key: &BlsPublicKey,
    items: &[SignedItem<'_>],
    decoded: &[Option<blst_p1_affine>],
    indices: &[usize],
) -> bool {
    let signatures: Vec<Signature> = indices
        .iter()
        .filter_map(|&i| decoded[i].map(Signature::from))
        .collect();
    let refs: Vec<&Signature> = signatures.iter().collect();
    let Ok(aggregate) = AggregateSignature::aggregate(&refs, false) else {
        return false;
    };
    if !aggregate.subgroup_check() {
        return false;
    }
    let signature: blst_p1_affine = aggregate.to_signature().into();
    let mut hash_sum = items[indices[0]].hash.0;
    for &i in &indices[1..] {
        // SAFETY: all pointers refer to valid, initialized blst_p1 values;
        // blst allows the output to alias an input.
        unsafe { blst::blst_p1_add_or_double(&mut hash_sum, &hash_sum, &items[i].hash.0) };
    }
    let mut hash_affine = blst_p1_affine::default();
    // SAFETY: converts an initialized projective point into `hash_affine`.
    unsafe { blst::blst_p1_to_affine(&mut hash_affine, &hash_sum) };
    // SAFETY: blst returns a pointer to its static G2 generator.
    let g2 = unsafe { &*blst::blst_p2_affine_generator() };
    let lhs = blst_fp12::miller_loop(g2, &signature);
    let rhs = blst_fp12::miller_loop(key.affine(), &hash_affine);
    blst_fp12::finalverify(&lhs, &rhs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn keys(n: usize) -> Vec<BlsSecretKey> {
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        (0..n).map(|_| BlsSecretKey::generate(&mut rng)).collect()
    }

    fn signed(secrets: &[BlsSecretKey], n: usize) -> (Vec<Vec<u8>>, Vec<SignatureBytes>) {
        let messages: Vec<Vec<u8>> = (0..n)
            .map(|i| format!("message {i}").into_bytes())
            .collect();
        let sigs = messages
            .iter()
            .enumerate()
            .map(|(i, m)| secrets[i % secrets.len()].sign(m))
            .collect();
        (messages, sigs)
    }

    fn check(
        publics: &[BlsPublicKey],
        messages: &[Vec<u8>],
        sigs: &[SignatureBytes],
    ) -> Vec<usize> {
        let items: Vec<SignedItem<'_>> = messages
            .iter()
            .zip(sigs)
            .enumerate()
            .map(|(i, (m, s))| SignedItem {
                key: i % publics.len(),
                hash: hash_message(m),
                signature: s,
            })
            .collect();
        find_invalid(publics, &items)
    }

    #[test]
    fn valid_batch_passes_and_single_verify_agrees() {
        let secrets = keys(2);
        let publics: Vec<_> = secrets.iter().map(BlsSecretKey::public).collect();
        let (messages, sigs) = signed(&secrets, 17);
        assert!(check(&publics, &messages, &sigs).is_empty());
        assert!(publics[0].verify(&messages[0], &sigs[0]));
        assert!(!publics[1].verify(&messages[0], &sigs[0]));
    }

    #[test]
    fn bisection_names_exactly_the_tampered_items() {
        let secrets = keys(3);
        let publics: Vec<_> = secrets.iter().map(BlsSecretKey::public).collect();
        let (mut messages, mut sigs) = signed(&secrets, 40);
        messages[3].push(b'!');
        sigs[22] = sigs[23];
        sigs[31][47] ^= 0x01;
        assert_eq!(check(&publics, &messages, &sigs), vec![3, 22, 31]);
    }

    #[test]
    fn proof_of_possession_binds_the_key() {
        let secrets = keys(2);
        let pop = secrets[0].prove_possession();
        assert!(secrets[0].public().verify_possession(&pop));
        assert!(!secrets[1].public().verify_possession(&pop));
        assert!(!secrets[0].public().verify_possession(&[0u8; 48]));
    }

    #[test]
    fn public_key_decoding_rejects_garbage() {
        assert!(BlsPublicKey::from_bytes(&[1u8; 96]).is_err());
        assert!(BlsPublicKey::from_bytes(&[1u8; 95]).is_err());
        let key = keys(1).remove(0);
        let bytes = key.public().to_bytes();
        assert_eq!(BlsPublicKey::from_bytes(&bytes), Ok(key.public()));
        let again = BlsSecretKey::from_bytes(key.to_bytes().as_slice()).expect("valid");
        assert_eq!(again.public(), key.public());
    }
}
