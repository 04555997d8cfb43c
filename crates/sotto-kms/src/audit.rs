//! The root KMS's audit log: every entry carries its sequence number, time,
//! event and the hash of the previous entry, and is hashed under a domain
//! tag, so editing, removing or reordering any entry breaks the chain from
//! that point. Events name keys, owners and secret ids, never secret
//! material.

use serde::{Deserialize, Serialize};
use sotto_crypto::hash::FieldHasher;

/// Something the root KMS did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum AuditEvent {
    /// A key pair was created.
    KeyCreated {
        /// Key id (`owner/purpose`).
        key_id: String,
        /// Version.
        version: u32,
    },
    /// A new version of a key pair was created.
    Rotated {
        /// Key id.
        key_id: String,
        /// The new version.
        version: u32,
    },
    /// A key version was retired.
    Retired {
        /// Key id.
        key_id: String,
        /// The retired version.
        version: u32,
    },
    /// A public key was handed out.
    PublicKeyHandedOut {
        /// Key id.
        key_id: String,
        /// Version.
        version: u32,
        /// To whom.
        to: String,
        /// Whether inside an ephemeral encrypted channel.
        channel: bool,
    },
    /// A reply channel was opened for a participant.
    ChannelOpened {
        /// The participant.
        participant: String,
        /// The channel's id.
        channel: String,
        /// How long the KMS keeps it, in seconds.
        ttl_secs: u64,
    },
    /// A recovery was granted.
    RecoveryGranted {
        /// The caller.
        requester: String,
        /// The secret's owner.
        owner: String,
        /// The secret.
        secret_id: String,
        /// The keys peeled, outermost last (`owner/purpose@version`).
        keys: Vec<String>,
        /// The reply channel the answer was sealed under.
        channel: String,
    },
    /// A recovery was refused.
    RecoveryRefused {
        /// The caller.
        requester: String,
        /// The owner the envelope names (empty if it did not parse).
        owner: String,
        /// The secret (empty if the envelope did not parse).
        secret_id: String,
        /// Why.
        reason: String,
    },
    /// An escrowed secret was re-sealed to newer key versions.
    Rewrapped {
        /// The caller.
        requester: String,
        /// The secret's owner.
        owner: String,
        /// The secret.
        secret_id: String,
        /// Keys before (`owner/purpose@version`).
        from: Vec<String>,
        /// Keys after.
        to: Vec<String>,
    },
    /// A rewrap was refused.
    RewrapRefused {
        /// The caller.
        requester: String,
        /// Why.
        reason: String,
    },
    /// The key bundle was sealed to the third environment.
    Sealed {
        /// Where.
        location: String,
        /// The bundle's generation.
        generation: u64,
    },
    /// The KMS was rebuilt from a sealed bundle.
    Restored {
        /// From where.
        location: String,
        /// The bundle's generation.
        generation: u64,
    },
}

/// One entry of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position, from 0.
    pub seq: u64,
    /// Unix seconds.
    pub time: u64,
    /// What happened.
    pub event: AuditEvent,
    /// Hash of the previous entry (hex; zeros for the first).
    pub prev: String,
    /// This entry's hash (hex).
    pub hash: String,
}

/// Why a log does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("audit log entry {seq}: {reason}")]
pub struct AuditError {
    /// The first entry that does not fit.
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
}

fn entry_hash(seq: u64, time: u64, event: &AuditEvent, prev: &str) -> String {
    let mut h = FieldHasher::new("sotto/kms/audit/v1");
    h.field(&seq.to_be_bytes())
        .field(&time.to_be_bytes())
        .field(serde_json::to_string(event).unwrap_or_default().as_bytes())
        .field(prev.as_bytes());
    hex::encode(h.finish())
}

/// The head of the chain, for appending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditChain {
    next_seq: u64,
    last_hash: String,
}

impl Default for AuditChain {
    fn default() -> Self {
        Self {
            next_seq: 0,
            last_hash: hex::encode([0u8; 32]),
        }
    }
}

impl AuditChain {
    /// An empty chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Continues after `last`.
    pub fn after(last: &AuditEntry) -> Self {
        Self {
            next_seq: last.seq + 1,
            last_hash: last.hash.clone(),
        }
    }

    /// Appends an event at `time`.
    pub fn append(&mut self, event: AuditEvent, time: u64) -> AuditEntry {
        let entry = AuditEntry {
            seq: self.next_seq,
            time,
            hash: entry_hash(self.next_seq, time, &event, &self.last_hash),
            prev: std::mem::take(&mut self.last_hash),
            event,
        };
        self.next_seq += 1;
        self.last_hash = entry.hash.clone();
        entry
    }
}

/// Checks a whole log; returns the number of entries.
pub fn verify(entries: &[AuditEntry]) -> Result<u64, AuditError> {
    let mut chain = AuditChain::new();
    for (i, e) in entries.iter().enumerate() {
        let fail = |reason: String| AuditError {
            seq: i as u64,
            reason,
        };
        if e.seq != i as u64 {
            return Err(fail(format!(
                "has sequence number {} (an entry was removed, inserted or reordered)",
                e.seq
            )));
        }
        if e.prev != chain.last_hash {
            return Err(fail("does not follow the previous entry's hash".into()));
        }
        if entry_hash(e.seq, e.time, &e.event, &e.prev) != e.hash {
            return Err(fail("its content does not match its hash (edited)".into()));
        }
        chain = AuditChain::after(e);
    }
    Ok(entries.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log() -> Vec<AuditEntry> {
        let mut chain = AuditChain::new();
        (0..5)
            .map(|i| {
                chain.append(
                    AuditEvent::Rotated {
                        key_id: "k".into(),
                        version: i,
                    },
                    1000 + u64::from(i),
                )
            })
            .collect()
    }

    #[test]
    fn an_intact_log_verifies_and_every_edit_removal_or_reorder_is_found() {
        let good = log();
        assert_eq!(verify(&good), Ok(5));
        let mut edited = good.clone();
        edited[2].event = AuditEvent::Rotated {
            key_id: "k".into(),
            version: 99,
        };
        assert_eq!(verify(&edited).map_err(|e| e.seq), Err(2));
        let mut retimed = good.clone();
        retimed[3].time += 1;
        assert_eq!(verify(&retimed).map_err(|e| e.seq), Err(3));
        let mut removed = good.clone();
        removed.remove(1);
        assert_eq!(verify(&removed).map_err(|e| e.seq), Err(1));
        let mut reordered = good.clone();
        reordered.swap(3, 4);
        assert_eq!(verify(&reordered).map_err(|e| e.seq), Err(3));
        let mut truncated_head = good.clone();
        truncated_head.remove(0);
        assert!(verify(&truncated_head).is_err());
        let mut chain = AuditChain::after(&good[4]);
        let mut extended = good;
        extended.push(chain.append(
            AuditEvent::Sealed {
                location: "s3://b".into(),
                generation: 1,
            },
            2000,
        ));
        assert_eq!(verify(&extended), Ok(6));
    }
}
