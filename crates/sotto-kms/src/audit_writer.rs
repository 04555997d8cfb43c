//! The one writer of the KMS database while it serves: a thread that takes
//! audit events (and key changes) from every request, appends them to the
//! hash chain and commits whatever has queued up in one redb transaction
//! (group commit), then tells each request its entry is durable.

use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::audit::{AuditChain, AuditEvent};
use crate::db::KmsDb;
use crate::keys::KeyRecord;
use crate::KmsError;
use sotto_node::clock::unix_now;

const MAX_GROUP: usize = 4096;

struct Job {
    records: Vec<KeyRecord>,
    generation: Option<u64>,
    events: Vec<AuditEvent>,
    done: oneshot::Sender<Result<(), String>>,
}

/// A handle to the writer thread.
#[derive(Clone)]
pub struct AuditWriter {
    jobs: mpsc::Sender<Job>,
}

/// The writer thread itself; it ends, closing its hold on the database,
/// once every [`AuditWriter`] handle is dropped.
pub struct WriterThread(std::thread::JoinHandle<()>);

impl WriterThread {
    /// Waits until the thread has ended.
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("the audit writer thread panicked");
        }
    }
}

impl AuditWriter {
    /// Starts the writer over `db`, continuing `chain`.
    pub fn start(db: Arc<KmsDb>, chain: AuditChain) -> (Self, WriterThread) {
        let (jobs, queue) = mpsc::channel::<Job>();
        let thread = std::thread::spawn(move || run(&db, chain, &queue));
        (Self { jobs }, WriterThread(thread))
    }

    /// Appends `events` (with key `records` and the bundle `generation`, if
    /// any) and returns once they are committed.
    pub async fn write(
        &self,
        records: Vec<KeyRecord>,
        generation: Option<u64>,
        events: Vec<AuditEvent>,
    ) -> Result<(), KmsError> {
        let (done, wait) = oneshot::channel();
        let job = Job {
            records,
            generation,
            events,
            done,
        };
        let stopped = || KmsError::Corrupt("the audit writer stopped".into());
        self.jobs.send(job).map_err(|_| stopped())?;
        wait.await
            .map_err(|_| stopped())?
            .map_err(KmsError::Corrupt)
    }

    /// Appends one audit event and returns once it is committed.
    pub async fn audit(&self, event: AuditEvent) -> Result<(), KmsError> {
        self.write(Vec::new(), None, vec![event]).await
    }
}

fn run(db: &KmsDb, mut chain: AuditChain, queue: &mpsc::Receiver<Job>) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut records = Vec::new();
        let mut events = Vec::new();
        let mut generation = None;
        for job in &mut group {
            records.append(&mut job.records);
            events.append(&mut job.events);
            generation = generation.max(job.generation);
        }
        let result = db
            .commit(&mut chain, &records, generation, events, unix_now())
            .map(|_| ())
            .map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!("audit commit failed: {e}");
        }
        for job in group {
            let _ = job.done.send(result.clone());
        }
    }
}
