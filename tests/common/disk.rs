//! Disk faults made on purpose: a read-only mount over a directory of a disk cache.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A read-only mount of an empty directory over `dir`, unmounted when dropped: new files
/// cannot be made there. (Root ignores file modes, so `chmod` would not do.)
pub struct ReadOnlyOver {
    dir: PathBuf,
    /// The empty directory mounted, removed after the unmount.
    _source: tempfile::TempDir,
}

impl ReadOnlyOver {
    pub fn mount(dir: &Path) -> ReadOnlyOver {
        let empty = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let done = Command::new("mount").args(args).arg(dir).status().unwrap();
            assert!(done.success(), "mount {args:?} {}", dir.display());
        };
        let source = empty.path().to_str().unwrap().to_owned();
        run(&["--bind", &source]);
        run(&["-o", "remount,bind,ro"]);
        ReadOnlyOver {
            dir: dir.to_owned(),
            _source: empty,
        }
    }
}

impl Drop for ReadOnlyOver {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}
