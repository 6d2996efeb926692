//! Our side of HTCP: TST queries to the peers asked over HTCP (their part of a query round,
//! which `icp/querier.rs` runs), their replies matched to the round, and CLRs sent to the
//! peers that take them when an object is purged or invalidated here.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use tokio::sync::mpsc;

use crate::hierarchy::peers::{self, PeerEntry};
use crate::htcp::codec::{ClrReason, HtcpLayout, HtcpMessage, ResponseCode, Role, Specifier};
use crate::htcp::socket::{wire_id, HtcpSocket};
use crate::icp::codec::IcpOpcode;
use crate::icp::socket::{Answer, Round, RoundTable};
use crate::runtime::Runtime;
use crate::stats::{PeerStats, QueryMethod};
use canopy_config::config::HtcpPeer;

/// The layout a peer is spoken to in.
pub fn layout(peer: &PeerEntry) -> HtcpLayout {
    match peer.config.htcp {
        HtcpPeer::Oldsquid => HtcpLayout::OldSquid,
        HtcpPeer::On | HtcpPeer::Off => HtcpLayout::Rfc,
    }
}

/// The request's header fields as HTCP carries them: one `Name: value` line each, CRLF.
pub fn header_lines(headers: &HeaderMap) -> Vec<u8> {
    let mut lines = Vec::new();
    for (name, value) in headers {
        lines.extend_from_slice(name.as_str().as_bytes());
        lines.extend_from_slice(b": ");
        lines.extend_from_slice(value.as_bytes());
        lines.extend_from_slice(b"\r\n");
    }
    lines
}

/// Registers a round for `expected` (peers by the address and port their replies must come
/// from) and sends each a TST for `url` with `headers`; returns the round's message id.
pub async fn send_tst(
    htcp: &HtcpSocket,
    runtime: &Runtime,
    url: &str,
    headers: &HeaderMap,
    expected: HashMap<SocketAddr, (usize, Arc<PeerStats>)>,
    replies: mpsc::UnboundedSender<Answer>,
) -> u32 {
    let msg_id = htcp.next_msg_id();
    let targets: Vec<(SocketAddr, HtcpLayout)> = expected
        .iter()
        .filter_map(|(addr, (index, _))| Some((*addr, layout(runtime.peers.get(*index)?))))
        .collect();
    htcp.rounds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(
            msg_id,
            Round {
                method: QueryMethod::Htcp,
                url: url.to_owned(),
                sent_at: Instant::now(),
                expected,
                replies,
                ended: false,
            },
        );
    let specifier = Specifier::get(url, header_lines(headers));
    for (addr, layout) in targets {
        let query = HtcpMessage::tst_query(layout, wire_id(layout, msg_id), specifier.clone());
        htcp.send(&query, addr).await;
    }
    msg_id
}

/// What became of a TST reply.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    InTime,
    Late,
    Ignored,
}

/// Hands a TST reply to its round: by message id, or, in the old layout that carries none,
/// the oldest round that still expects a reply from that address and port. Either way the
/// reply must come from a peer the round asked.
fn settle(table: &mut RoundTable, reply: &HtcpMessage, from: SocketAddr) -> Settled {
    let id = match reply.layout {
        HtcpLayout::Rfc => Some(reply.msg_id),
        HtcpLayout::OldSquid => table
            .rounds
            .iter()
            .filter(|(_, r)| r.method == QueryMethod::Htcp && r.expected.contains_key(&from))
            .min_by_key(|(_, r)| (r.ended, r.sent_at))
            .map(|(id, _)| *id),
    };
    let Some(round) = id
        .and_then(|id| table.rounds.get_mut(&id))
        .filter(|r| r.method == QueryMethod::Htcp)
    else {
        return Settled::Ignored;
    };
    let Some((peer, stats)) = round.expected.remove(&from) else {
        return Settled::Ignored;
    };
    let hit = reply.response == ResponseCode::ZERO;
    if round.ended {
        stats.htcp_reply_late(hit);
        return Settled::Late;
    }
    let elapsed = round.sent_at.elapsed();
    stats.htcp_reply_in_time(hit, elapsed);
    let _ = round.replies.send(Answer {
        peer,
        from,
        opcode: if hit { IcpOpcode::Hit } else { IcpOpcode::Miss },
        elapsed,
        object: None,
    });
    Settled::InTime
}

/// A TST reply arrived. One with MO set says the query failed as a whole, as Squid reads
/// it: not an answer.
pub fn take_reply(htcp: &HtcpSocket, runtime: &Runtime, reply: &HtcpMessage, from: SocketAddr) {
    let from = SocketAddr::new(peers::canonical(from.ip()), from.port());
    let answers = matches!(
        reply.role,
        Role::Reply {
            message_overall: false
        }
    );
    let settled = if answers {
        settle(
            &mut htcp.rounds.lock().unwrap_or_else(|e| e.into_inner()),
            reply,
            from,
        )
    } else {
        Settled::Ignored
    };
    if settled == Settled::Ignored {
        runtime.stats.htcp.replies_ignored.fetch_add(1, Relaxed);
    }
}

/// Sends a CLR for `url` to every HTCP peer that takes them (not `no_clr`; not
/// `no_purge_clr` when a PURGE caused it), without asking for a reply, as Squid does on
/// PURGE (with the request's headers) and on invalidation by an unsafe method (without).
/// One CLR for GET: Squid clears GET and HEAD entries with it.
pub async fn send_clr(runtime: &Runtime, url: &str, reason: ClrReason, headers: &HeaderMap) {
    let Some(htcp) = &runtime.htcp else {
        return;
    };
    let request_headers = match reason {
        ClrReason::Unspecified => header_lines(headers),
        ClrReason::Invalidation => Vec::new(),
    };
    let specifier = Specifier::get(url, request_headers);
    // Squid's PURGE sends the unspecified reason; only an invalidation says so.
    let purged = reason == ClrReason::Unspecified;
    let refuses = |peer: &&PeerEntry| {
        let config = &peer.config;
        config.htcp.is_off() || config.no_clr || (purged && config.no_purge_clr)
    };
    let takers = runtime.peers.iter().filter(|peer| !refuses(peer));
    for peer in takers {
        if send_clr_to(htcp, peer, reason, &specifier).await {
            runtime.stats.htcp.clr_sent.fetch_add(1, Relaxed);
        }
    }
}

/// Passes a CLR this proxy received from `from` and obeyed on to the HTCP peers marked
/// `forward_clr`, as Squid's `htcp=forward-clr`. Squid sends on the CLR's op-data alone,
/// which no HTCP implementation reads; Canopy sends a whole CLR in the peer's layout, with
/// the reason and specifier it received. Never back to its sender, so two proxies that
/// forward to each other do not pass one CLR back and forth for ever.
pub async fn forward_clr(
    htcp: &HtcpSocket,
    runtime: &Runtime,
    from: SocketAddr,
    reason: ClrReason,
    specifier: &Specifier,
) {
    let takers = runtime
        .peers
        .iter()
        .filter(|peer| !peer.config.htcp.is_off() && peer.config.forward_clr)
        .filter(|peer| peer.icp_addr() != Some(from));
    for peer in takers {
        if send_clr_to(htcp, peer, reason, specifier).await {
            runtime.stats.htcp.clr_forwarded.fetch_add(1, Relaxed);
        }
    }
}

/// Sends `peer` a CLR that asks for no reply; whether it has an address to send to.
async fn send_clr_to(
    htcp: &HtcpSocket,
    peer: &PeerEntry,
    reason: ClrReason,
    specifier: &Specifier,
) -> bool {
    let Some(addr) = peer.icp_addr() else {
        return false;
    };
    let layout = layout(peer);
    let id = wire_id(layout, htcp.next_msg_id());
    let clr = HtcpMessage::clr_query(layout, id, reason, specifier.clone(), false);
    htcp.send(&clr, addr).await;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://example.com/a";

    fn round(table: &mut RoundTable, id: u32, peer: SocketAddr) -> Arc<PeerStats> {
        let stats = Arc::new(PeerStats::default());
        stats.htcp_query_sent(std::time::Duration::from_secs(10));
        let (replies, _) = mpsc::unbounded_channel();
        table.insert(
            id,
            Round {
                method: QueryMethod::Htcp,
                url: URL.to_owned(),
                sent_at: Instant::now(),
                expected: [(peer, (0, stats.clone()))].into(),
                replies,
                ended: false,
            },
        );
        stats
    }

    fn counts(stats: &PeerStats) -> (u64, u64, u64, u64) {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
        (
            load(&stats.htcp_queries),
            load(&stats.htcp_hit),
            load(&stats.htcp_miss),
            load(&stats.htcp_timeouts),
        )
    }

    #[test]
    fn a_reply_counts_only_from_the_address_and_port_asked_with_the_id_asked() {
        let mut table = RoundTable::default();
        let peer: SocketAddr = "127.0.0.2:4827".parse().unwrap();
        let stats = round(&mut table, 9, peer);
        let hit = HtcpMessage::tst_hit(HtcpLayout::Rfc, 9, Default::default());
        let other_port: SocketAddr = "127.0.0.2:4828".parse().unwrap();
        assert_eq!(settle(&mut table, &hit, other_port), Settled::Ignored);
        let other_id = HtcpMessage::tst_hit(HtcpLayout::Rfc, 10, Default::default());
        assert_eq!(settle(&mut table, &other_id, peer), Settled::Ignored);
        assert_eq!(settle(&mut table, &hit, peer), Settled::InTime);
        assert_eq!(settle(&mut table, &hit, peer), Settled::Ignored, "once");
        assert_eq!(counts(&stats), (1, 1, 0, 0));
    }

    #[test]
    fn an_old_layout_reply_goes_to_the_oldest_round_asking_its_sender() {
        let mut table = RoundTable::default();
        let peer: SocketAddr = "127.0.0.2:4827".parse().unwrap();
        let first = round(&mut table, 3, peer);
        let second = round(&mut table, 4, peer);
        let miss = HtcpMessage::tst_miss(HtcpLayout::OldSquid, 0);
        assert_eq!(settle(&mut table, &miss, peer), Settled::InTime);
        assert_eq!(counts(&first), (1, 0, 1, 0));
        assert_eq!(counts(&second), (1, 0, 0, 0));
        table.end(4);
        assert_eq!(settle(&mut table, &miss, peer), Settled::Late);
        assert_eq!(counts(&second), (1, 0, 1, 0), "the timeout taken back");
    }
}
