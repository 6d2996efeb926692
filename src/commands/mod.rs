//! The commands that manage a Canopy from the shell, one module per group, and what they share.

pub(crate) mod admin;
pub(crate) mod cache;
pub(crate) mod clients;
pub(crate) mod config;
pub(crate) mod nodes;
pub(crate) mod proxy;
pub(crate) mod routing;
pub(crate) mod versions;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;

use canopy_config::config::{Config, ConfigErrors};
use canopy_config::control::ControlError;
use canopy_config::database::DatabaseUrl;
use canopy_config::resolve::unresolved_names;
use canopy_config::versions::{ConfigVersion, Db, VersionError};

/// A failure the user caused or can fix: printed plainly, exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct UserError(pub(crate) String);

pub(crate) struct Paths {
    pub(crate) data_dir: PathBuf,
    pub(crate) db: PathBuf,
    pub(crate) control: PathBuf,
    /// `--database`: a fleet's PostgreSQL in place of `db`.
    pub(crate) database: Option<DatabaseUrl>,
    /// `--node`: this node's name in a fleet.
    pub(crate) node: Option<String>,
}

impl Paths {
    pub(crate) fn new(data_dir: &Path) -> Paths {
        Paths {
            data_dir: data_dir.to_owned(),
            db: data_dir.join("canopy.db"),
            control: data_dir.join("canopy.sock"),
            database: None,
            node: None,
        }
    }

    /// The config database: `--database`, else `canopy.db` in the data dir.
    pub(crate) fn database(&self) -> DatabaseUrl {
        self.database
            .clone()
            .unwrap_or_else(|| DatabaseUrl::Sqlite(self.db.clone()))
    }

    /// Opens the database, creating the data dir (mode 0700) when missing.
    pub(crate) async fn open_db(&self) -> anyhow::Result<Db> {
        let url = self.database();
        // PostgreSQL's nodes keep their control socket and last version here too.
        canopy_config::files::data_dir(&self.data_dir)?;
        Db::connect(&url)
            .await
            .with_context(|| format!("opening {url}"))
    }
}

pub(crate) fn refused(errors: ConfigErrors) -> anyhow::Error {
    let lines: Vec<String> = errors
        .0
        .iter()
        .map(|e| {
            if e.value.is_empty() {
                format!("{}: {}", e.key, e.message)
            } else {
                format!("{} = {:?}: {}", e.key, e.value, e.message)
            }
        })
        .collect();
    UserError(format!("{}; nothing was changed", lines.join("\n"))).into()
}

pub(crate) fn author() -> String {
    format!(
        "{} (canopy command)",
        std::env::var("USER").unwrap_or_else(|_| "admin".to_owned())
    )
}

/// Saves `config` as a new version based on `latest`, and says what changed.
pub(crate) async fn save(
    db: &Db,
    latest: &ConfigVersion,
    config: &Config,
) -> anyhow::Result<ExitCode> {
    if *config == latest.config {
        println!("no change: config version {} already says so", latest.id);
        return Ok(ExitCode::SUCCESS);
    }
    let id = match db.save_change(config, &author(), Some(latest.id)).await {
        Ok(id) => id,
        Err(VersionError::Invalid(errors)) => return Err(refused(errors)),
        Err(e) => return Err(e.into()),
    };
    let saved = db.get(id).await?;
    println!("config version {id} saved: {}", saved.summary);
    for name in unresolved_names(config, &latest.config).await {
        eprintln!("canopy: warning: {name}");
    }
    println!("run `canopy reload` to apply it to a running proxy");
    Ok(ExitCode::SUCCESS)
}

/// Under a listing: the version it shows and its peers, and a newer version the proxy
/// rejected, so its values are not taken for those in force.
pub(crate) async fn print_listing_footer(db: &Db, shown: &ConfigVersion) -> anyhow::Result<()> {
    println!(
        "# config version {}; {} peers",
        shown.id,
        shown.config.peers.len()
    );
    if let Some(rejected) = db.rejected_after(shown.id).await? {
        println!(
            "# version {} was rejected: {}; showing version {} in force",
            rejected.id,
            rejected.state_reason.as_deref().unwrap_or("no reason kept"),
            shown.id,
        );
    }
    Ok(())
}

/// `rows` under `header`, columns as wide as their widest cell and two spaces apart; the
/// columns `right_aligned` says (counts) to the right, the others to the left.
pub(crate) fn table(
    header: &[&str],
    rows: &[Vec<String>],
    right_aligned: impl Fn(usize) -> bool,
) -> String {
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (cell, width))| match right_aligned(i) {
                true => format!("{cell:>width$}"),
                false => format!("{cell:<width$}"),
            })
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out
}

/// A ratio as a percentage with one decimal: `12.5 %`.
pub(crate) fn percent(ratio: f64) -> String {
    format!("{:.1} %", ratio * 100.0)
}

pub(crate) fn not_running(e: ControlError) -> anyhow::Error {
    match e {
        ControlError::NotRunning(path) => UserError(format!(
            "the proxy is not running (nothing listens on {}); start it with `canopy run`",
            path.display()
        ))
        .into(),
        other => other.into(),
    }
}

/// [`not_running`], with the version the proxy last refused to start on, when there is one.
pub(crate) async fn not_running_because(paths: &Paths, e: ControlError) -> anyhow::Error {
    let refused = match paths.open_db().await {
        Ok(db) => match db.in_force().await {
            Ok(in_force) => db.rejected_after(in_force.id - 1).await.ok().flatten(),
            Err(_) => None,
        },
        Err(_) => None,
    };
    match refused {
        Some(v) => UserError(format!(
            "{}\nconfig version {} was rejected: {}",
            not_running(e),
            v.id,
            v.state_reason.as_deref().unwrap_or("no reason kept")
        ))
        .into(),
        None => not_running(e),
    }
}
