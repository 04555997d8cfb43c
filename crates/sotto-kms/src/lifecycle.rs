//! Creating a root KMS and rebuilding a lost one: `init` makes the signing
//! key, the password check and the first sealed bundle; `restore` opens a
//! sealed bundle with the operator password and rebuilds the database. A
//! wrong password, a missing or altered bundle, or an existing database
//! stops either before anything is written.

use std::path::Path;

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::identity::{IdentityKey, IdentityPublic};

use crate::audit::AuditEvent;
use crate::bundle::{Bundle, StoredBundle, BUNDLE_OBJECT};
use crate::db::{KmsDb, Meta, DB_FILE};
use crate::objects::ObjectLocation;
use crate::password::{self, Cost, OperatorPassword, UnsealLimits};
use crate::KmsError;

const PASSWORD_CHECK: &[u8] = b"sotto kms operator password check v1";

/// What `init` or `restore` produced.
#[derive(Debug)]
pub struct Created {
    /// The KMS signing key participants pin.
    pub signing_key: IdentityPublic,
    /// Key pair versions now held.
    pub keys: usize,
    /// Generation of the sealed bundle.
    pub generation: u64,
}

/// Checks the operator password against the one the KMS was created with.
pub fn check_password(meta: &Meta, password: &OperatorPassword) -> Result<(), KmsError> {
    password::open(
        password.expose(),
        &meta.password_check,
        UnsealLimits::default(),
    )?;
    Ok(())
}

/// What an object found where a new KMS's bundle should go is, in words.
fn describe_existing(object: &[u8]) -> String {
    match StoredBundle::parse(object) {
        Ok(StoredBundle {
            header: Some(h), ..
        }) => format!(
            "the bundle of a KMS (signing key {}, generation {})",
            h.signing_key, h.generation
        ),
        Ok(_) => "a KMS bundle (format 1)".into(),
        Err(_) => format!("an object named {BUNDLE_OBJECT}"),
    }
}

/// Refuses a home that already holds a KMS database.
pub fn refuse_existing(home: &Path) -> Result<(), KmsError> {
    let path = home.join(DB_FILE);
    if path.exists() {
        return Err(KmsError::AlreadyInitialized { path });
    }
    Ok(())
}

/// Creates a root KMS in `home`, writing its first sealed bundle to `backup`.
pub async fn init<R: RngCore + CryptoRng>(
    home: &Path,
    password: &OperatorPassword,
    backup: &ObjectLocation,
    now: u64,
    rng: &mut R,
) -> Result<Created, KmsError> {
    refuse_existing(home)?;
    let taken = |found: String| KmsError::BackupInUse {
        location: backup.to_string(),
        found,
    };
    if let Some(existing) = backup.get(BUNDLE_OBJECT).await? {
        return Err(taken(describe_existing(&existing)));
    }
    let signing = IdentityKey::generate(rng);
    let bundle = Bundle::new(1, now, &signing.to_seed(), Vec::new());
    if !backup
        .put_new(BUNDLE_OBJECT, bundle.seal(password, rng)?)
        .await?
    {
        return Err(taken(
            "a bundle written a moment ago by someone else".into(),
        ));
    }
    let meta = Meta {
        signing_seed: signing.to_seed(),
        password_check: password::seal(password.expose(), PASSWORD_CHECK, Cost::default(), rng)?,
        backup: backup.to_string(),
        generation: 1,
    };
    let sealed = AuditEvent::Sealed {
        location: backup.to_string(),
        generation: 1,
    };
    KmsDb::create(home, &meta, &[], vec![sealed], now)?;
    Ok(Created {
        signing_key: signing.public(),
        keys: 0,
        generation: 1,
    })
}

/// Rebuilds a root KMS in `home` from the sealed bundle at `from`, which
/// stays its third environment. The bundle's Argon2id costs must be within
/// `limits`.
pub async fn restore<R: RngCore + CryptoRng>(
    home: &Path,
    password: &OperatorPassword,
    from: &ObjectLocation,
    limits: UnsealLimits,
    now: u64,
    rng: &mut R,
) -> Result<Created, KmsError> {
    refuse_existing(home)?;
    let sealed = from
        .get(BUNDLE_OBJECT)
        .await?
        .ok_or_else(|| KmsError::Store {
            location: from.to_string(),
            reason: format!("no sealed bundle ({BUNDLE_OBJECT}) here"),
        })?;
    let bundle = StoredBundle::parse(&sealed)?.open(password, limits)?;
    let signing = bundle.signing_key()?;
    crate::keys::KeyRing::from_records(bundle.keys.clone())?;
    let meta = Meta {
        signing_seed: signing.to_seed(),
        password_check: password::seal(password.expose(), PASSWORD_CHECK, Cost::default(), rng)?,
        backup: from.to_string(),
        generation: bundle.generation,
    };
    let restored = AuditEvent::Restored {
        location: from.to_string(),
        generation: bundle.generation,
    };
    KmsDb::create(home, &meta, &bundle.keys, vec![restored], now)?;
    Ok(Created {
        signing_key: signing.public(),
        keys: bundle.keys.len(),
        generation: bundle.generation,
    })
}
