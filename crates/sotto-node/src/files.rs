//! Atomic file writes: data goes to a temporary name in the same directory,
//! is synced, and is renamed over the target, so a reader never sees a
//! half-written file. Private files are created with mode 0600.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::NodeError;

/// Who may read a file that is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Mode 0600: keys and session state.
    Private,
    /// Mode 0644: profiles, reports, outputs.
    Public,
}

/// A file being written under a temporary name; [`AtomicFile::commit`] renames
/// it into place. Dropped without commit, or after a failed commit, the
/// temporary file is removed: a failing step leaves nothing behind.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    writer: BufWriter<File>,
    placed: bool,
}

impl AtomicFile {
    /// Starts writing `target`. The temporary file goes in the target's
    /// directory, so a directory that does not exist or cannot be written
    /// fails here, before anything is renamed.
    pub fn create(target: &Path, visibility: Visibility) -> Result<Self, NodeError> {
        let dir = target
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file_name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".to_owned());
        let temp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        set_mode(&mut options, visibility);
        let _ = fs::remove_file(&temp);
        let file = options
            .open(&temp)
            .map_err(|e| NodeError::io(target, "create (temporary file in its directory)", e))?;
        Ok(Self {
            target: target.to_owned(),
            temp,
            writer: BufWriter::with_capacity(1 << 20, file),
            placed: false,
        })
    }

    /// The writer for the file's contents.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        &mut self.writer
    }

    /// The file's final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes and syncs the temporary file; nothing is visible yet.
    fn prepare(&mut self) -> Result<(), NodeError> {
        self.writer
            .flush()
            .map_err(|e| NodeError::io(&self.target, "write", e))?;
        self.writer
            .get_ref()
            .sync_all()
            .map_err(|e| NodeError::io(&self.target, "sync", e))
    }

    /// Renames the prepared file into place.
    fn place(&mut self) -> Result<(), NodeError> {
        fs::rename(&self.temp, &self.target)
            .map_err(|e| NodeError::io(&self.target, "rename into place", e))?;
        self.placed = true;
        if let Some(dir) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(mut self) -> Result<(), NodeError> {
        self.prepare()?;
        self.place()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Commits several files as one step: every file is written and synced
/// under its temporary name first, and only when all of them are complete
/// are they renamed into place. If any fails before that, none is placed
/// and every temporary file is removed.
pub fn commit_all(files: Vec<AtomicFile>) -> Result<(), NodeError> {
    let mut files = files;
    for file in &mut files {
        file.prepare()?;
    }
    for file in &mut files {
        file.place()?;
    }
    Ok(())
}

/// Writes `bytes` to `target` atomically.
pub fn write_atomic(target: &Path, bytes: &[u8], visibility: Visibility) -> Result<(), NodeError> {
    let mut file = AtomicFile::create(target, visibility)?;
    file.writer()
        .write_all(bytes)
        .map_err(|e| NodeError::io(target, "write", e))?;
    file.commit()
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, NodeError> {
    fs::read(path).map_err(|e| NodeError::io(path, "read", e))
}

/// Logs a warning when a file that holds private keys can be read by the
/// group or by others, naming the file and the fix.
pub fn warn_if_exposed(path: &Path) {
    if let Some(mode) = exposed_mode(path) {
        tracing::warn!(
            "{} holds private keys but is readable by others (mode {mode:03o}); restrict it with `chmod 600 {}`",
            path.display(),
            path.display()
        );
    }
}

/// The permission bits of `path` if the group or others may read or write it.
#[cfg(unix)]
pub fn exposed_mode(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// The permission bits of `path` if the group or others may read or write it.
#[cfg(not(unix))]
pub fn exposed_mode(_path: &Path) -> Option<u32> {
    None
}

/// Creates `dir` (and its parents) and restricts it to its owner (0700).
pub fn create_private_dir(dir: &Path) -> Result<(), NodeError> {
    fs::create_dir_all(dir).map_err(|e| NodeError::io(dir, "create directory", e))?;
    restrict(dir, 0o700)
}

/// Restricts an existing file to its owner (0600): for files that a library
/// creates without taking a mode, such as redb databases.
pub fn restrict_file(path: &Path) -> Result<(), NodeError> {
    restrict(path, 0o600)
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> Result<(), NodeError> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| NodeError::io(path, "restrict permissions", e))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> Result<(), NodeError> {
    Ok(())
}

#[cfg(unix)]
fn set_mode(options: &mut OpenOptions, visibility: Visibility) {
    use std::os::unix::fs::OpenOptionsExt;
    options.mode(match visibility {
        Visibility::Private => 0o600,
        Visibility::Public => 0o644,
    });
}

#[cfg(not(unix))]
fn set_mode(_options: &mut OpenOptions, _visibility: Visibility) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("out.csv");
        {
            let mut f = AtomicFile::create(&target, Visibility::Public).expect("create");
            f.writer().write_all(b"half").expect("write");
        }
        assert!(!target.exists());
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0);
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("taken");
        fs::create_dir(&target).expect("mkdir");
        fs::write(target.join("inside"), b"x").expect("write");
        let mut f = AtomicFile::create(&target, Visibility::Public).expect("create");
        f.writer().write_all(b"rows").expect("write");
        assert!(f.commit().is_err());
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("taken")]);
    }

    #[test]
    fn commit_all_places_nothing_when_one_file_cannot_be_started() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = dir.path().join("out.csv");
        let mut first = AtomicFile::create(&good, Visibility::Private).expect("create");
        first.writer().write_all(b"rows").expect("write");
        let bad = dir.path().join("missing").join("report.json");
        assert!(AtomicFile::create(&bad, Visibility::Public).is_err());
        drop(first);
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 0);
        let mut a = AtomicFile::create(&good, Visibility::Private).expect("create");
        a.writer().write_all(b"rows").expect("write");
        let mut b =
            AtomicFile::create(&dir.path().join("r.json"), Visibility::Public).expect("create");
        b.writer().write_all(b"{}").expect("write");
        commit_all(vec![a, b]).expect("commit");
        assert_eq!(read(&good).expect("read"), b"rows");
        assert_eq!(fs::read_dir(dir.path()).expect("list").count(), 2);
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("key");
        write_atomic(&target, b"secret", Visibility::Private).expect("write");
        let mode = fs::metadata(&target).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(read(&target).expect("read"), b"secret");
    }
}
