//! One round of queries for a miss: every peer that takes queries is asked at once, over
//! ICP (or the multicast group once) or, for a peer marked `htcp`, with an HTCP TST that
//! carries the request's headers; the live ones are waited for until the first HIT, the
//! last answer or the query timeout. Dead peers are asked but not waited for; peers down by
//! hand are not asked.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method};
use tokio::sync::mpsc;

use crate::hierarchy::peers::{self, PeerEntry};
use crate::htcp::querier as htcp_querier;
use crate::icp::codec::{IcpMessage, IcpOpcode, IcpPayload, ICP_FLAG_HIT_OBJ};
use crate::icp::socket::{Answer, Round, RoundTable, Rounds};
use crate::runtime::Runtime;
use crate::stats::QueryMethod;
use canopy_config::config::IcpMode;

/// The dynamic query timeout stays within these bounds.
const MIN_TIMEOUT: Duration = Duration::from_millis(5);
const MAX_TIMEOUT: Duration = Duration::from_millis(2000);

/// Whether a request may be asked about: a GET without credentials, in send-receive mode,
/// with somebody to ask.
pub fn eligible(runtime: &Runtime, method: &Method, headers: &HeaderMap) -> bool {
    runtime.config.icp_mode == IcpMode::SendReceive
        && method == Method::GET
        && !headers.contains_key(http::header::AUTHORIZATION)
        && runtime
            .peers
            .iter()
            .any(|p| p.is_asked() && has_socket_for(runtime, p))
}

/// Whether the socket a peer is asked on is open: HTCP peers need `htcp_port`.
fn has_socket_for(runtime: &Runtime, peer: &PeerEntry) -> bool {
    if peer.asked_over_htcp() {
        runtime.htcp.is_some()
    } else {
        runtime.icp.is_some()
    }
}

/// Ends the round however the wait ends, the client hanging up included.
struct Registered<'a> {
    rounds: &'a Rounds,
    number: u32,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.rounds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .end(self.number);
    }
}

/// Asks every peer that takes queries about `url` (HTCP peers with the request's
/// `headers`) and returns the replies received.
pub async fn ask(runtime: &Runtime, url: &str, headers: &HeaderMap) -> Vec<Answer> {
    let config = &runtime.config;
    let dead_after = Duration::from_secs(config.icp_dead_peer_timeout_s);
    let group = runtime
        .icp
        .as_ref()
        .and_then(|icp| icp.settings.multicast)
        .map(|(group, _)| SocketAddr::new(IpAddr::V4(group), config.icp_port));
    let mut expected = HashMap::new();
    let mut htcp_expected = HashMap::new();
    let mut unicast = Vec::new();
    let mut waiting_for = HashSet::new();
    let mut averages = Vec::new();
    let mut to_group = false;
    for (index, peer) in runtime.peers.iter().enumerate() {
        let Some(addr) = peer
            .icp_addr()
            .filter(|_| peer.is_asked() && has_socket_for(runtime, peer))
        else {
            continue;
        };
        if peer.asked_over_htcp() {
            peer.stats.htcp_query_sent(dead_after);
            htcp_expected.insert(addr, (index, peer.stats.clone()));
        } else {
            if group.is_some() && peer.config.multicast_responder {
                to_group = true;
            } else {
                unicast.push(addr);
            }
            peer.stats.query_sent(dead_after);
            expected.insert(addr, (index, peer.stats.clone()));
        }
        if !peer.stats.is_dead() {
            waiting_for.insert(index);
            averages.push(peer.stats.average_reply());
        }
    }
    let (replies, mut received) = mpsc::unbounded_channel();
    let icp_round = match &runtime.icp {
        Some(icp) if !expected.is_empty() => {
            let number = icp.next_request_number();
            icp.rounds.lock().unwrap_or_else(|e| e.into_inner()).insert(
                number,
                Round {
                    method: QueryMethod::Icp,
                    url: url.to_owned(),
                    sent_at: Instant::now(),
                    expected,
                    replies: replies.clone(),
                    ended: false,
                },
            );
            let mut query = IcpMessage::query(number, url);
            if config.icp_hit_obj.0 {
                // Harmless to peers that do not know it: Squid answers such a query as any other.
                query.options |= ICP_FLAG_HIT_OBJ;
            }
            if let (true, Some(group)) = (to_group, group) {
                icp.send(&query, group).await;
            }
            for addr in unicast {
                icp.send(&query, addr).await;
            }
            Some(Registered {
                rounds: &icp.rounds,
                number,
            })
        }
        _ => None,
    };
    let htcp_round = match &runtime.htcp {
        Some(htcp) if !htcp_expected.is_empty() => {
            let number =
                htcp_querier::send_tst(htcp, runtime, url, headers, htcp_expected, replies).await;
            Some(Registered {
                rounds: &htcp.rounds,
                number,
            })
        }
        _ => {
            drop(replies);
            None
        }
    };
    if icp_round.is_none() && htcp_round.is_none() {
        return Vec::new();
    }
    let deadline =
        tokio::time::Instant::now() + query_timeout(config.icp_query_timeout_ms, &averages);
    let mut answers = Vec::new();
    while !waiting_for.is_empty() {
        match tokio::time::timeout_at(deadline, received.recv()).await {
            Ok(Some(answer)) => {
                waiting_for.remove(&answer.peer);
                let hit = answer.opcode == IcpOpcode::Hit;
                answers.push(answer);
                if hit {
                    break;
                }
            }
            // The socket was retired by a reload, or the query timeout passed: end with what
            // has come (the peers still silent count their timeouts when the round ends).
            Ok(None) | Err(_) => break,
        }
    }
    // Dead peers that answered meanwhile count too.
    while let Ok(answer) = received.try_recv() {
        answers.push(answer);
    }
    answers
}

/// Fixed when the admin set it; otherwise twice the average reply time of the live peers
/// asked, within 5 ms and 2 s (2 s until they have replied at all).
fn query_timeout(fixed_ms: u64, averages: &[Option<Duration>]) -> Duration {
    if fixed_ms > 0 {
        return Duration::from_millis(fixed_ms);
    }
    let known: Vec<Duration> = averages.iter().flatten().copied().collect();
    if known.is_empty() {
        return MAX_TIMEOUT;
    }
    let mean = known.iter().sum::<Duration>() / known.len() as u32;
    (mean * 2).clamp(MIN_TIMEOUT, MAX_TIMEOUT)
}

/// What became of a reply.
#[derive(Debug, PartialEq, Eq)]
enum Settled {
    /// It answered a round under way.
    InTime,
    /// It answered a round already over: counted by its opcode and as late.
    Late,
    /// It answered nothing we are waiting for or remember asking.
    Ignored,
}

/// Hands a reply to the round waiting for it, or counts it as late. A reply is matched by
/// its request number, URL and source address and port, whether the round is under way or
/// over; only a round under way is told of it.
fn settle(table: &mut RoundTable, message: &IcpMessage, from: SocketAddr) -> Settled {
    let Some(round) = table
        .rounds
        .get_mut(&message.request_number)
        .filter(|round| round.url == message.payload.url())
    else {
        return Settled::Ignored;
    };
    let Some((peer, stats)) = round.expected.remove(&from) else {
        return Settled::Ignored;
    };
    if round.ended {
        stats.reply_late(message.opcode);
        return Settled::Late;
    }
    let elapsed = round.sent_at.elapsed();
    stats.reply_in_time(message.opcode, elapsed);
    let (opcode, object) = match &message.payload {
        IcpPayload::HitObj { object, .. } => (IcpOpcode::Hit, Some(Bytes::copy_from_slice(object))),
        _ => (message.opcode, None),
    };
    let _ = round.replies.send(Answer {
        peer,
        from,
        opcode,
        elapsed,
        object,
    });
    Settled::InTime
}

/// A reply arrived: hand it to the round waiting for it, or count it as late or ignored.
/// Any reply from a peer shows it is alive.
pub fn take_reply(rounds: &Rounds, runtime: &Runtime, message: &IcpMessage, from: SocketAddr) {
    let from = SocketAddr::new(peers::canonical(from.ip()), from.port());
    let settled = settle(
        &mut rounds.lock().unwrap_or_else(|e| e.into_inner()),
        message,
        from,
    );
    if settled != Settled::Ignored {
        return;
    }
    runtime.stats.icp.replies_ignored.fetch_add(1, Relaxed);
    if let Some(peer) = peers::by_address(&runtime.peers, from.ip())
        .filter(|peer| peer.config.icp_port == from.port())
    {
        peer.stats.reply_seen();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::PeerStats;
    use std::sync::Arc;

    const URL: &str = "http://example.com/a";

    /// A round of request 7 asking two peers, and their counters.
    fn round_of_two(table: &mut RoundTable) -> [(SocketAddr, Arc<PeerStats>); 2] {
        let peers = ["127.0.0.2:3130", "127.0.0.3:3130"]
            .map(|a| (a.parse().unwrap(), Arc::new(PeerStats::default())));
        for (_, stats) in &peers {
            stats.query_sent(Duration::from_secs(10));
        }
        let (replies, _) = mpsc::unbounded_channel();
        table.insert(
            7,
            Round {
                method: QueryMethod::Icp,
                url: URL.to_owned(),
                sent_at: Instant::now(),
                expected: peers
                    .iter()
                    .enumerate()
                    .map(|(i, (addr, stats))| (*addr, (i, stats.clone())))
                    .collect(),
                replies,
                ended: false,
            },
        );
        peers
    }

    fn counts(stats: &PeerStats) -> (u64, u64, u64, u64, u64) {
        let load = |c: &std::sync::atomic::AtomicU64| c.load(Relaxed);
        (
            load(&stats.icp_queries),
            load(&stats.icp_hit),
            load(&stats.icp_miss),
            load(&stats.icp_timeouts),
            load(&stats.icp_late),
        )
    }

    #[test]
    fn a_reply_after_a_hit_ended_the_round_counts_as_its_opcode_and_as_late() {
        let mut table = RoundTable::default();
        let [(first, fast), (second, slow)] = round_of_two(&mut table);
        let hit = IcpMessage::reply(IcpOpcode::Hit, 7, URL);
        assert_eq!(settle(&mut table, &hit, first), Settled::InTime);
        table.end(7);
        assert_eq!(counts(&slow).3, 1, "silent so far");
        let miss = IcpMessage::reply(IcpOpcode::Miss, 7, URL);
        assert_eq!(settle(&mut table, &miss, second), Settled::Late);
        assert_eq!(counts(&fast), (1, 1, 0, 0, 0));
        assert_eq!(
            counts(&slow),
            (1, 0, 1, 0, 1),
            "queries, hit, miss, timeouts, late"
        );
        assert_eq!(
            settle(&mut table, &miss, second),
            Settled::Ignored,
            "one reply per query"
        );
    }

    #[test]
    fn only_a_peer_that_never_replied_counts_a_timeout() {
        let mut table = RoundTable::default();
        let [(first, answered), (_, silent)] = round_of_two(&mut table);
        let miss = IcpMessage::reply(IcpOpcode::Miss, 7, URL);
        assert_eq!(settle(&mut table, &miss, first), Settled::InTime);
        table.end(7);
        table.end(7);
        assert_eq!(counts(&answered), (1, 0, 1, 0, 0));
        assert_eq!(counts(&silent), (1, 0, 0, 1, 0));
    }

    #[test]
    fn a_reply_that_matches_no_round_is_ignored() {
        let mut table = RoundTable::default();
        let [(first, stats), _] = round_of_two(&mut table);
        let other_url = IcpMessage::reply(IcpOpcode::Miss, 7, "http://example.com/b");
        let other_number = IcpMessage::reply(IcpOpcode::Miss, 8, URL);
        let stranger = "127.0.0.9:3130".parse().unwrap();
        let miss = IcpMessage::reply(IcpOpcode::Miss, 7, URL);
        assert_eq!(settle(&mut table, &other_url, first), Settled::Ignored);
        assert_eq!(settle(&mut table, &other_number, first), Settled::Ignored);
        assert_eq!(settle(&mut table, &miss, stranger), Settled::Ignored);
        assert_eq!(counts(&stats), (1, 0, 0, 0, 0));
    }

    #[test]
    fn the_timeout_is_fixed_or_twice_the_average() {
        assert_eq!(query_timeout(300, &[]), Duration::from_millis(300));
        assert_eq!(query_timeout(0, &[]), MAX_TIMEOUT);
        assert_eq!(query_timeout(0, &[None]), MAX_TIMEOUT);
        let ms = Duration::from_millis;
        assert_eq!(
            query_timeout(0, &[Some(ms(10)), Some(ms(30)), None]),
            ms(40)
        );
        assert_eq!(
            query_timeout(0, &[Some(Duration::from_micros(100))]),
            MIN_TIMEOUT
        );
        assert_eq!(query_timeout(0, &[Some(ms(5000))]), MAX_TIMEOUT);
    }
}
