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
/// it into place. Dropped without commit, the temporary file is removed.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Starts writing `target`.
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
            .map_err(|e| NodeError::io(&temp, "create temporary file", e))?;
        Ok(Self {
            target: target.to_owned(),
            temp,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    /// The writer for the file's contents.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        match self.writer.as_mut() {
            Some(w) => w,
            None => unreachable!("writer is present until commit"),
        }
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(mut self) -> Result<(), NodeError> {
        let Some(writer) = self.writer.take() else {
            unreachable!("commit consumes the file once")
        };
        let file = writer
            .into_inner()
            .map_err(|e| NodeError::io(&self.temp, "flush", e.into_error()))?;
        file.sync_all()
            .map_err(|e| NodeError::io(&self.temp, "sync", e))?;
        fs::rename(&self.temp, &self.target)
            .map_err(|e| NodeError::io(&self.target, "rename into place", e))?;
        if let Some(dir) = self.target.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = fs::remove_file(&self.temp);
        }
    }
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
