//! `canopy`: starts the proxy and the console, and manages a running Canopy from the shell.

mod cli;
mod commands;
mod run;
mod supervisor;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use cli::{Action, CacheAction, Cli, LogsAction};
use commands::admin::admin;
use commands::config::config;
use commands::proxy::{purge, reload, reopen_logs, stats, status};
use commands::routing::{parent, peer, rule};
use commands::{Paths, UserError};
use run::run;

#[tokio::main]
async fn main() -> ExitCode {
    // Warnings only (such as files tightened at start): the commands' output is their own.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, None | Some(Action::Run)) {
        end_quietly_when_the_reader_goes();
    }
    let paths = Paths {
        database: cli.database,
        node: cli.node,
        ..Paths::new(&cli.data_dir)
    };
    let result = match cli.command.unwrap_or(Action::Run) {
        Action::Run => run(&paths).await,
        Action::Config(action) => config(&paths, action).await,
        Action::Reload => reload(&paths).await,
        Action::Status => status(&paths).await,
        Action::Stats {
            json,
            clients: true,
        } => commands::clients::clients(&paths, json).await,
        Action::Stats { json, .. } => stats(&paths, json).await,
        Action::Rule(action) => rule(&paths, action).await,
        Action::Parent(action) => parent(&paths, action).await,
        Action::Peer(action) => peer(&paths, action).await,
        Action::Admin(action) => admin(&paths, action).await,
        Action::Logs(LogsAction::Reopen) => reopen_logs(&paths).await,
        Action::Node(action) => commands::nodes::node(&paths, action).await,
        Action::Purge { url } => purge(&paths, &url).await,
        Action::Cache(CacheAction::List {
            prefix,
            limit,
            json,
        }) => commands::cache::list(&paths, &prefix, limit, json).await,
        Action::Cache(CacheAction::Stats { json }) => commands::cache::stats(&paths, json).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if let Some(user) = e.downcast_ref::<UserError>() {
                eprintln!("canopy: {user}");
                ExitCode::from(2)
            } else {
                eprintln!("canopy: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}

/// A command whose output is piped into `head` ends as any Unix tool does when the reader
/// goes, killed by SIGPIPE, rather than panicking on the write (Rust ignores SIGPIPE). Not
/// for `canopy run`: the supervisor must outlive whatever reads its output.
fn end_quietly_when_the_reader_goes() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: SIG_DFL installs no handler, so nothing of ours ever runs in a signal context.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}
