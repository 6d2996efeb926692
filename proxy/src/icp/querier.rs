//! One round of ICP queries for a miss: every peer that takes queries is asked at once (or
//! the multicast group once), and the live ones are waited for until the first HIT, the
//! last answer or the query timeout. Dead peers are asked but not waited for.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use http::{HeaderMap, Method};
use tokio::sync::mpsc;

use crate::hierarchy::peers;
use crate::icp::codec::{IcpMessage, IcpOpcode};
use crate::icp::socket::{Answer, Round, Rounds};
use crate::runtime::Runtime;
use canopy_config::config::IcpMode;

/// The dynamic query timeout stays within these bounds.
const MIN_TIMEOUT: Duration = Duration::from_millis(5);
const MAX_TIMEOUT: Duration = Duration::from_millis(2000);

/// Whether a request may be asked about over ICP: a GET without credentials, in
/// send-receive mode, with somebody to ask.
pub fn eligible(runtime: &Runtime, method: &Method, headers: &HeaderMap) -> bool {
    runtime.config.icp_mode == IcpMode::SendReceive
        && runtime.icp.is_some()
        && method == Method::GET
        && !headers.contains_key(http::header::AUTHORIZATION)
        && runtime.peers.iter().any(|p| p.takes_queries())
}

/// Removes the round from the table however the wait ends, the client hanging up included.
struct Registered<'a> {
    rounds: &'a Rounds,
    number: u32,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.rounds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.number);
    }
}

/// Asks every peer that takes queries about `url` and returns the replies received.
pub async fn ask(runtime: &Runtime, url: &str) -> Vec<Answer> {
    let Some(icp) = &runtime.icp else {
        return Vec::new();
    };
    let config = &runtime.config;
    let dead_after = Duration::from_secs(config.icp_dead_peer_timeout_s);
    let group = icp
        .settings
        .multicast
        .map(|(group, _)| SocketAddr::new(IpAddr::V4(group), config.icp_port));
    let mut expected = HashMap::new();
    let mut unicast = Vec::new();
    let mut waiting_for = HashSet::new();
    let mut averages = Vec::new();
    let mut to_group = false;
    for (index, peer) in runtime.peers.iter().enumerate() {
        let Some(addr) = peer.icp_addr().filter(|_| peer.takes_queries()) else {
            continue;
        };
        if group.is_some() && peer.config.multicast_responder {
            to_group = true;
        } else {
            unicast.push(addr);
        }
        if !peer.stats.is_dead() {
            waiting_for.insert(addr);
            averages.push(peer.stats.average_reply());
        }
        peer.stats.query_sent(dead_after);
        expected.insert(addr, (index, peer.stats.clone()));
    }
    if expected.is_empty() {
        return Vec::new();
    }
    let number = icp.next_request_number();
    let (replies, mut received) = mpsc::unbounded_channel();
    icp.rounds.lock().unwrap_or_else(|e| e.into_inner()).insert(
        number,
        Round {
            url: url.to_owned(),
            sent_at: Instant::now(),
            expected: expected.clone(),
            replies,
        },
    );
    let _registered = Registered {
        rounds: &icp.rounds,
        number,
    };
    let query = IcpMessage::query(number, url);
    if let (true, Some(group)) = (to_group, group) {
        icp.send(&query, group).await;
    }
    for addr in unicast {
        icp.send(&query, addr).await;
    }
    let deadline =
        tokio::time::Instant::now() + query_timeout(config.icp_query_timeout_ms, &averages);
    let mut answers = Vec::new();
    while !waiting_for.is_empty() {
        match tokio::time::timeout_at(deadline, received.recv()).await {
            Ok(Some(answer)) => {
                waiting_for.remove(&answer.from);
                answers.push(answer);
                if answer.opcode == IcpOpcode::Hit {
                    break;
                }
            }
            // The socket was retired by a reload: end with what has come.
            Ok(None) => break,
            Err(_) => {
                for addr in &waiting_for {
                    if let Some((_, stats)) = expected.get(addr) {
                        stats.icp_timeouts.fetch_add(1, Relaxed);
                    }
                }
                break;
            }
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

/// A reply arrived: hand it to the round waiting for it, or count it as late or ignored.
/// Any reply from a peer shows it is alive.
pub fn take_reply(rounds: &Rounds, runtime: &Runtime, message: &IcpMessage, from: SocketAddr) {
    let from = SocketAddr::new(peers::canonical(from.ip()), from.port());
    let mut rounds = rounds.lock().unwrap_or_else(|e| e.into_inner());
    let matched = rounds
        .get_mut(&message.request_number)
        .filter(|round| round.url == message.payload.url())
        .and_then(|round| {
            let (index, stats) = round.expected.remove(&from)?;
            Some((round, index, stats))
        });
    if let Some((round, peer, stats)) = matched {
        let opcode = match message.opcode {
            IcpOpcode::HitObj => IcpOpcode::Hit,
            other => other,
        };
        let elapsed = round.sent_at.elapsed();
        stats.reply_in_time(opcode, elapsed);
        let _ = round.replies.send(Answer {
            peer,
            from,
            opcode,
            elapsed,
        });
        return;
    }
    drop(rounds);
    match peers::by_address(&runtime.peers, from.ip())
        .filter(|peer| peer.config.icp_port == from.port())
    {
        Some(peer) => {
            peer.stats.icp_late_or_ignored.fetch_add(1, Relaxed);
            peer.stats.reply_seen();
        }
        None => {
            runtime.stats.icp.replies_ignored.fetch_add(1, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
