//! `canopy admin`: console accounts and their roles.

use std::process::ExitCode;

use anyhow::Context;
use canopy_config::versions::Db;
use canopy_manager::accounts::{self, AccountError};

use super::{Paths, UserError};
use crate::cli::AdminAction;

pub(crate) async fn admin(paths: &Paths, action: AdminAction) -> anyhow::Result<ExitCode> {
    let db = paths.open_db().await?;
    match action {
        AdminAction::List => list(&db).await?,
        AdminAction::Add {
            name,
            role,
            generate_password,
        } => {
            let password = password(generate_password)?;
            accounts::add(&db, &name, role, &password.text)
                .await
                .map_err(refused)?;
            println!("Account {name} added, {}.", role.with_article());
            password.print_if_generated(&name);
        }
        AdminAction::Remove { name } => {
            accounts::remove(&db, &name).await.map_err(refused)?;
            println!("Account {name} removed; its sessions were logged out.");
        }
        AdminAction::Role { name, role } => {
            accounts::set_role(&db, &name, role)
                .await
                .map_err(refused)?;
            println!(
                "{name} is now {}, from its next request on.",
                role.with_article()
            );
        }
        AdminAction::Password {
            name,
            generate_password,
        } => {
            let password = password(generate_password)?;
            accounts::change_password(&db, &name, &password.text)
                .await
                .map_err(refused)?;
            println!("Password of {name} set; its sessions were logged out.");
            password.print_if_generated(&name);
        }
        AdminAction::SetPassword { user } => {
            let password = password(false)?;
            accounts::set_password(&db, &user, &password.text)
                .await
                .map_err(refused)?;
            println!("Password of {user} set; their other sessions were logged out.");
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(db: &Db) -> anyhow::Result<()> {
    let accounts = accounts::list(db).await?;
    println!(
        "{:<24} {:<14} {:<24} {:<24} FAILED LOGINS",
        "NAME", "ROLE", "CREATED", "LAST LOGIN"
    );
    for a in accounts {
        println!(
            "{:<24} {:<14} {:<24} {:<24} {}",
            a.name,
            a.role.to_string(),
            a.created_at,
            a.last_login_at.as_deref().unwrap_or("never"),
            a.failed_logins
        );
    }
    Ok(())
}

fn refused(e: AccountError) -> anyhow::Error {
    match e {
        AccountError::Database(e) => anyhow::Error::from(e).context("the accounts database"),
        e => UserError(format!("{e}; nothing was changed")).into(),
    }
}

/// A password for an account: generated, or read from stdin.
struct Password {
    text: String,
    generated: bool,
}

impl Password {
    fn print_if_generated(&self, name: &str) {
        if self.generated {
            println!("Password of {name}, shown only this once: {}", self.text);
        }
    }
}

/// Generated, or read from stdin (one line, or all of it without the final newline), so
/// scripts and tests can give it without a terminal.
fn password(generate: bool) -> anyhow::Result<Password> {
    if generate {
        return Ok(Password {
            text: accounts::generate_password()?,
            generated: true,
        });
    }
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .context("reading the password from stdin")?;
    let password = input.strip_suffix('\n').unwrap_or(&input);
    let password = password.strip_suffix('\r').unwrap_or(password);
    if password.is_empty() {
        return Err(UserError(
            "no password on stdin (or give --generate-password); nothing was changed".to_owned(),
        )
        .into());
    }
    Ok(Password {
        text: password.to_owned(),
        generated: false,
    })
}
