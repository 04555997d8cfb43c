//! Where a command may write. Every output flag goes through
//! [`OutputRules::check`] before any work is done, so that a mistyped path
//! is refused up front instead of destroying something:
//!
//! - an output may not be one of the same command's inputs (the CSV being
//!   matched, a job file, a query), compared by resolved path and, where
//!   both exist, by device and inode (hard links, `./x` against `x`);
//! - an output may not lie inside a node home or a CA directory, whose key
//!   files it could replace (`identity export --out HOME/identity.key`);
//! - an existing file is replaced only when the user passed `--force`;
//! - the directory an output goes into must already exist: a command never
//!   creates a location the user may have mistyped.
//!
//! Writing itself stays with [`crate::files`]: temporary name, sync, rename.

use std::path::{Path, PathBuf};

use crate::NodeError;

/// Files whose presence marks a directory whose contents no output may
/// replace: a node home (`node.toml`) and a consortium CA (`ca.key`).
const PROTECTED_MARKERS: [&str; 2] = ["node.toml", "ca.key"];

/// What one command's outputs are checked against.
#[derive(Clone, Debug, Default)]
pub struct OutputRules {
    force: bool,
    inputs: Vec<PathBuf>,
}

impl OutputRules {
    /// Rules for a command; `force` lets existing files be replaced.
    pub fn new(force: bool) -> Self {
        Self {
            force,
            inputs: Vec::new(),
        }
    }

    /// Records one of the command's inputs, which no output may be.
    pub fn with_input(mut self, path: impl AsRef<Path>) -> Self {
        self.inputs.push(path.as_ref().to_owned());
        self
    }

    /// Records several inputs.
    pub fn with_inputs<P: AsRef<Path>>(mut self, paths: impl IntoIterator<Item = P>) -> Self {
        self.inputs
            .extend(paths.into_iter().map(|p| p.as_ref().to_owned()));
        self
    }

    /// Whether existing files may be replaced.
    pub fn force(&self) -> bool {
        self.force
    }

    /// Checks one output file.
    pub fn check(&self, output: &Path) -> Result<(), NodeError> {
        let resolved = resolve(output)?;
        if output.is_dir() {
            return Err(NodeError::OutputIsDirectory {
                path: output.to_owned(),
            });
        }
        for input in &self.inputs {
            if same_file(&resolved, output, input) {
                return Err(NodeError::OutputIsInput {
                    output: output.to_owned(),
                    input: input.clone(),
                });
            }
        }
        if let Some(dir) = resolved.parent().and_then(protected_ancestor) {
            return Err(NodeError::OutputInProtectedDir {
                output: output.to_owned(),
                dir,
            });
        }
        if !self.force && output.symlink_metadata().is_ok() {
            return Err(NodeError::OutputExists {
                path: output.to_owned(),
            });
        }
        Ok(())
    }

    /// Checks every output of one command, and that no two are the same file.
    pub fn check_all(&self, outputs: &[&Path]) -> Result<(), NodeError> {
        for (i, output) in outputs.iter().enumerate() {
            self.check(output)?;
            let resolved = resolve(output)?;
            if let Some(other) = outputs[..i]
                .iter()
                .find(|o| resolve(o).ok() == Some(resolved.clone()))
            {
                return Err(NodeError::OutputsCollide {
                    first: (*other).to_owned(),
                    second: (*output).to_owned(),
                });
            }
        }
        Ok(())
    }

    /// Checks a directory that a command fills with new files of its own
    /// naming: it must exist, and must not be or lie inside a node home or
    /// a CA directory.
    pub fn check_dir(&self, dir: &Path) -> Result<(), NodeError> {
        if !dir.is_dir() {
            return Err(NodeError::OutputDirMissing {
                output: dir.to_owned(),
                dir: dir.to_owned(),
            });
        }
        let resolved = dir
            .canonicalize()
            .map_err(|e| NodeError::io(dir, "resolve", e))?;
        if let Some(protected) = protected_ancestor(&resolved) {
            return Err(NodeError::OutputInProtectedDir {
                output: dir.to_owned(),
                dir: protected,
            });
        }
        Ok(())
    }
}

/// Refuses a directory a command is about to create (a CA, a node home)
/// inside an existing node home or CA directory.
pub fn check_new_dir(dir: &Path) -> Result<(), NodeError> {
    let existing = dir
        .ancestors()
        .find(|d| d.is_dir())
        .unwrap_or(Path::new("."));
    let resolved = existing
        .canonicalize()
        .map_err(|e| NodeError::io(existing, "resolve", e))?;
    match protected_ancestor(&resolved) {
        Some(protected) => Err(NodeError::OutputInProtectedDir {
            output: dir.to_owned(),
            dir: protected,
        }),
        None => Ok(()),
    }
}

/// The absolute, symlink-free path `output` would have: its directory must
/// exist (it is resolved), the file need not.
fn resolve(output: &Path) -> Result<PathBuf, NodeError> {
    let name = output
        .file_name()
        .ok_or_else(|| NodeError::OutputIsDirectory {
            path: output.to_owned(),
        })?;
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !dir.is_dir() {
        return Err(NodeError::OutputDirMissing {
            output: output.to_owned(),
            dir: dir.to_owned(),
        });
    }
    let dir = dir
        .canonicalize()
        .map_err(|e| NodeError::io(dir, "resolve", e))?;
    Ok(match output.canonicalize() {
        Ok(existing) => existing,
        Err(_) => dir.join(name),
    })
}

fn same_file(resolved: &Path, output: &Path, input: &Path) -> bool {
    if input.canonicalize().is_ok_and(|i| i == resolved) {
        return true;
    }
    same_inode(output, input)
}

#[cfg(unix)]
fn same_inode(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_inode(_a: &Path, _b: &Path) -> bool {
    false
}

/// The nearest directory at or above `dir` that is a node home or a CA.
fn protected_ancestor(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| PROTECTED_MARKERS.iter().any(|m| d.join(m).is_file()))
        .map(Path::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        std::fs::write(path, b"x").expect("write");
    }

    #[test]
    fn an_output_that_is_an_input_is_refused_by_any_spelling() {
        let dir = tempfile::tempdir().expect("tempdir");
        let input = dir.path().join("customers.csv");
        touch(&input);
        let rules = OutputRules::new(true).with_input(&input);
        let dotted = dir.path().join(".").join("customers.csv");
        assert!(matches!(
            rules.check(&dotted),
            Err(NodeError::OutputIsInput { .. })
        ));
        let link = dir.path().join("hard-link.csv");
        std::fs::hard_link(&input, &link).expect("link");
        assert!(matches!(
            rules.check(&link),
            Err(NodeError::OutputIsInput { .. })
        ));
    }

    #[test]
    fn outputs_inside_a_home_or_ca_are_refused_even_with_force() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join("peers")).expect("mkdir");
        touch(&home.join("node.toml"));
        let rules = OutputRules::new(true);
        for target in [
            home.join("identity.key"),
            home.join("peers").join("new.json"),
        ] {
            assert!(matches!(
                rules.check(&target),
                Err(NodeError::OutputInProtectedDir { .. })
            ));
        }
        let ca = dir.path().join("ca");
        std::fs::create_dir_all(&ca).expect("mkdir");
        touch(&ca.join("ca.key"));
        assert!(matches!(
            rules.check(&ca.join("ca.pem")),
            Err(NodeError::OutputInProtectedDir { .. })
        ));
        assert!(matches!(
            rules.check_dir(&home),
            Err(NodeError::OutputInProtectedDir { .. })
        ));
    }

    #[test]
    fn existing_files_need_force_and_missing_directories_are_not_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out.csv");
        touch(&out);
        assert!(matches!(
            OutputRules::new(false).check(&out),
            Err(NodeError::OutputExists { .. })
        ));
        OutputRules::new(true).check(&out).expect("force replaces");
        let missing = dir.path().join("no-such-dir").join("out.csv");
        assert!(matches!(
            OutputRules::new(true).check(&missing),
            Err(NodeError::OutputDirMissing { .. })
        ));
        assert!(!dir.path().join("no-such-dir").exists());
        assert!(matches!(
            OutputRules::new(true).check(dir.path()),
            Err(NodeError::OutputIsDirectory { .. })
        ));
    }

    #[test]
    fn two_outputs_of_one_command_must_differ() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.json");
        let b = dir.path().join(".").join("a.json");
        assert!(matches!(
            OutputRules::new(false).check_all(&[&a, &b]),
            Err(NodeError::OutputsCollide { .. })
        ));
        OutputRules::new(false)
            .check_all(&[&a, &dir.path().join("b.json")])
            .expect("distinct outputs");
    }
}
