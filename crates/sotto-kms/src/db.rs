//! The root KMS's embedded database (redb) in its home: metadata (signing
//! key, password check, backup location, bundle generation), every key
//! pair version, and the audit log. Every change is one redb transaction;
//! a new database is built under a temporary name and renamed into place.

// redb's error type is large; it only travels on the failure path of a
// transaction body, straight into a `KmsError`.
#![allow(clippy::result_large_err)]

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use zeroize::Zeroizing;

use crate::audit::{AuditChain, AuditEntry, AuditEvent};
use crate::keys::KeyRecord;
use crate::KmsError;

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// The KMS database file in its home.
pub const DB_FILE: &str = "kms.redb";

const SIGNING_KEY: &str = "signing-key";
const PASSWORD_CHECK: &str = "password-check";
const BACKUP: &str = "backup-location";
const GENERATION: &str = "bundle-generation";

/// The KMS's metadata.
pub struct Meta {
    /// Seed of the KMS signing key.
    pub signing_seed: Zeroizing<[u8; 32]>,
    /// A value sealed under the operator password, to check it at start.
    pub password_check: Vec<u8>,
    /// The third environment (where the sealed bundle goes).
    pub backup: String,
    /// Generation of the last sealed bundle.
    pub generation: u64,
}

/// The open database.
pub struct KmsDb {
    db: Database,
    path: PathBuf,
}

fn record_key(record: &KeyRecord) -> String {
    format!("{}@{:010}", record.info.key_id, record.info.version)
}

impl KmsDb {
    fn fail(&self) -> impl Fn(String) -> KmsError + '_ {
        |reason| KmsError::Database {
            path: self.path.clone(),
            reason,
        }
    }

    /// Creates the database at `home/kms.redb` with its metadata, keys and
    /// first audit events, under a temporary name renamed into place.
    pub fn create(
        home: &Path,
        meta: &Meta,
        records: &[KeyRecord],
        events: Vec<AuditEvent>,
        now: u64,
    ) -> Result<Self, KmsError> {
        let path = home.join(DB_FILE);
        if path.exists() {
            return Err(KmsError::AlreadyInitialized { path });
        }
        let temp = home.join(format!(".{DB_FILE}.{}.tmp", std::process::id()));
        let _ = std::fs::remove_file(&temp);
        Self::build(&temp, meta, records, events, now).inspect_err(|_| {
            let _ = std::fs::remove_file(&temp);
        })?;
        std::fs::rename(&temp, &path).map_err(|e| KmsError::Database {
            path: path.clone(),
            reason: format!("rename from {}: {e}", temp.display()),
        })?;
        Self::open(home)
    }

    /// Writes a complete new database at `temp` (mode 0600: it holds the
    /// KMS's private keys).
    fn build(
        temp: &Path,
        meta: &Meta,
        records: &[KeyRecord],
        events: Vec<AuditEvent>,
        now: u64,
    ) -> Result<(), KmsError> {
        let built = Database::create(temp).map_err(|e| KmsError::Database {
            path: temp.to_owned(),
            reason: e.to_string(),
        })?;
        sotto_node::files::restrict_file(temp)?;
        let db = Self {
            db: built,
            path: temp.to_owned(),
        };
        db.write(|txn| {
            let mut table = txn.open_table(META)?;
            table.insert(SIGNING_KEY, meta.signing_seed.as_slice())?;
            table.insert(PASSWORD_CHECK, meta.password_check.as_slice())?;
            table.insert(BACKUP, meta.backup.as_bytes())?;
            table.insert(GENERATION, meta.generation.to_be_bytes().as_slice())?;
            drop(table);
            txn.open_table(AUDIT)?;
            Ok(())
        })?;
        let mut chain = AuditChain::new();
        db.commit(&mut chain, records, None, events, now)?;
        Ok(())
    }

    /// Opens `home/kms.redb`.
    pub fn open(home: &Path) -> Result<Self, KmsError> {
        let path = home.join(DB_FILE);
        if !path.exists() {
            return Err(KmsError::NotInitialized { path });
        }
        sotto_node::files::warn_if_exposed(&path);
        let db = Database::open(&path).map_err(|e| KmsError::Database {
            path: path.clone(),
            reason: format!("{e} (is `sotto kms serve` running on this home?)"),
        })?;
        Ok(Self { db, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write(
        &self,
        body: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), KmsError> {
        let fail = self.fail();
        let txn = self.db.begin_write().map_err(|e| fail(e.to_string()))?;
        body(&txn).map_err(|e| fail(e.to_string()))?;
        txn.commit().map_err(|e| fail(e.to_string()))
    }

    /// The metadata.
    pub fn meta(&self) -> Result<Meta, KmsError> {
        let fail = self.fail();
        let txn = self.db.begin_read().map_err(|e| fail(e.to_string()))?;
        let table = txn.open_table(META).map_err(|e| fail(e.to_string()))?;
        let get = |key: &str| -> Result<Vec<u8>, KmsError> {
            table
                .get(key)
                .map_err(|e| fail(e.to_string()))?
                .map(|v| v.value().to_vec())
                .ok_or_else(|| KmsError::Corrupt(format!("{}: no {key}", self.path.display())))
        };
        let seed = Zeroizing::new(get(SIGNING_KEY)?);
        let generation = get(GENERATION)?;
        Ok(Meta {
            signing_seed: Zeroizing::new(
                seed.as_slice()
                    .try_into()
                    .map_err(|_| KmsError::Corrupt("signing key is not 32 bytes".into()))?,
            ),
            password_check: get(PASSWORD_CHECK)?,
            backup: String::from_utf8_lossy(&get(BACKUP)?).into_owned(),
            generation: u64::from_be_bytes(
                generation
                    .as_slice()
                    .try_into()
                    .map_err(|_| KmsError::Corrupt("bundle generation is not 8 bytes".into()))?,
            ),
        })
    }

    /// Every key pair version.
    pub fn records(&self) -> Result<Vec<KeyRecord>, KmsError> {
        let fail = self.fail();
        let txn = self.db.begin_read().map_err(|e| fail(e.to_string()))?;
        let table = match txn.open_table(KEYS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(fail(e.to_string())),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| fail(e.to_string()))? {
            let (key, value) = row.map_err(|e| fail(e.to_string()))?;
            out.push(
                serde_json::from_slice(value.value())
                    .map_err(|e| KmsError::Corrupt(format!("key record {}: {e}", key.value())))?,
            );
        }
        Ok(out)
    }

    /// The audit log, oldest first.
    pub fn audit_entries(&self) -> Result<Vec<AuditEntry>, KmsError> {
        let fail = self.fail();
        let txn = self.db.begin_read().map_err(|e| fail(e.to_string()))?;
        let table = txn.open_table(AUDIT).map_err(|e| fail(e.to_string()))?;
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| fail(e.to_string()))? {
            let (seq, value) = row.map_err(|e| fail(e.to_string()))?;
            out.push(
                serde_json::from_slice(value.value())
                    .map_err(|e| KmsError::Corrupt(format!("audit entry {}: {e}", seq.value())))?,
            );
        }
        Ok(out)
    }

    /// Where the audit chain continues.
    pub fn audit_chain(&self) -> Result<AuditChain, KmsError> {
        let fail = self.fail();
        let txn = self.db.begin_read().map_err(|e| fail(e.to_string()))?;
        let table = txn.open_table(AUDIT).map_err(|e| fail(e.to_string()))?;
        let last = table.last().map_err(|e| fail(e.to_string()))?;
        match last {
            None => Ok(AuditChain::new()),
            Some((seq, value)) => {
                let entry: AuditEntry = serde_json::from_slice(value.value())
                    .map_err(|e| KmsError::Corrupt(format!("audit entry {}: {e}", seq.value())))?;
                Ok(AuditChain::after(&entry))
            }
        }
    }

    /// Writes key records, the bundle generation and audit events in one
    /// transaction. `chain` advances only if the transaction commits.
    pub fn commit(
        &self,
        chain: &mut AuditChain,
        records: &[KeyRecord],
        generation: Option<u64>,
        events: Vec<AuditEvent>,
        now: u64,
    ) -> Result<Vec<AuditEntry>, KmsError> {
        let mut next = chain.clone();
        let entries: Vec<AuditEntry> = events.into_iter().map(|e| next.append(e, now)).collect();
        self.write(|txn| {
            let mut keys = txn.open_table(KEYS)?;
            for record in records {
                let json = Zeroizing::new(serde_json::to_vec(record).unwrap_or_default());
                keys.insert(record_key(record).as_str(), json.as_slice())?;
            }
            drop(keys);
            if let Some(generation) = generation {
                txn.open_table(META)?
                    .insert(GENERATION, generation.to_be_bytes().as_slice())?;
            }
            let mut audit = txn.open_table(AUDIT)?;
            for entry in &entries {
                let json = serde_json::to_vec(entry).unwrap_or_default();
                audit.insert(entry.seq, json.as_slice())?;
            }
            Ok(())
        })?;
        *chain = next;
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify;

    fn meta() -> Meta {
        Meta {
            signing_seed: Zeroizing::new([7u8; 32]),
            password_check: vec![1, 2, 3],
            backup: "/tmp/third".into(),
            generation: 1,
        }
    }

    fn event(n: u32) -> AuditEvent {
        AuditEvent::Retired {
            key_id: "bank-a/escrow".into(),
            version: n,
        }
    }

    #[test]
    fn state_round_trips_and_a_tampered_audit_table_is_caught() {
        let dir = tempfile::tempdir().expect("tmp");
        let db = KmsDb::create(dir.path(), &meta(), &[], vec![event(0)], 10).expect("create");
        assert!(matches!(
            KmsDb::create(dir.path(), &meta(), &[], vec![], 10),
            Err(KmsError::AlreadyInitialized { .. })
        ));
        let mut chain = db.audit_chain().expect("chain");
        db.commit(
            &mut chain,
            &[],
            Some(2),
            vec![event(1), event(2), event(3)],
            11,
        )
        .expect("commit");
        assert_eq!(db.meta().expect("meta").generation, 2);
        let entries = db.audit_entries().expect("entries");
        assert_eq!(verify(&entries), Ok(4));
        assert_eq!(db.audit_chain().expect("chain"), chain);

        let mut edited = entries[2].clone();
        edited.event = event(99);
        let write = |seq: u64, bytes: Option<Vec<u8>>| {
            let txn = db.db.begin_write().expect("txn");
            {
                let mut table = txn.open_table(AUDIT).expect("table");
                match bytes {
                    Some(b) => drop(table.insert(seq, b.as_slice()).expect("insert")),
                    None => drop(table.remove(seq).expect("remove")),
                }
            }
            txn.commit().expect("commit");
        };
        write(2, Some(serde_json::to_vec(&edited).expect("json")));
        let found = verify(&db.audit_entries().expect("entries")).expect_err("edit");
        assert_eq!(found.seq, 2);
        write(2, Some(serde_json::to_vec(&entries[2]).expect("json")));
        write(1, None);
        let found = verify(&db.audit_entries().expect("entries")).expect_err("removal");
        assert_eq!(found.seq, 1);
    }
}
