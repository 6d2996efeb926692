//! Who may read Canopy's files: only the account it runs as. The database holds password
//! hashes and sessions, the access log every client's URLs, so other local users get
//! nothing. Modes are set whatever the umask, and files an older Canopy left open to others
//! are tightened, and logged, by whichever process opens them first.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The data dir: database, control socket and, by default, the access log.
pub const DATA_DIR_MODE: u32 = 0o700;
/// The database, and its `-wal` and `-shm` files (SQLite gives those the database's mode).
pub const DATABASE_MODE: u32 = 0o600;
/// Logs: the admin's group may read them, as with Squid's.
pub const LOG_MODE: u32 = 0o640;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the mode of {path}: {source}")]
    Mode {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("setting {path} to mode {mode:04o}: {source}")]
    SetMode {
        path: PathBuf,
        mode: u32,
        #[source]
        source: io::Error,
    },
    #[error(
        "{path} has mode {was:04o}, open to other users, and cannot be set to {wanted:04o}: {source}"
    )]
    Tighten {
        path: PathBuf,
        was: u32,
        wanted: u32,
        #[source]
        source: io::Error,
    },
}

/// Creates the data dir with [`DATA_DIR_MODE`] (its parents as usual), or tightens the one
/// that is there.
pub fn data_dir(path: &Path) -> Result<(), FileError> {
    let create = |source| FileError::Create {
        path: path.to_owned(),
        source,
    };
    if path.exists() {
        return tighten(path, DATA_DIR_MODE);
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(create)?;
    }
    match DirBuilder::new().mode(DATA_DIR_MODE).create(path) {
        // Another process made it meanwhile.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => tighten(path, DATA_DIR_MODE),
        Err(e) => Err(create(e)),
        Ok(()) => std::fs::set_permissions(path, Permissions::from_mode(DATA_DIR_MODE)).map_err(
            |source| FileError::SetMode {
                path: path.to_owned(),
                mode: DATA_DIR_MODE,
                source,
            },
        ),
    }
}

/// Opens `path` for appending: created with exactly `mode`, or, when it is there, with
/// every permission `mode` does not give taken away.
pub fn private_file(path: &Path, mode: u32) -> Result<File, FileError> {
    let open = |create_new: bool| {
        OpenOptions::new()
            .append(true)
            .create_new(create_new)
            .mode(mode)
            .open(path)
    };
    match open(true) {
        Ok(file) => {
            // The umask may have taken more than asked; the mode is exactly `mode`.
            file.set_permissions(Permissions::from_mode(mode))
                .map_err(|source| FileError::SetMode {
                    path: path.to_owned(),
                    mode,
                    source,
                })?;
            Ok(file)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let file = open(false).map_err(|source| FileError::Create {
                path: path.to_owned(),
                source,
            })?;
            tighten(path, mode)?;
            Ok(file)
        }
        Err(source) => Err(FileError::Create {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Takes from `path` every permission `mode` does not give, and logs it; a missing file
/// is left missing.
pub fn tighten(path: &Path, mode: u32) -> Result<(), FileError> {
    let current = match std::fs::metadata(path) {
        Ok(metadata) => metadata.permissions().mode(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(FileError::Mode {
                path: path.to_owned(),
                source,
            })
        }
    };
    let was = current & 0o777;
    let now = was & mode;
    if now == was {
        return Ok(());
    }
    std::fs::set_permissions(path, Permissions::from_mode(current & !0o777 | now)).map_err(
        |source| FileError::Tighten {
            path: path.to_owned(),
            was,
            wanted: now,
            source,
        },
    )?;
    tracing::warn!(
        "tightened {}: mode {was:04o} let other users in; now {now:04o}",
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests;
