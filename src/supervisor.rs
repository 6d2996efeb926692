//! `canopy run`'s supervision of its two processes: one that dies is started again after a
//! back-off while the other goes on, and what happened is kept in `supervisor.json` in the
//! data dir (`canopy_config::supervision`) for `canopy status` and the console.

use std::io::Write;
use std::path::Path;
use std::process::ExitStatus;
use std::time::Duration;

use canopy_config::supervision::{state_path, ProcessState, State};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::Child;
use tokio::time::Instant;

/// The first wait before a restart; it doubles with each quick death, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A process that ran this long before dying is restarted after [`FIRST_BACKOFF`] again.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The wait before a restart: [`FIRST_BACKOFF`], doubled after each quick death up to
/// [`MAX_BACKOFF`], and back to the first once a process has run [`STABLE_AFTER`].
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }

    /// The wait after a death of a process that had run for `ran`.
    fn after_death(&mut self, ran: Duration) -> Duration {
        if ran >= STABLE_AFTER {
            self.next = FIRST_BACKOFF;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        wait
    }
}

/// One child process and its restarts.
pub struct Supervised {
    name: &'static str,
    child: Option<Child>,
    started: Instant,
    restarts: u32,
    backoff: Backoff,
    restart_at: Option<Instant>,
    last_exit: Option<String>,
}

/// What happened to a supervised process.
pub enum Event {
    Exited(std::io::Result<ExitStatus>),
    RestartDue,
}

impl Supervised {
    pub fn new(name: &'static str, child: Child) -> Supervised {
        Supervised {
            name,
            child: Some(child),
            started: Instant::now(),
            restarts: 0,
            backoff: Backoff::new(),
            restart_at: None,
            last_exit: None,
        }
    }

    /// Waits for the process to end, or for its restart to be due.
    pub async fn next(&mut self) -> Event {
        match (&mut self.child, self.restart_at) {
            (Some(child), _) => Event::Exited(child.wait().await),
            (None, Some(at)) => {
                tokio::time::sleep_until(at).await;
                Event::RestartDue
            }
            (None, None) => std::future::pending().await,
        }
    }

    /// Deals with `event`: a death schedules a restart, a due restart starts the process.
    pub fn handle(&mut self, event: Event, start: impl FnOnce() -> anyhow::Result<Child>) {
        match event {
            Event::Exited(exited) => {
                self.child = None;
                let how = match exited {
                    Ok(status) => describe_exit(status),
                    Err(e) => format!("could not be waited for: {e}"),
                };
                self.died(how);
            }
            Event::RestartDue => {
                self.restart_at = None;
                self.restarts += 1;
                match start() {
                    Ok(child) => {
                        say(&format!(
                            "{} started again (restart {})",
                            self.name, self.restarts
                        ));
                        self.child = Some(child);
                        self.started = Instant::now();
                    }
                    Err(e) => self.died(format!("could not be started: {e:#}")),
                }
            }
        }
    }

    fn died(&mut self, how: String) {
        let wait = self.backoff.after_death(self.started.elapsed());
        say(&format!(
            "{} {how}; starting it again in {} s",
            self.name,
            wait.as_secs()
        ));
        self.restart_at = Some(Instant::now() + wait);
        self.last_exit = Some(how);
    }

    pub fn signal(&self, signal: Signal) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = kill(Pid::from_raw(pid as i32), signal);
        }
    }

    /// SIGTERM, then SIGKILL if the process is still there after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        self.signal(Signal::SIGTERM);
        let Some(child) = &mut self.child else {
            return;
        };
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }

    fn state(&self) -> ProcessState {
        ProcessState {
            name: self.name.to_owned(),
            pid: self.child.as_ref().and_then(Child::id),
            restarts: self.restarts,
            last_exit: self.last_exit.clone(),
        }
    }
}

/// Writes `supervisor.json` for `processes`; a failure is said, not fatal.
pub fn record(data_dir: &Path, processes: &[&Supervised]) {
    let state = State {
        pid: std::process::id(),
        processes: processes.iter().map(|p| p.state()).collect(),
    };
    if let Err(e) = state.write(data_dir) {
        say(&format!(
            "cannot write {}: {e}",
            state_path(data_dir).display()
        ));
    }
}

pub fn forget(data_dir: &Path) {
    let _ = std::fs::remove_file(state_path(data_dir));
}

/// A line on stderr; whoever started us may have closed it, which is no failure.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "canopy: {line}");
}

pub fn describe_exit(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "exited".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_deaths_double_the_wait_up_to_a_minute_and_a_long_run_resets_it() {
        let mut backoff = Backoff::new();
        let quick = Duration::from_secs(2);
        let waits: Vec<u64> = (0..8)
            .map(|_| backoff.after_death(quick).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff.after_death(STABLE_AFTER).as_secs(), 1);
        assert_eq!(backoff.after_death(quick).as_secs(), 2);
    }
}
