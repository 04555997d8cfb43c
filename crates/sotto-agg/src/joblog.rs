//! The coordinator's job log: one record per attempt in an embedded redb
//! database in the node home, written when the attempt starts and again when
//! it ends, so a restarted coordinator can report what happened.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("jobs");
/// File name of the log in the node home.
pub const LOG_FILE: &str = "agg-jobs.redb";

/// An error of the job log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The database could not be opened, read or written.
    #[error("job log {path}: {reason}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        reason: String,
    },
    /// A record could not be decoded.
    #[error("job log {path}: record {key}: {reason}")]
    Record {
        /// The database file.
        path: PathBuf,
        /// The record's key.
        key: String,
        /// Why.
        reason: String,
    },
}

/// How an attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Started; no end recorded (still running, or the coordinator stopped).
    Running,
    /// Every share arrived and the result was sent.
    Completed,
    /// Aborted; `error` says why.
    Aborted,
}

/// One attempt of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The attempt's job id (hex).
    pub job_id: String,
    /// The job's name.
    pub name: String,
    /// Attempt number.
    pub attempt: u32,
    /// Participating clients.
    pub clients: Vec<String>,
    /// The lead.
    pub lead: String,
    /// Query ids.
    pub rows: u64,
    /// When it started (RFC 3339).
    pub started: String,
    /// When it ended (RFC 3339).
    pub finished: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why it was aborted.
    pub error: Option<String>,
    /// Transcript hash of a completed attempt (hex).
    pub transcript: Option<String>,
}

/// The job log database.
pub struct JobLog {
    db: Database,
    path: PathBuf,
}

impl JobLog {
    /// Opens (or creates) the log at `path`.
    pub fn open(path: &Path) -> Result<Self, LogError> {
        let db = Database::create(path).map_err(|e| LogError::Database {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            db,
            path: path.to_owned(),
        })
    }

    fn db_error(&self, e: impl Into<redb::Error>) -> LogError {
        LogError::Database {
            path: self.path.clone(),
            reason: e.into().to_string(),
        }
    }

    /// Writes (or replaces) the record of an attempt in one transaction.
    pub fn put(&self, record: &JobRecord) -> Result<(), LogError> {
        let bytes = serde_json::to_vec(record).map_err(|e| LogError::Record {
            path: self.path.clone(),
            key: record.job_id.clone(),
            reason: e.to_string(),
        })?;
        let txn = self.db.begin_write().map_err(|e| self.db_error(e))?;
        {
            let mut table = txn.open_table(JOBS).map_err(|e| self.db_error(e))?;
            table
                .insert(record.job_id.as_str(), bytes.as_slice())
                .map_err(|e| self.db_error(e))?;
        }
        txn.commit().map_err(|e| self.db_error(e))
    }

    /// Every recorded attempt, oldest first.
    pub fn list(&self) -> Result<Vec<JobRecord>, LogError> {
        let txn = self.db.begin_read().map_err(|e| self.db_error(e))?;
        let table = match txn.open_table(JOBS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.db_error(e)),
        };
        let mut records = Vec::new();
        for entry in table.iter().map_err(|e| self.db_error(e))? {
            let (key, value) = entry.map_err(|e| self.db_error(e))?;
            let record: JobRecord =
                serde_json::from_slice(value.value()).map_err(|e| LogError::Record {
                    path: self.path.clone(),
                    key: key.value().to_owned(),
                    reason: e.to_string(),
                })?;
            records.push(record);
        }
        records.sort_by(|a, b| a.started.cmp(&b.started).then(a.attempt.cmp(&b.attempt)));
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, attempt: u32) -> JobRecord {
        JobRecord {
            job_id: id.into(),
            name: "j".into(),
            attempt,
            clients: vec!["a".into(), "b".into()],
            lead: "a".into(),
            rows: 3,
            started: format!("2026-11-21T10:00:0{attempt}Z"),
            finished: None,
            outcome: Outcome::Running,
            error: None,
            transcript: None,
        }
    }

    #[test]
    fn records_survive_reopening_and_updates_replace() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(LOG_FILE);
        {
            let log = JobLog::open(&path).expect("open");
            assert!(log.list().expect("list").is_empty());
            log.put(&record("b", 2)).expect("put");
            log.put(&record("a", 1)).expect("put");
            let mut done = record("a", 1);
            done.outcome = Outcome::Completed;
            log.put(&done).expect("update");
        }
        let log = JobLog::open(&path).expect("reopen");
        let all = log.list().expect("list");
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].job_id, "a");
        assert_eq!(all[0].outcome, Outcome::Completed);
        assert_eq!(all[1].outcome, Outcome::Running);
    }
}
