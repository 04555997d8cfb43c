//! Password sealing of the root KMS's key bundle for disaster recovery:
//! `AES-256-GCM(key = Argon2id(password, salt, m, t, p))`. The format
//! records its parameters; parameters below the floor (m < 64 MiB or t < 3)
//! are refused when sealing and when opening, so a bundle cannot be
//! downgraded. A wrong password fails the tag and changes nothing.
//!
//! Layout: `SOTTOPWD` | version 1 | m (KiB, u32 BE) | t (u32) | p (u32) |
//! salt (16) | nonce and ciphertext with tag (the `aead` sealed form).

use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::{CryptoRng, RngCore};
use sotto_crypto::aead;
use sotto_crypto::secret::SecretBytes;
use zeroize::Zeroizing;

const MAGIC: &[u8; 8] = b"SOTTOPWD";
const VERSION: u8 = 1;
const HEADER_LEN: usize = 8 + 1 + 12 + 16;
/// Smallest accepted memory cost, in KiB (64 MiB).
pub const MIN_MEMORY_KIB: u32 = 64 * 1024;
/// Smallest accepted number of passes.
pub const MIN_PASSES: u32 = 3;

/// The most a sealed bundle's header may ask Argon2id for before opening
/// it. The bundle comes from untrusted storage: whoever controls the third
/// environment could otherwise make `restore` spend gigabytes and minutes.
/// The default ceiling is four times the sealing cost (256 MiB, t = 12,
/// p = 4); `kms restore --max-unseal-memory-mib / --max-unseal-passes`
/// raise it explicitly for bundles sealed with larger costs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnsealLimits {
    /// Largest memory cost, in KiB.
    pub memory_kib: u32,
    /// Largest number of passes.
    pub passes: u32,
    /// Largest number of lanes.
    pub lanes: u32,
}

impl Default for UnsealLimits {
    fn default() -> Self {
        Self {
            memory_kib: 4 * MIN_MEMORY_KIB,
            passes: 4 * MIN_PASSES,
            lanes: 4,
        }
    }
}

/// Argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes.
    pub passes: u32,
    /// Lanes.
    pub lanes: u32,
}

impl Default for Cost {
    fn default() -> Self {
        Self {
            memory_kib: MIN_MEMORY_KIB,
            passes: MIN_PASSES,
            lanes: 1,
        }
    }
}

/// Why a bundle could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The password does not open the bundle (or the bundle was altered).
    #[error("wrong password, or the sealed bundle was altered; nothing was changed")]
    WrongPassword,
    /// The bundle is not in this format.
    #[error("not a sealed key bundle: {0}")]
    Malformed(String),
    /// The operator password is empty (an empty password file, say).
    #[error("the operator password is empty; put it on the first line of the password file")]
    EmptyPassword,
    /// The bundle asks for more Argon2id work than the ceiling allows.
    #[error("the sealed bundle asks for Argon2id m={memory_kib} KiB, t={passes}, p={lanes}, above the ceiling (m <= {max_memory_kib} KiB, t <= {max_passes}, p <= {max_lanes}); if you sealed it with larger costs yourself, raise the ceiling with --max-unseal-memory-mib / --max-unseal-passes, otherwise its header was forged or damaged")]
    CostAboveCeiling {
        /// Memory asked for, KiB.
        memory_kib: u32,
        /// Passes asked for.
        passes: u32,
        /// Lanes asked for.
        lanes: u32,
        /// The memory ceiling, KiB.
        max_memory_kib: u32,
        /// The passes ceiling.
        max_passes: u32,
        /// The lanes ceiling.
        max_lanes: u32,
    },
    /// Parameters below the floor.
    #[error("Argon2id parameters m={memory_kib} KiB, t={passes} are below the floor (m >= 65536 KiB, t >= 3)")]
    WeakParameters {
        /// Memory in KiB.
        memory_kib: u32,
        /// Passes.
        passes: u32,
    },
}

/// The operator's password, held only in memory (zeroized on drop,
/// redacted in Debug).
pub struct OperatorPassword(Zeroizing<Vec<u8>>);

impl OperatorPassword {
    /// A password from its bytes; it must not be empty.
    pub fn new(bytes: Vec<u8>) -> Result<Self, PasswordError> {
        let bytes = Zeroizing::new(bytes);
        if bytes.is_empty() {
            return Err(PasswordError::EmptyPassword);
        }
        Ok(Self(bytes))
    }

    /// The password bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for OperatorPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OperatorPassword(redacted)")
    }
}

fn derive(password: &[u8], salt: &[u8], cost: Cost) -> Result<SecretBytes<32>, PasswordError> {
    if cost.memory_kib < MIN_MEMORY_KIB || cost.passes < MIN_PASSES {
        return Err(PasswordError::WeakParameters {
            memory_kib: cost.memory_kib,
            passes: cost.passes,
        });
    }
    let params = Params::new(cost.memory_kib, cost.passes, cost.lanes, Some(32))
        .map_err(|e| PasswordError::Malformed(format!("Argon2 parameters: {e}")))?;
    let mut key = Zeroizing::new([0u8; 32]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(password, salt, key.as_mut())
        .map_err(|e| PasswordError::Malformed(format!("Argon2: {e}")))?;
    Ok(SecretBytes::new(*key))
}

/// Seals `plaintext` under `password`.
pub fn seal<R: RngCore + CryptoRng>(
    password: &[u8],
    plaintext: &[u8],
    cost: Cost,
    rng: &mut R,
) -> Result<Vec<u8>, PasswordError> {
    let mut salt = [0u8; 16];
    rng.fill_bytes(&mut salt);
    let key = derive(password, &salt, cost)?;
    let mut out = Vec::with_capacity(HEADER_LEN + plaintext.len() + 28);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    for v in [cost.memory_kib, cost.passes, cost.lanes] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&salt);
    let body = aead::seal(&key, &out, plaintext, rng)
        .map_err(|e| PasswordError::Malformed(e.to_string()))?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens a sealed bundle whose costs are within `limits`.
pub fn open(
    password: &[u8],
    sealed: &[u8],
    limits: UnsealLimits,
) -> Result<Zeroizing<Vec<u8>>, PasswordError> {
    if sealed.len() < HEADER_LEN || &sealed[..8] != MAGIC {
        return Err(PasswordError::Malformed(
            "missing the SOTTOPWD header".into(),
        ));
    }
    if sealed[8] != VERSION {
        return Err(PasswordError::Malformed(format!(
            "format version {} (this build reads {VERSION})",
            sealed[8]
        )));
    }
    let word = |at: usize| {
        u32::from_be_bytes([sealed[at], sealed[at + 1], sealed[at + 2], sealed[at + 3]])
    };
    let cost = Cost {
        memory_kib: word(9),
        passes: word(13),
        lanes: word(17),
    };
    if cost.memory_kib > limits.memory_kib
        || cost.passes > limits.passes
        || cost.lanes > limits.lanes
    {
        return Err(PasswordError::CostAboveCeiling {
            memory_kib: cost.memory_kib,
            passes: cost.passes,
            lanes: cost.lanes,
            max_memory_kib: limits.memory_kib,
            max_passes: limits.passes,
            max_lanes: limits.lanes,
        });
    }
    let (header, body) = sealed.split_at(HEADER_LEN);
    let key = derive(password, &header[21..37], cost)?;
    aead::open(&key, header, body)
        .map(Zeroizing::new)
        .map_err(|_| PasswordError::WrongPassword)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn seals_opens_and_refuses_wrong_password_tamper_and_downgrade() {
        let sealed =
            seal(b"correct horse", b"key bundle", Cost::default(), &mut OsRng).expect("seal");
        let limits = UnsealLimits::default();
        assert_eq!(
            open(b"correct horse", &sealed, limits)
                .expect("open")
                .as_slice(),
            b"key bundle"
        );
        assert_eq!(
            open(b"wrong", &sealed, limits),
            Err(PasswordError::WrongPassword)
        );
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            open(b"correct horse", &bad, limits),
            Err(PasswordError::WrongPassword)
        );
        // Costs above the ceiling are refused before any derivation: five
        // times the default memory, or 13 passes.
        for (at, value) in [(9, 5 * MIN_MEMORY_KIB), (13, 13)] {
            let mut costly = sealed.clone();
            costly[at..at + 4].copy_from_slice(&value.to_be_bytes());
            assert!(matches!(
                open(b"correct horse", &costly, limits),
                Err(PasswordError::CostAboveCeiling { .. })
            ));
        }
        // Lowering the recorded cost is refused as well.
        let mut weak = sealed.clone();
        weak[13..17].copy_from_slice(&1u32.to_be_bytes());
        assert!(matches!(
            open(b"correct horse", &weak, limits),
            Err(PasswordError::WeakParameters { .. })
        ));
        assert!(matches!(
            seal(
                b"p",
                b"x",
                Cost {
                    memory_kib: 1024,
                    passes: 3,
                    lanes: 1
                },
                &mut OsRng
            ),
            Err(PasswordError::WeakParameters { .. })
        ));
        assert!(matches!(
            open(b"p", b"short", limits),
            Err(PasswordError::Malformed(_))
        ));
        assert!(matches!(
            OperatorPassword::new(Vec::new()),
            Err(PasswordError::EmptyPassword)
        ));
    }
}
