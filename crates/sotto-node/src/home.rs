//! Creating and opening a node home, and pinning peers.
//!
//! Layout:
//! ```text
//! HOME/node.toml        name and format version
//! HOME/identity.key     Ed25519 seed (32 bytes, mode 0600)
//! HOME/bls.keys         k BLS secret keys (k x 32 bytes, mode 0600)
//! HOME/peers/NAME.json  pinned peer profiles
//! HOME/sessions/        protocol session state (mode 0600 files)
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sotto_crypto::bls::BlsSecretKey;
use sotto_crypto::identity::{IdentityKey, IdentityPublic};

use crate::files::{create_private_dir, read, warn_if_exposed, write_atomic, Visibility};
use crate::{NodeError, NodeName, Profile};

/// The fewest BLS keys a node may have: forging a data set must require more
/// than one key.
pub const MIN_BLS_KEYS: usize = 2;
const CONFIG_FILE: &str = "node.toml";
const IDENTITY_FILE: &str = "identity.key";
const BLS_FILE: &str = "bls.keys";
const PEERS_DIR: &str = "peers";
const SESSIONS_DIR: &str = "sessions";
const HOME_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeConfig {
    format: u32,
    name: String,
}

/// An opened node home with its secret keys loaded.
#[derive(Debug)]
pub struct NodeHome {
    dir: PathBuf,
    name: NodeName,
    identity: IdentityKey,
    bls: Vec<BlsSecretKey>,
}

impl NodeHome {
    /// Creates a new home in `dir` (which must not already hold one) with a
    /// fresh identity key and `bls_count` BLS keys.
    pub fn init<R: RngCore + CryptoRng>(
        dir: &Path,
        name: NodeName,
        bls_count: usize,
        rng: &mut R,
    ) -> Result<Self, NodeError> {
        if dir.join(CONFIG_FILE).exists() || dir.join(IDENTITY_FILE).exists() {
            return Err(NodeError::HomeExists {
                path: dir.to_owned(),
            });
        }
        if bls_count < MIN_BLS_KEYS {
            return Err(NodeError::Malformed {
                path: dir.to_owned(),
                reason: format!(
                    "{bls_count} BLS key(s) requested; at least {MIN_BLS_KEYS} are required"
                ),
            });
        }
        crate::outputs::check_new_dir(dir)?;
        create_private_dir(dir)?;
        for sub in [PEERS_DIR, SESSIONS_DIR] {
            create_private_dir(&dir.join(sub))?;
        }
        let identity = IdentityKey::generate(rng);
        let bls: Vec<BlsSecretKey> = (0..bls_count)
            .map(|_| BlsSecretKey::generate(rng))
            .collect();
        write_atomic(
            &dir.join(IDENTITY_FILE),
            identity.to_seed().as_slice(),
            Visibility::Private,
        )?;
        let mut bls_bytes = zeroize::Zeroizing::new(Vec::with_capacity(32 * bls_count));
        for key in &bls {
            bls_bytes.extend_from_slice(key.to_bytes().as_slice());
        }
        write_atomic(&dir.join(BLS_FILE), &bls_bytes, Visibility::Private)?;
        let config = NodeConfig {
            format: HOME_FORMAT,
            name: name.to_string(),
        };
        let text = toml::to_string(&config).map_err(|e| NodeError::Malformed {
            path: dir.join(CONFIG_FILE),
            reason: e.to_string(),
        })?;
        write_atomic(&dir.join(CONFIG_FILE), text.as_bytes(), Visibility::Public)?;
        Ok(Self {
            dir: dir.to_owned(),
            name,
            identity,
            bls,
        })
    }

    /// Opens an existing home and loads its keys.
    pub fn open(dir: &Path) -> Result<Self, NodeError> {
        let config_path = dir.join(CONFIG_FILE);
        if !config_path.exists() {
            return Err(NodeError::NotAHome {
                path: dir.to_owned(),
            });
        }
        let text = String::from_utf8(read(&config_path)?).map_err(|_| NodeError::Malformed {
            path: config_path.clone(),
            reason: "not UTF-8".into(),
        })?;
        let config: NodeConfig = toml::from_str(&text).map_err(|e| NodeError::Malformed {
            path: config_path.clone(),
            reason: e.to_string(),
        })?;
        if config.format != HOME_FORMAT {
            return Err(NodeError::Malformed {
                path: config_path,
                reason: format!(
                    "home format {} is not supported (this build reads {HOME_FORMAT})",
                    config.format
                ),
            });
        }
        let name: NodeName = config.name.parse()?;
        let identity_path = dir.join(IDENTITY_FILE);
        warn_if_exposed(&identity_path);
        let seed = zeroize::Zeroizing::new(read(&identity_path)?);
        let identity = IdentityKey::from_seed(&seed).map_err(|e| NodeError::Malformed {
            path: identity_path,
            reason: e.to_string(),
        })?;
        let bls_path = dir.join(BLS_FILE);
        warn_if_exposed(&bls_path);
        let bls_bytes = zeroize::Zeroizing::new(read(&bls_path)?);
        if bls_bytes.len() % 32 != 0 || bls_bytes.len() / 32 < MIN_BLS_KEYS {
            return Err(NodeError::Malformed {
                path: bls_path,
                reason: format!(
                    "{} bytes; expected at least {MIN_BLS_KEYS} keys of 32 bytes",
                    bls_bytes.len()
                ),
            });
        }
        let bls = bls_bytes
            .chunks(32)
            .map(BlsSecretKey::from_bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| NodeError::Malformed {
                path: bls_path,
                reason: e.to_string(),
            })?;
        Ok(Self {
            dir: dir.to_owned(),
            name,
            identity,
            bls,
        })
    }

    /// The home directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The node's name.
    pub fn name(&self) -> &NodeName {
        &self.name
    }

    /// The identity key.
    pub fn identity(&self) -> &IdentityKey {
        &self.identity
    }

    /// The BLS signing keys.
    pub fn bls_keys(&self) -> &[BlsSecretKey] {
        &self.bls
    }

    /// The node's own signed profile.
    pub fn profile(&self) -> Profile {
        Profile::create(&self.name, &self.identity, &self.bls)
    }

    /// Where protocol session state goes (mode 0700 directory).
    pub fn sessions_dir(&self) -> PathBuf {
        self.dir.join(SESSIONS_DIR)
    }

    /// Verifies a profile file and pins it under its name. Pinning the same
    /// profile again is a no-op; a different profile under a pinned name is
    /// refused.
    pub fn pin_peer(&self, profile_path: &Path) -> Result<Profile, NodeError> {
        let profile = Profile::from_json(profile_path, &read(profile_path)?)?;
        if profile.identity == self.identity.public() || profile.name == self.name {
            return Err(NodeError::OwnProfile {
                path: profile_path.to_owned(),
                name: self.name.to_string(),
            });
        }
        let target = self.peer_path(&profile.name);
        if target.exists() {
            let pinned = Profile::from_json(&target, &read(&target)?)?;
            if pinned != profile {
                return Err(NodeError::PeerConflict {
                    name: profile.name.to_string(),
                    pinned: pinned.identity.to_string(),
                    path: target,
                });
            }
            return Ok(profile);
        }
        write_atomic(&target, profile.to_json().as_bytes(), Visibility::Public)?;
        Ok(profile)
    }

    /// Every pinned peer, sorted by name.
    pub fn peers(&self) -> Result<Vec<Profile>, NodeError> {
        let dir = self.dir.join(PEERS_DIR);
        let entries = fs::read_dir(&dir).map_err(|e| NodeError::io(&dir, "list", e))?;
        let mut peers = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| NodeError::io(&dir, "list", e))?.path();
            if path.extension().is_some_and(|ext| ext == "json") {
                peers.push(Profile::from_json(&path, &read(&path)?)?);
            }
        }
        peers.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(peers)
    }

    /// The pinned peer called `name`.
    pub fn peer(&self, name: &NodeName) -> Result<Profile, NodeError> {
        let path = self.peer_path(name);
        if !path.exists() {
            return Err(NodeError::UnknownPeer {
                what: format!("named {name}"),
            });
        }
        Profile::from_json(&path, &read(&path)?)
    }

    /// The pinned peer with identity key `identity`.
    pub fn peer_by_identity(&self, identity: &IdentityPublic) -> Result<Profile, NodeError> {
        self.peers()?
            .into_iter()
            .find(|p| p.identity == *identity)
            .ok_or_else(|| NodeError::UnknownPeer {
                what: format!("with identity key {identity}"),
            })
    }

    fn peer_path(&self, name: &NodeName) -> PathBuf {
        self.dir.join(PEERS_DIR).join(format!("{name}.json"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn init_then_open_gives_the_same_keys_and_refuses_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = NodeHome::init(dir.path(), "bank-a".parse().expect("name"), 3, &mut OsRng)
            .expect("init");
        let again = NodeHome::open(dir.path()).expect("open");
        assert_eq!(home.profile(), again.profile());
        assert_eq!(again.bls_keys().len(), 3);
        let err = NodeHome::init(dir.path(), "bank-a".parse().expect("name"), 2, &mut OsRng)
            .expect_err("exists");
        assert!(matches!(err, NodeError::HomeExists { .. }));
    }

    #[test]
    fn pinning_checks_conflicts() {
        let dirs: Vec<_> = (0..3)
            .map(|_| tempfile::tempdir().expect("tempdir"))
            .collect();
        let a = NodeHome::init(dirs[0].path(), "a".parse().expect("name"), 2, &mut OsRng)
            .expect("init");
        let b = NodeHome::init(dirs[1].path(), "b".parse().expect("name"), 2, &mut OsRng)
            .expect("init");
        let b2 = NodeHome::init(dirs[2].path(), "b".parse().expect("name"), 2, &mut OsRng)
            .expect("init");
        let file = dirs[0].path().join("b.json");
        write_atomic(&file, b.profile().to_json().as_bytes(), Visibility::Public).expect("write");
        a.pin_peer(&file).expect("pin");
        a.pin_peer(&file).expect("pin again is fine");
        assert_eq!(
            a.peer_by_identity(&b.profile().identity)
                .expect("found")
                .name
                .as_str(),
            "b"
        );
        write_atomic(&file, b2.profile().to_json().as_bytes(), Visibility::Public).expect("write");
        assert!(matches!(
            a.pin_peer(&file),
            Err(NodeError::PeerConflict { .. })
        ));
        assert!(matches!(
            a.peer_by_identity(&b2.profile().identity),
            Err(NodeError::UnknownPeer { .. })
        ));
    }
}
