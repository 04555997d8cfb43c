//! The participant agent: escrows secrets to the root KMS's public keys and
//! writes the envelopes to the second environment (and a mirror copy to
//! another location), lists and fetches them, and recovers them through the
//! KMS. It keeps no plaintext anywhere but in memory; its home holds only
//! its node identity and `kms-agent.toml` (where the KMS is, the pinned
//! KMS signing key, where the envelopes go).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Mutex;

use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use sotto_crypto::hpke::HpkePublicKey;
use sotto_crypto::identity::IdentityPublic;
use sotto_node::files::{read, write_atomic, Visibility};
use sotto_node::NodeHome;
use zeroize::Zeroizing;

use crate::client::KmsClient;
use crate::escrow::{self, Envelope, EscrowHeader, KeyRef, SecretKind};
use crate::keys::KeyId;
use crate::objects::ObjectLocation;
use crate::KmsError;
use sotto_node::clock::unix_now;

/// The largest secret the agent escrows: 1 MiB. Secrets are keys, results,
/// tokens and files of that order; a recovery answer carries the whole
/// secret in one gRPC message (the request carries the envelope in hex), and
/// 1 MiB keeps both well inside the 4 MiB message limit, layered or not.
/// Bulk data is encrypted under a key, and the key escrowed.
pub const MAX_SECRET_LEN: usize = 1 << 20;

/// The agent's configuration file in the participant's home.
pub const AGENT_FILE: &str = "kms-agent.toml";
const OBJECT_FORMAT: &str = "sotto-escrow/1";

/// Where the KMS and the escrowed envelopes are.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AgentConfig {
    /// The KMS's address (`HOST:PORT`).
    pub kms_address: String,
    /// The KMS's node name (its certificate must be issued to it).
    pub kms_name: String,
    /// The pinned KMS signing key, hex.
    pub signing_key: String,
    /// The second environment: a directory or `s3://BUCKET/PREFIX`.
    pub store: String,
    /// Where mirror copies go, if used.
    pub mirror_store: Option<String>,
}

/// A secret's name within its owner: 1 to 128 of `A-Z a-z 0-9 . _ -`, not
/// starting with a dot.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretId(String);

impl FromStr for SecretId {
    type Err = KmsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && !s.starts_with('.')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(KmsError::Malformed {
                what: format!("secret id {s:?}"),
                reason: "use 1 to 128 characters from A-Z, a-z, 0-9, '.', '_', '-', not starting with '.'".into(),
            });
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SecretId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretId({})", self.0)
    }
}

/// How one secret is escrowed.
#[derive(Clone, Debug, Default)]
pub struct EscrowOptions {
    /// The key chain, innermost first (empty: `OWNER/escrow`). More than
    /// one key is layered encryption: every key is needed to open it.
    pub keys: Vec<KeyId>,
    /// A mirror copy sealed to this chain, written to the mirror store.
    pub mirror: Option<Vec<KeyId>>,
    /// Replace an existing escrow of the same id.
    pub replace: bool,
}

/// An escrowed envelope as stored in the second environment.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredEscrow {
    /// Format tag.
    pub format: String,
    /// When escrowed, Unix seconds.
    pub created: u64,
    /// The envelope.
    pub envelope: Envelope,
}

/// What an escrow wrote.
#[derive(Clone, Debug, Serialize)]
pub struct Escrowed {
    /// The object written.
    pub object: String,
    /// Its keys, innermost first.
    pub keys: Vec<String>,
    /// The mirror copy's keys, if any.
    pub mirror_keys: Option<Vec<String>>,
}

/// The participant's agent.
pub struct Agent {
    owner: String,
    signer: IdentityPublic,
    client: KmsClient,
    store: ObjectLocation,
    mirror: Option<ObjectLocation>,
    config_path: PathBuf,
    public_keys: Mutex<HashMap<String, (KeyRef, HpkePublicKey)>>,
}

fn config_path(home: &NodeHome) -> PathBuf {
    home.dir().join(AGENT_FILE)
}

/// The object name of a secret.
pub fn object_name(owner: &str, id: &SecretId) -> String {
    format!("escrow/{owner}/{id}.json")
}

impl Agent {
    /// Configures the agent in `home`: connects to the KMS, pins its
    /// signing key and writes `kms-agent.toml` (atomically). Re-running it
    /// (say, for a new KMS address) keeps the pinned key unless `repin`.
    pub async fn setup(
        home: &NodeHome,
        kms_name: &str,
        kms_address: &str,
        store: &str,
        mirror_store: Option<&str>,
        repin: bool,
    ) -> Result<AgentConfig, KmsError> {
        ObjectLocation::create(store)?;
        if let Some(mirror) = mirror_store {
            ObjectLocation::create(mirror)?;
        }
        let mut client = KmsClient::connect(home, kms_name, kms_address).await?;
        let signing_key = client.signing_key().await?;
        if let Ok(pinned) = Self::config(home) {
            if pinned.signing_key != signing_key.to_string() && !repin {
                return Err(KmsError::BadAnswer {
                    kms: client.label().to_owned(),
                    reason: format!(
                        "it presents signing key {signing_key}, but {} pinned {}; if the KMS really changed its key, re-run with --repin",
                        config_path(home).display(),
                        pinned.signing_key
                    ),
                });
            }
        }
        let config = AgentConfig {
            kms_address: kms_address.to_owned(),
            kms_name: kms_name.to_owned(),
            signing_key: signing_key.to_string(),
            store: store.to_owned(),
            mirror_store: mirror_store.map(str::to_owned),
        };
        let text = toml::to_string(&config).map_err(|e| KmsError::Corrupt(e.to_string()))?;
        write_atomic(&config_path(home), text.as_bytes(), Visibility::Public)?;
        Ok(config)
    }

    /// The agent's configuration in `home`.
    pub fn config(home: &NodeHome) -> Result<AgentConfig, KmsError> {
        let path = config_path(home);
        if !path.exists() {
            return Err(KmsError::NotConfigured {
                path,
                missing: "missing",
                hint: "",
            });
        }
        let bytes = read(&path)?;
        toml::from_str(&String::from_utf8_lossy(&bytes)).map_err(|e| KmsError::Malformed {
            what: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Opens the agent configured in `home`; it connects to its KMS on the
    /// first call that needs it (listing and fetching envelopes do not).
    pub async fn open(home: &NodeHome) -> Result<Self, KmsError> {
        let config = Self::config(home)?;
        let signer = hex::decode(&config.signing_key)
            .ok()
            .and_then(|b| IdentityPublic::from_bytes(&b).ok())
            .ok_or_else(|| KmsError::Malformed {
                what: format!("{}: signing_key", config_path(home).display()),
                reason: "not an Ed25519 public key in hex".into(),
            })?;
        let client = KmsClient::connect_lazy(home, &config.kms_name, &config.kms_address)?;
        Ok(Self {
            config_path: config_path(home),
            owner: home.name().to_string(),
            signer,
            client,
            store: ObjectLocation::parse(&config.store)?,
            mirror: config
                .mirror_store
                .as_deref()
                .map(ObjectLocation::parse)
                .transpose()?,
            public_keys: Mutex::new(HashMap::new()),
        })
    }

    /// The pinned KMS signing key.
    pub fn signer(&self) -> &IdentityPublic {
        &self.signer
    }

    /// The connection to the KMS.
    pub fn client(&self) -> KmsClient {
        self.client.clone()
    }

    fn default_keys(&self, purpose: &str) -> Result<Vec<KeyId>, KmsError> {
        Ok(vec![format!("{}/{purpose}", self.owner).parse()?])
    }

    fn mirror_store(&self) -> Result<&ObjectLocation, KmsError> {
        self.mirror.as_ref().ok_or_else(|| KmsError::NotConfigured {
            path: self.config_path.clone(),
            missing: "no mirror_store configured",
            hint: " with --mirror-store",
        })
    }

    async fn public_key(&self, id: &KeyId) -> Result<(KeyRef, HpkePublicKey), KmsError> {
        let cached = self
            .public_keys
            .lock()
            .map_err(|_| KmsError::Corrupt("key cache lock poisoned".into()))?
            .get(&id.to_string())
            .cloned();
        if let Some(found) = cached {
            return Ok(found);
        }
        let statement = self
            .client()
            .public_key(&self.signer, &id.to_string(), None, false)
            .await?;
        let entry = (
            KeyRef {
                key_id: statement.key.key_id.clone(),
                version: statement.key.version,
            },
            statement.public_key()?,
        );
        self.public_keys
            .lock()
            .map_err(|_| KmsError::Corrupt("key cache lock poisoned".into()))?
            .insert(id.to_string(), entry.clone());
        Ok(entry)
    }

    async fn chain(&self, keys: &[KeyId]) -> Result<Vec<(KeyRef, HpkePublicKey)>, KmsError> {
        let mut chain = Vec::with_capacity(keys.len());
        for key in keys {
            chain.push(self.public_key(key).await?);
        }
        Ok(chain)
    }

    /// Writes an envelope; unless `replace`, only if no object of that name
    /// exists (a conditional put, so two writers cannot both win).
    async fn write(
        &self,
        location: &ObjectLocation,
        name: &str,
        envelope: Envelope,
        replace: bool,
    ) -> Result<(), KmsError> {
        let stored = StoredEscrow {
            format: OBJECT_FORMAT.into(),
            created: unix_now(),
            envelope,
        };
        let json =
            serde_json::to_vec_pretty(&stored).map_err(|e| KmsError::Corrupt(e.to_string()))?;
        if replace {
            return location.put(name, json).await;
        }
        if location.put_new(name, json).await? {
            Ok(())
        } else {
            Err(KmsError::AlreadyEscrowed {
                secret: stored.envelope.header.secret_id,
                location: location.to_string(),
                object: name.to_owned(),
            })
        }
    }

    /// Escrows `secret` under `id`: sealed to the chain's public keys
    /// (fetched from the KMS and verified with the pinned signing key) with
    /// kind, owner, id, key id and version bound, and written to the store
    /// (and the mirror copy to the mirror store).
    pub async fn put(
        &self,
        id: &SecretId,
        kind: SecretKind,
        secret: &[u8],
        options: &EscrowOptions,
    ) -> Result<Escrowed, KmsError> {
        if secret.len() > MAX_SECRET_LEN {
            return Err(KmsError::SecretTooLarge {
                secret: id.to_string(),
                len: secret.len(),
                max: MAX_SECRET_LEN,
            });
        }
        let name = object_name(&self.owner, id);
        if !options.replace && self.store.get(&name).await?.is_some() {
            return Err(KmsError::Malformed {
                what: format!("secret {id}"),
                reason: format!(
                    "already escrowed at {} {name}; pass --replace to overwrite it",
                    self.store
                ),
            });
        }
        let keys = if options.keys.is_empty() {
            self.default_keys("escrow")?
        } else {
            options.keys.clone()
        };
        let header = EscrowHeader {
            kind,
            owner: self.owner.clone(),
            secret_id: id.to_string(),
        };
        let envelope = escrow::seal(
            header.clone(),
            secret,
            &self.chain(&keys).await?,
            &mut OsRng,
        )?;
        let key_names = envelope.layers.iter().map(KeyRef::to_string).collect();
        let mirror_chain = match &options.mirror {
            Some(chain) => Some(chain.clone()),
            None if options.replace => self.existing_mirror_chain(id).await?,
            None => None,
        };
        let mirror_keys = match &mirror_chain {
            None => None,
            Some(mirror) => {
                let mirror = if mirror.is_empty() {
                    self.default_keys("mirror")?
                } else {
                    mirror.clone()
                };
                let copy = escrow::seal(header, secret, &self.chain(&mirror).await?, &mut OsRng)?;
                let names = copy.layers.iter().map(KeyRef::to_string).collect();
                self.write(self.mirror_store()?, &name, copy, options.replace)
                    .await?;
                Some(names)
            }
        };
        self.write(&self.store, &name, envelope, options.replace)
            .await?;
        Ok(Escrowed {
            object: name,
            keys: key_names,
            mirror_keys,
        })
    }

    /// The key chain of `id`'s mirror copy, if the mirror store holds one:
    /// replacing a secret replaces that copy too (under the same key ids,
    /// newest versions), so a later `recover --mirror` never returns the
    /// old value.
    async fn existing_mirror_chain(&self, id: &SecretId) -> Result<Option<Vec<KeyId>>, KmsError> {
        let Some(mirror) = &self.mirror else {
            return Ok(None);
        };
        if mirror.get(&object_name(&self.owner, id)).await?.is_none() {
            return Ok(None);
        }
        let stored = self.get(id, true).await?;
        let chain = stored
            .envelope
            .layers
            .iter()
            .map(|layer| layer.key_id.parse())
            .collect::<Result<Vec<KeyId>, _>>()?;
        Ok(Some(chain))
    }

    /// The ids of this participant's escrowed secrets.
    pub async fn list(&self) -> Result<Vec<SecretId>, KmsError> {
        let dir = format!("escrow/{}", self.owner);
        let mut ids = Vec::new();
        for name in self.store.list(&dir).await? {
            let file = name.rsplit('/').next().unwrap_or_default();
            if let Some(id) = file.strip_suffix(".json").and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Fetches the stored envelope of `id` (from the mirror store if
    /// `mirror`), checking that it is this participant's secret of that id.
    pub async fn get(&self, id: &SecretId, mirror: bool) -> Result<StoredEscrow, KmsError> {
        let location = if mirror {
            self.mirror_store()?
        } else {
            &self.store
        };
        let name = object_name(&self.owner, id);
        let bytes = location.get(&name).await?.ok_or_else(|| KmsError::Store {
            location: location.to_string(),
            reason: format!("{name}: no such escrowed secret"),
        })?;
        let what = format!("{location} {name}");
        let stored: StoredEscrow =
            serde_json::from_slice(&bytes).map_err(|e| KmsError::Malformed {
                what: what.clone(),
                reason: format!("line {}, column {}: {e}", e.line(), e.column()),
            })?;
        if stored.format != OBJECT_FORMAT {
            return Err(KmsError::Malformed {
                what,
                reason: format!("format {:?}, expected {OBJECT_FORMAT:?}", stored.format),
            });
        }
        let header = &stored.envelope.header;
        if header.owner != self.owner || header.secret_id != id.to_string() {
            return Err(KmsError::Malformed {
                what,
                reason: format!(
                    "holds secret {} of {}, not {id} of {}: the store's objects were swapped",
                    header.secret_id, header.owner, self.owner
                ),
            });
        }
        Ok(stored)
    }

    /// Recovers `id` through the KMS (from the mirror copy if `mirror`).
    pub async fn recover(
        &self,
        id: &SecretId,
        mirror: bool,
    ) -> Result<(SecretKind, Zeroizing<Vec<u8>>), KmsError> {
        let stored = self.get(id, mirror).await?;
        let secret = self
            .client()
            .recover(&self.signer, &stored.envelope)
            .await?;
        Ok((stored.envelope.header.kind, secret))
    }

    /// Has the KMS move `id`'s escrow (and mirror copy, if any) to the newest
    /// key versions, replacing the stored objects.
    pub async fn rewrap(&self, id: &SecretId) -> Result<Vec<String>, KmsError> {
        let mut moved = Vec::new();
        let name = object_name(&self.owner, id);
        let mut locations = vec![(&self.store, false)];
        if let Some(mirror) = &self.mirror {
            locations.push((mirror, true));
        }
        for (location, is_mirror) in locations {
            if is_mirror && location.get(&name).await?.is_none() {
                continue;
            }
            let stored = self.get(id, is_mirror).await?;
            let rewrapped = self.client().rewrap(&stored.envelope).await?;
            if rewrapped.layers != stored.envelope.layers {
                moved.extend(rewrapped.layers.iter().map(KeyRef::to_string));
                self.write(location, &name, rewrapped, true).await?;
            }
        }
        Ok(moved)
    }
}
