//! The HTCP socket of one proxy on `bind_address:htcp_port`, a field of the runtime, and the
//! TST rounds of ours waiting on it (the loop that receives on it is `serve.rs`). Our queries
//! and CLRs leave from it, because Squid takes a reply only from the address and port it
//! asked, and knows its peers' messages by their source.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::htcp::codec::{HtcpLayout, HtcpMessage};
use crate::icp::socket::{bind_unicast, Rounds, Sharing};

/// The HTCP socket could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind the HTCP socket on {listen}: {source}")]
pub struct HtcpBindError {
    pub listen: SocketAddr,
    #[source]
    pub source: io::Error,
}

pub struct HtcpSocket {
    pub listen: SocketAddr,
    pub local: SocketAddr,
    pub socket: Arc<UdpSocket>,
    /// Our TST rounds by message id, ended ones kept a while so a late reply is counted.
    pub rounds: Arc<Rounds>,
    next_id: AtomicU32,
    stop: watch::Sender<bool>,
}

impl HtcpSocket {
    /// Binds `listen`, beside `current` (the socket it replaces) when they share the port.
    /// (A reload that keeps the address keeps the socket whole.)
    pub fn prepare(
        listen: SocketAddr,
        current: Option<&HtcpSocket>,
    ) -> Result<HtcpSocket, HtcpBindError> {
        let error = |source| HtcpBindError { listen, source };
        let sharing = Sharing::of(listen, current.map(|c| c.listen));
        let socket = bind_unicast(listen, sharing).map_err(error)?;
        let local = socket.local_addr().map_err(error)?;
        let (stop, _) = watch::channel(false);
        Ok(HtcpSocket {
            listen,
            local,
            socket: Arc::new(socket),
            rounds: Arc::default(),
            next_id: AtomicU32::new(1),
            stop,
        })
    }

    /// Told when the socket is retired; its receive loop ends then.
    pub(crate) fn retired(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Stops its receive loop; rounds still waiting end now and the port is let go.
    pub fn retire(&self) {
        let _ = self.stop.send(true);
        self.rounds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// A message id for a query of ours; never 0, the id of every old-layout message.
    pub fn next_msg_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    pub async fn send(&self, message: &HtcpMessage, to: SocketAddr) {
        match message.encode() {
            Ok(bytes) => {
                if let Err(e) = self.socket.send_to(&bytes, to).await {
                    tracing::debug!(%to, "HTCP send failed: {e}");
                }
            }
            Err(e) => tracing::debug!(%to, "HTCP message not sent: {e}"),
        }
    }
}

/// The message id a query goes out with in `layout`: Squid's old layout carries none (0).
pub fn wire_id(layout: HtcpLayout, msg_id: u32) -> u32 {
    match layout {
        HtcpLayout::Rfc => msg_id,
        HtcpLayout::OldSquid => 0,
    }
}
