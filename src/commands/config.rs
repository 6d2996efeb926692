//! `canopy config`: list, get, set, export and import settings as config versions (history,
//! diff and restore in `versions`).

use std::process::ExitCode;

use canopy_config::config::{Config, SETTINGS};
use canopy_config::import::config_file::ConfigFileError;

use super::{print_listing_footer, refused, save, versions, Paths, UserError};
use crate::cli::ConfigAction;

pub(crate) async fn config(paths: &Paths, action: ConfigAction) -> anyhow::Result<ExitCode> {
    let db = paths.open_db().await?;
    let latest = db.in_force().await?;
    let mut config = latest.config.clone();
    match action {
        ConfigAction::List => {
            for setting in SETTINGS {
                println!("{} = {}", setting.key, config.get(setting.key)?);
            }
            print_listing_footer(&db, &latest).await?;
            return Ok(ExitCode::SUCCESS);
        }
        ConfigAction::Get { key } => {
            let value = config
                .get(&key)
                .map_err(|e| UserError(format!("{key}: {}", e.message)))?;
            println!("{value}");
            return Ok(ExitCode::SUCCESS);
        }
        ConfigAction::Export => {
            print!("{}", config.to_toml());
            return Ok(ExitCode::SUCCESS);
        }
        ConfigAction::History { limit } => return versions::history(&db, limit).await,
        ConfigAction::Diff { from, to } => return versions::diff(&db, from, to).await,
        ConfigAction::Restore { version } => return versions::restore(paths, &db, version).await,
        ConfigAction::Set { key, value } => config.set(&key, &value).map_err(refused)?,
        ConfigAction::Import {
            file,
            replace,
            dry_run,
        } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| UserError(format!("cannot read {}: {e}", file.display())))?;
            let imported = if replace {
                Config::from_toml(&text)
            } else {
                config.merged_toml(&text)
            };
            config = imported.map_err(|e| match e {
                ConfigFileError::Unreadable(fault) => {
                    UserError(format!("{}: {fault}; nothing was changed", file.display())).into()
                }
                ConfigFileError::Invalid(errors) => refused(errors),
            })?;
            if dry_run {
                let changes = config.diff(&latest.config);
                if changes.is_empty() {
                    println!("no change: config version {} already says so", latest.id);
                }
                for change in changes {
                    println!("{change}");
                }
                println!("dry run: nothing was saved");
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    save(&db, &latest, &config).await
}
