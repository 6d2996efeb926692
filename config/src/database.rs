//! The config database: the SQLite file in the data dir (one Canopy, the default), or a
//! PostgreSQL server that a fleet of nodes shares (`--database URL`). One schema and one set
//! of queries serve both, through sqlx's `Any` driver: queries use `$1` placeholders and SQL
//! both engines read; the schema is `migrations/` for SQLite and `migrations/postgres/` for
//! PostgreSQL, kept to the same tables and columns.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::postgres::PgListener;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{AnyPool, ConnectOptions, Executor};

use crate::files::{self, FileError};

/// The channel on which a PostgreSQL database announces each new config version (its id as
/// the payload), in the transaction that saves it.
pub const VERSIONS_CHANNEL: &str = "canopy_config_versions";

/// Where the config database is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// A SQLite file (by default `canopy.db` in the data dir).
    Sqlite(PathBuf),
    /// A `postgres://` or `postgresql://` URL, shared by every node of a fleet.
    Postgres(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("database URL {0:?}: expected postgres://USER@HOST/DATABASE or sqlite:PATH")]
pub struct DatabaseUrlError(pub String);

impl FromStr for DatabaseUrl {
    type Err = DatabaseUrlError;
    fn from_str(text: &str) -> Result<Self, DatabaseUrlError> {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Ok(DatabaseUrl::Postgres(text.to_owned()))
        } else if let Some(path) = text.strip_prefix("sqlite:").filter(|p| !p.is_empty()) {
            Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
        } else {
            Err(DatabaseUrlError(text.to_owned()))
        }
    }
}

impl DatabaseUrl {
    pub fn is_shared(&self) -> bool {
        matches!(self, DatabaseUrl::Postgres(_))
    }

    /// The URL as `--database` takes it back (children of `canopy run` are given it).
    pub fn as_arg(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
            DatabaseUrl::Postgres(url) => url.clone(),
        }
    }
}

/// Shown in logs and by `canopy status`: a PostgreSQL URL without its password.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "{}", path.display()),
            DatabaseUrl::Postgres(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
                match rest.split_once('@') {
                    Some((user, host)) => {
                        let user = user.split(':').next().unwrap_or_default();
                        write!(f, "{scheme}://{user}@{host}")
                    }
                    None => write!(f, "{url}"),
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Files(#[from] FileError),
}

/// The database the proxy, the console and the CLI use.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    url: DatabaseUrl,
}

impl Db {
    /// Connects and brings the schema up to date. A SQLite database's folder is the data
    /// dir; it and the database are made the admin's alone first.
    pub async fn connect_schema(url: &DatabaseUrl) -> Result<Db, DatabaseError> {
        let db = Db::connect_lazy(url)?;
        let mut first = db.pool.acquire().await?;
        match url {
            DatabaseUrl::Sqlite(_) => sqlx::migrate!("../migrations").run(&mut *first).await?,
            DatabaseUrl::Postgres(_) => {
                sqlx::migrate!("../migrations/postgres")
                    .run(&mut *first)
                    .await?
            }
        }
        drop(first);
        Ok(db)
    }

    /// A database whose connections are made when first used: a node that started while
    /// PostgreSQL was unreachable keeps one, and its queries succeed once it is back.
    pub fn connect_lazy(url: &DatabaseUrl) -> Result<Db, DatabaseError> {
        sqlx::any::install_default_drivers();
        let pool = match url {
            DatabaseUrl::Sqlite(path) => {
                prepare_sqlite_files(path)?;
                let options = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .to_url_lossy();
                AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute(
                                "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 10000;
                                 PRAGMA foreign_keys = ON;",
                            )
                            .await
                            .map(drop)
                        })
                    })
                    .connect_lazy_with(AnyConnectOptions::from_url(&options)?)
            }
            DatabaseUrl::Postgres(text) => AnyPoolOptions::new()
                .max_connections(4)
                // An unreachable server is known in seconds, not after sqlx's 30.
                .acquire_timeout(Duration::from_secs(5))
                .connect_lazy(text)?,
        };
        Ok(Db {
            pool,
            url: url.clone(),
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }
}

/// Tells a node of each config version saved (PostgreSQL's `LISTEN`).
#[derive(Debug)]
pub struct VersionListener(PgListener);

impl Db {
    /// Listens for new config versions; `None` for SQLite, which has no one else to tell.
    pub async fn listen_for_versions(&self) -> Result<Option<VersionListener>, DatabaseError> {
        let DatabaseUrl::Postgres(url) = &self.url else {
            return Ok(None);
        };
        let mut listener = PgListener::connect(url).await?;
        listener.listen(VERSIONS_CHANNEL).await?;
        Ok(Some(VersionListener(listener)))
    }
}

impl VersionListener {
    /// The id of the next version saved; `None` when the connection was lost, and with it
    /// whatever was sent meanwhile (the next call connects again).
    pub async fn next(&mut self) -> Result<Option<i64>, DatabaseError> {
        let told = self.0.try_recv().await?;
        Ok(told.map(|n| n.payload().parse().unwrap_or_default()))
    }
}

/// The data dir 0700 and the database and its WAL/SHM 0600, before SQLite opens them.
fn prepare_sqlite_files(path: &Path) -> Result<(), FileError> {
    let data_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    files::data_dir(data_dir)?;
    files::private_file(path, files::DATABASE_MODE)?;
    // SQLite creates these with the database's mode, but an older Canopy's may be open.
    for suffix in ["-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        files::tighten(Path::new(&name), files::DATABASE_MODE)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_engine_and_hide_their_password() {
        let url: DatabaseUrl = "postgres://canopy:secret@db.example:5432/canopy"
            .parse()
            .unwrap();
        assert!(url.is_shared());
        assert_eq!(url.to_string(), "postgres://canopy@db.example:5432/canopy");
        assert_eq!(
            "sqlite:/var/lib/canopy/canopy.db".parse(),
            Ok(DatabaseUrl::Sqlite("/var/lib/canopy/canopy.db".into()))
        );
        assert_eq!(
            "mysql://x".parse::<DatabaseUrl>(),
            Err(DatabaseUrlError("mysql://x".to_owned()))
        );
    }
}
