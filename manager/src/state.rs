//! What every handler is given: the database, the proxy's control socket, the login gate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use canopy_config::versions::Db;

use crate::login_limits::LoginLimits;

/// What every handler needs.
#[derive(Clone, Debug)]
pub struct AppState {
    pub db: Db,
    /// The proxy's control socket.
    pub control: PathBuf,
    /// The node of the proxy beside this console (its samples are kept under this name).
    pub node: String,
    /// How long a failed login waits before it is answered, so guessing is slow.
    pub login_delay: Duration,
    /// The one gate every password check goes through.
    pub login_limits: Arc<LoginLimits>,
    /// The address `--listen` holds the console at, whatever `manager_listen` says.
    pub pinned_listen: Option<SocketAddr>,
    /// What a form did, waiting for the page it redirected to.
    pub(crate) landing: Arc<crate::landing::Landing>,
}

impl AppState {
    pub fn new(db: Db, control: PathBuf) -> AppState {
        AppState {
            db,
            control,
            node: canopy_config::nodes::default_node_name(),
            login_delay: Duration::from_secs(1),
            login_limits: Arc::default(),
            pinned_listen: None,
            landing: Arc::default(),
        }
    }
}
