//! A provider's memory of the sessions it accepted, so that a hello replayed
//! by a relay (or an `accept` run twice) is refused instead of starting a
//! second session under the same id.
//!
//! One marker file per session id in `HOME/sessions/accepted/`, created
//! exclusively (two accepts of one hello cannot both pass, even from two
//! processes) and synced before the accept leaves. A marker is kept for
//! [`RETENTION`] after the hello's time; the engine refuses any hello older
//! than [`HELLO_LIFETIME`], which is shorter, so an expired marker can never
//! be needed again. Expired markers are removed whenever one is recorded.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::PathBuf;

use sotto_crypto::ids::SessionId;
use sotto_node::{NodeError, NodeHome};

use crate::engine::{CLOCK_SKEW, HELLO_LIFETIME};
use crate::error::Replayed;

/// How long an accepted session id is remembered after its hello was
/// written: the hello lifetime (7 days), the allowed clock skew, and a day
/// of margin.
pub const RETENTION: u64 = HELLO_LIFETIME + CLOCK_SKEW + 24 * 3600;

/// The accepted-sessions directory of one node home.
pub struct AcceptedSessions {
    dir: PathBuf,
}

/// Why a session could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// The session was accepted before.
    #[error(transparent)]
    Replayed(#[from] Replayed),
    /// The marker could not be written.
    #[error(transparent)]
    Node(#[from] NodeError),
}

impl AcceptedSessions {
    /// The directory in `home` (created, mode 0700).
    pub fn open(home: &NodeHome) -> Result<Self, NodeError> {
        let dir = home.sessions_dir().join("accepted");
        sotto_node::files::create_private_dir(&dir)?;
        Ok(Self { dir })
    }

    fn marker(&self, sid: &SessionId) -> PathBuf {
        self.dir.join(sid.to_string())
    }

    /// Records `sid` (whose hello was written at `created`) as accepted at
    /// `now`; refuses a session recorded before.
    pub fn record(&self, sid: &SessionId, created: u64, now: u64) -> Result<(), RecordError> {
        self.prune(now);
        let path = self.marker(sid);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = match options.open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                let accepted_at = read_marker(&path).map_or(0, |(_, at)| at);
                return Err(Replayed {
                    sid: *sid,
                    accepted_at,
                }
                .into());
            }
            Err(e) => return Err(NodeError::io(&path, "create", e).into()),
        };
        file.write_all(format!("{created} {now}\n").as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| NodeError::io(&path, "write", e))?;
        if let Ok(dir) = fs::File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Forgets `sid` again: for an accept whose outputs could not be written,
    /// so that the same hello can be accepted when the step is re-run.
    pub fn forget(&self, sid: &SessionId) {
        let _ = fs::remove_file(self.marker(sid));
    }

    /// Removes markers whose hello is older than [`RETENTION`].
    fn prune(&self, now: u64) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let oldest = now.saturating_sub(RETENTION);
        for entry in entries.flatten() {
            let path = entry.path();
            if read_marker(&path).is_some_and(|(created, _)| created < oldest) {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

/// A marker's hello time and acceptance time.
fn read_marker(path: &std::path::Path) -> Option<(u64, u64)> {
    let text = fs::read_to_string(path).ok()?;
    let mut words = text.split_whitespace().map(str::parse::<u64>);
    Some((words.next()?.ok()?, words.next()?.ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::OsRng;

    #[test]
    fn a_session_is_accepted_once_and_forgotten_after_the_retention() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home =
            NodeHome::init(dir.path(), "b".parse().expect("name"), 2, &mut OsRng).expect("home");
        let accepted = AcceptedSessions::open(&home).expect("open");
        let sid = SessionId::random(&mut OsRng);
        let now = 1_000_000_000;
        accepted.record(&sid, now - 5, now).expect("first time");
        match accepted.record(&sid, now - 5, now + 1) {
            Err(RecordError::Replayed(r)) => assert_eq!((r.sid, r.accepted_at), (sid, now)),
            other => panic!("expected a replay, got {other:?}"),
        }
        let other = SessionId::random(&mut OsRng);
        accepted
            .record(&other, now + RETENTION, now + RETENTION + 1)
            .expect("another session, much later");
        accepted
            .record(&sid, now - 5, now + RETENTION + 2)
            .expect("the old marker was pruned");
    }
}
