//! Sample alignment: what both parties of an aligned session compute the
//! same way from the session's secret salt, so that their outputs can be
//! checked to line up without exchanging them.
//!
//! - The *pseudonym key* `HKDF-SHA256(salt, sid, "sotto/psi/pseudonym-key/v1")`
//!   is known to both parties and to nobody else (the salt comes from their
//!   ephemeral key agreement).
//! - A key's *tag* is `HKDF-SHA256(pseudonym key, normalized key,
//!   "sotto/psi/key-tag/v1")`: equal keys give equal tags on both sides, and
//!   a tag reveals nothing about the key to whoever lacks the session.
//!   Tags serve as the pseudonymous id column (`--output-id-column`).
//! - The *alignment digest* is SHA-256 under `sotto/psi/alignment/v1` over
//!   the session id, the number of rows and the tags in output order. Both
//!   sides sign it in their receipts; equal digests mean row i of one output
//!   is the customer of row i of the other.

use sotto_crypto::hash::FieldHasher;
use sotto_crypto::ids::SessionId;
use sotto_crypto::kdf::hkdf_key;
use sotto_crypto::secret::SecretBytes;

use super::Session;
use crate::error::EngineError;

/// The key both parties of a session derive for pseudonyms and tags.
pub struct PseudonymKey(SecretBytes<32>);

/// A key's tag under a session's pseudonym key.
pub type KeyTag = [u8; 32];

impl PseudonymKey {
    /// The tag of a normalized key.
    pub fn tag(&self, normalized_key: &[u8]) -> KeyTag {
        *hkdf_key(
            Some(self.0.expose()),
            normalized_key,
            b"sotto/psi/key-tag/v1",
        )
        .expose()
    }
}

/// The digest of an aligned output: its rows' key tags in output order.
pub fn alignment_digest<'a>(
    sid: &SessionId,
    tags: impl ExactSizeIterator<Item = &'a KeyTag>,
) -> [u8; 32] {
    let mut hasher = FieldHasher::new("sotto/psi/alignment/v1");
    hasher
        .field(sid.as_bytes())
        .field(&(tags.len() as u64).to_be_bytes());
    for tag in tags {
        hasher.field(tag);
    }
    hasher.finish()
}

impl Session {
    /// The session's pseudonym key (after the handshake).
    pub fn pseudonym_key(&self) -> Result<PseudonymKey, EngineError> {
        let salt = self.salt()?;
        Ok(PseudonymKey(hkdf_key(
            Some(salt.expose()),
            self.params.sid.as_bytes(),
            b"sotto/psi/pseudonym-key/v1",
        )))
    }

    /// Records this party's alignment digest, to be signed in its receipts
    /// and compared with the peer's.
    pub fn set_alignment(&mut self, digest: [u8; 32]) {
        self.alignment = Some(digest);
    }

    /// This party's alignment digest, once set.
    pub fn alignment(&self) -> Option<[u8; 32]> {
        self.alignment
    }
}
