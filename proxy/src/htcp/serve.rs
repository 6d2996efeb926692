//! The receive loop of the HTCP socket: TST and CLR queries go to the responder, TST
//! replies to the round of ours that waits for them. NOP, MON and SET get no reply, as
//! from Squid; a datagram that cannot be read is dropped.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::watch;

use crate::htcp::codec::{HtcpMessage, HtcpOpcode, OpData, Role, MAX_DATAGRAM_LEN};
use crate::htcp::socket::HtcpSocket;
use crate::htcp::{querier, responder};
use crate::runtime::Shared;

/// Starts answering and taking replies on `htcp`.
pub fn start(htcp: &Arc<HtcpSocket>, shared: Arc<Shared>) {
    tokio::spawn(receive(htcp.clone(), shared, htcp.retired()));
}

async fn receive(htcp: Arc<HtcpSocket>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // One octet more than the largest datagram, so an oversized one is seen as such.
    let mut buffer = vec![0u8; MAX_DATAGRAM_LEN + 1];
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            received = htcp.socket.recv_from(&mut buffer) => match received {
                Ok((len, from)) => handle(&htcp, &shared, &buffer[..len], from).await,
                // An ICMP error from an earlier send; the socket goes on working.
                Err(e) => tracing::debug!("HTCP receive: {e}"),
            }
        }
    }
}

async fn handle(htcp: &HtcpSocket, shared: &Shared, datagram: &[u8], from: SocketAddr) {
    let runtime = shared.runtime.load();
    let message = match HtcpMessage::decode(datagram) {
        Ok(message) => message,
        Err(error) => {
            runtime.stats.htcp.dropped.fetch_add(1, Relaxed);
            tracing::debug!(%from, "HTCP datagram not understood: {error}");
            return;
        }
    };
    let reply = match (&message.op_data, message.role) {
        (OpData::Specifier(specifier), _) => {
            let store = shared.store.load();
            let held = (&**store, shared.disk.as_ref());
            responder::answer_tst(&runtime, held, from, &message, specifier)
        }
        (OpData::Clear { reason, specifier }, _) => {
            let clr = (*reason, specifier);
            responder::clear(htcp, shared, &runtime, from, &message, clr).await
        }
        (_, Role::Reply { .. }) if message.opcode == HtcpOpcode::Tst => {
            querier::take_reply(htcp, &runtime, &message, from);
            None
        }
        // CLR replies (we ask for none), NOP, MON, SET.
        _ => {
            runtime.stats.htcp.dropped.fetch_add(1, Relaxed);
            None
        }
    };
    if let Some(reply) = reply {
        htcp.send(&reply, from).await;
    }
}
