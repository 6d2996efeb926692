//! The receive loops of the ICP socket: queries go to the responder, replies to the round
//! of ours that waits for them.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::icp::codec::{IcpMessage, IcpOpcode, MAX_DATAGRAM_LEN};
use crate::icp::socket::IcpSocket;
use crate::icp::{querier, responder};
use crate::runtime::Shared;

/// Starts answering and taking replies on `icp` (and on its multicast group's socket).
pub fn start(icp: &Arc<IcpSocket>, shared: Arc<Shared>) {
    tokio::spawn(receive(
        icp.socket.clone(),
        icp.clone(),
        shared.clone(),
        icp.retired(),
    ));
    if let Some(group) = icp.take_group_socket() {
        tokio::spawn(receive(Arc::new(group), icp.clone(), shared, icp.retired()));
    }
}

async fn receive(
    socket: Arc<UdpSocket>,
    icp: Arc<IcpSocket>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    // One octet more than the largest datagram, so an oversized one is seen as such.
    let mut buffer = vec![0u8; MAX_DATAGRAM_LEN + 1];
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            received = socket.recv_from(&mut buffer) => match received {
                Ok((len, from)) => handle(&icp, &shared, &buffer[..len], from).await,
                // An ICMP error from an earlier send; the socket goes on working.
                Err(e) => tracing::debug!("ICP receive: {e}"),
            }
        }
    }
}

async fn handle(icp: &IcpSocket, shared: &Shared, datagram: &[u8], from: SocketAddr) {
    // Squid ignores ICP from its own address; our own multicast query comes back too.
    if from == icp.local {
        return;
    }
    let runtime = shared.runtime.load();
    let totals = &shared.stats.icp;
    let message = match IcpMessage::decode(datagram) {
        Ok(message) => message,
        Err(error) => {
            match error.reply_with_err() {
                Some(request_number) => {
                    totals.queries_received.fetch_add(1, Relaxed);
                    let opcode = responder::refuse_or_err(&runtime, from, &shared.stats);
                    icp.send(&IcpMessage::reply(opcode, request_number, ""), from)
                        .await;
                }
                None => {
                    totals.dropped.fetch_add(1, Relaxed);
                }
            }
            tracing::debug!(%from, "ICP datagram not understood: {error}");
            return;
        }
    };
    if message.opcode == IcpOpcode::Query {
        totals.queries_received.fetch_add(1, Relaxed);
        let reply = responder::answer(
            &runtime,
            &shared.store.load(),
            shared.disk.as_ref(),
            from,
            &message,
            &shared.stats,
        );
        icp.send(&reply, from).await;
    } else {
        querier::take_reply(&icp.rounds, &runtime, &message, from);
    }
}
