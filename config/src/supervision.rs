//! What `canopy run` says about the processes it supervises: `supervisor.json` in the data
//! dir, written by `canopy run`, read by `canopy status` and the console's dashboard.

use std::path::{Path, PathBuf};

use nix::sys::signal::kill;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// The file in the data dir that says what `canopy run` supervises.
pub const STATE_FILE: &str = "supervisor.json";

/// What `supervisor.json` holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    /// `canopy run`'s own pid: a file left by one that was killed names a dead process.
    pub pid: u32,
    pub processes: Vec<ProcessState>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProcessState {
    pub name: String,
    /// `None` while it waits to be started again.
    pub pid: Option<u32>,
    pub restarts: u32,
    /// How it ended the last time, such as "was killed by signal 9".
    pub last_exit: Option<String>,
}

impl State {
    /// The state written by a `canopy run` that is still running on `data_dir`, if any.
    pub fn read(data_dir: &Path) -> Option<State> {
        let text = std::fs::read_to_string(state_path(data_dir)).ok()?;
        let state: State = serde_json::from_str(&text).ok()?;
        kill(Pid::from_raw(state.pid as i32), None)
            .is_ok()
            .then_some(state)
    }

    /// Replaces the file at once (written aside, then renamed), so a reader never sees half.
    pub fn write(&self, data_dir: &Path) -> std::io::Result<()> {
        let aside = data_dir.join(format!("{STATE_FILE}.new"));
        std::fs::write(&aside, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(aside, state_path(data_dir))
    }
}

impl std::fmt::Display for ProcessState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "{}: running, pid {pid}", self.name)?,
            None => write!(f, "{}: waiting to be restarted", self.name)?,
        }
        write!(f, ", restarts {}", self.restarts)?;
        if let Some(exit) = &self.last_exit {
            write!(f, " (last: {exit})")?;
        }
        Ok(())
    }
}

pub fn state_path(data_dir: &Path) -> PathBuf {
    data_dir.join(STATE_FILE)
}
