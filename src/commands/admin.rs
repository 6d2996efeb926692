//! `canopy admin`: console accounts.

use std::process::ExitCode;

use anyhow::Context;

use super::{Paths, UserError};

/// Reads the password from stdin (one line, or all of it without the final newline), so
/// scripts and tests can set it without a terminal.
pub(crate) async fn set_password(paths: &Paths, user: &str) -> anyhow::Result<ExitCode> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .context("reading the password from stdin")?;
    let password = input.strip_suffix('\n').unwrap_or(&input);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(UserError("no password on stdin; nothing was changed".to_owned()).into());
    }
    let db = paths.open_db().await?;
    canopy_manager::accounts::set_password(&db, user, password)
        .await
        .map_err(|e| UserError(format!("{e}; nothing was changed")))?;
    println!("Password of {user} set; their other sessions were logged out.");
    Ok(ExitCode::SUCCESS)
}
