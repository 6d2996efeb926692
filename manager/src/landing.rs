//! What a form did, kept for the page it redirected to (post, redirect, get): shown once,
//! so a refresh shows the page again and never posts the form twice.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::accounts::Session;
use crate::notice::Notice;

/// How long a notice waits for its page; a browser follows a 303 at once.
const WAIT: Duration = Duration::from_secs(60);
/// At most this many notices wait at once, one per session; beyond, the stale ones go.
const MOST: usize = 1024;

/// The notice each session's next page is to show, by the session's CSRF token.
#[derive(Debug, Default)]
pub struct Landing(Mutex<HashMap<String, Waiting>>);

#[derive(Debug)]
struct Waiting {
    path: String,
    notice: Notice,
    since: Instant,
}

impl Landing {
    pub(crate) fn put(&self, session: &Session, path: &str, notice: Notice) {
        let mut waiting = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if waiting.len() >= MOST {
            waiting.retain(|_, w| w.since.elapsed() < WAIT);
        }
        if waiting.len() < MOST || waiting.contains_key(&session.csrf) {
            let since = Instant::now();
            let path = path.to_owned();
            waiting.insert(
                session.csrf.clone(),
                Waiting {
                    path,
                    notice,
                    since,
                },
            );
        }
    }

    /// The notice waiting for page `path` of this session, once.
    pub fn take(&self, session: &Session, path: &str) -> Option<Notice> {
        let mut waiting = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match waiting.get(&session.csrf) {
            Some(w) if w.path == path && w.since.elapsed() < WAIT => {
                waiting.remove(&session.csrf).map(|w| w.notice)
            }
            _ => None,
        }
    }
}
