//! The ICP socket of one proxy, a field of the runtime, and the rounds of our queries
//! waiting on it (the loop that receives on it is `serve.rs`). Queries and replies leave
//! from it and arrive on it, because Squid knows a peer's datagrams by their source address
//! *and* port. With multicast on, a second socket joined to the group takes the group's
//! queries; answers still leave from the first one.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

use crate::icp::codec::{IcpMessage, IcpOpcode};
use crate::stats::{PeerStats, QueryMethod};
use canopy_config::config::{Config, IcpMode};

/// The settings that decide which sockets are bound; a reload that changes none of them
/// keeps the socket as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcpSettings {
    pub listen: SocketAddr,
    /// Group and TTL, when queries go to a multicast group.
    pub multicast: Option<(Ipv4Addr, u8)>,
}

impl IcpSettings {
    /// `None` when ICP is disabled.
    pub fn of(config: &Config) -> Option<IcpSettings> {
        (config.icp_mode != IcpMode::Disabled).then(|| IcpSettings {
            listen: config.icp_listen(),
            multicast: config
                .icp_multicast_enabled
                .0
                .then_some((config.icp_multicast_group, config.icp_multicast_ttl)),
        })
    }
}

/// The ICP socket could not be bound, or joined to its multicast group.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("cannot bind the ICP socket on {listen}: {source}")]
    Unicast {
        listen: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind the ICP socket on {listen} (multicast group {group}): {source}")]
    Multicast {
        listen: SocketAddr,
        group: Ipv4Addr,
        #[source]
        source: io::Error,
    },
}

/// A query of ours whose replies are awaited (an ICP query, or an HTCP TST).
pub struct Round {
    pub method: QueryMethod,
    pub url: String,
    pub sent_at: Instant,
    /// The peers asked, by the address and port their replies must come from.
    pub expected: HashMap<SocketAddr, (usize, Arc<PeerStats>)>,
    pub replies: mpsc::UnboundedSender<Answer>,
    /// Over: the peers still in `expected` were counted as timeouts, and a reply from one
    /// of them now is late.
    pub ended: bool,
}

/// A peer's reply to our query, in the order replies arrived.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Index of the peer in the runtime's peer table.
    pub peer: usize,
    pub from: SocketAddr,
    /// A HIT_OBJ is a `Hit` here, with its object.
    pub opcode: IcpOpcode,
    /// From our query to this reply.
    pub elapsed: Duration,
    /// The object a HIT_OBJ reply carried, not yet checked.
    pub object: Option<Bytes>,
}

/// Rounds by request number: those under way, and those ended within [`LATE_WINDOW`],
/// kept so that a late reply is still counted by its peer and opcode.
#[derive(Default)]
pub struct RoundTable {
    pub rounds: HashMap<u32, Round>,
    /// Ended rounds, oldest first.
    ended: VecDeque<(Instant, u32)>,
}

/// How long an ended round waits for late replies.
pub const LATE_WINDOW: Duration = Duration::from_secs(30);

impl RoundTable {
    pub fn insert(&mut self, number: u32, round: Round) {
        let now = Instant::now();
        while let Some(&(ended_at, old)) = self.ended.front() {
            if now.duration_since(ended_at) < LATE_WINDOW {
                break;
            }
            self.ended.pop_front();
            self.rounds.remove(&old);
        }
        self.rounds.insert(number, round);
    }

    /// The round is over: every peer that has not replied counts a timeout, taken back
    /// if its reply comes late.
    pub fn end(&mut self, number: u32) {
        let Some(round) = self.rounds.get_mut(&number).filter(|r| !r.ended) else {
            return;
        };
        round.ended = true;
        for (_, stats) in round.expected.values() {
            stats.timed_out(round.method);
        }
        self.ended.push_back((Instant::now(), number));
    }

    /// Ends every round and forgets them all (the socket is let go).
    pub fn clear(&mut self) {
        let numbers: Vec<u32> = self.rounds.keys().copied().collect();
        for number in numbers {
            self.end(number);
        }
        self.rounds.clear();
        self.ended.clear();
    }
}

pub type Rounds = Mutex<RoundTable>;

pub struct IcpSocket {
    pub settings: IcpSettings,
    pub local: SocketAddr,
    pub socket: Arc<UdpSocket>,
    pub rounds: Arc<Rounds>,
    next_request: Arc<AtomicU32>,
    group_socket: Mutex<Option<UdpSocket>>,
    stop: watch::Sender<bool>,
}

impl IcpSocket {
    /// Binds what `settings` needs, off to the side. When `current` listens on the same
    /// address its socket (and the rounds waiting on it) carry over, so nothing is dropped.
    pub fn prepare(
        settings: IcpSettings,
        current: Option<&IcpSocket>,
    ) -> Result<IcpSocket, BindError> {
        IcpSocket::bind(settings, current).map_err(|source| match settings.multicast {
            Some((group, _)) => BindError::Multicast {
                listen: settings.listen,
                group,
                source,
            },
            None => BindError::Unicast {
                listen: settings.listen,
                source,
            },
        })
    }

    fn bind(settings: IcpSettings, current: Option<&IcpSocket>) -> io::Result<IcpSocket> {
        let (socket, rounds, next_request) = match current {
            Some(current) if current.settings.listen == settings.listen => {
                if let (Some((group, _)), true) =
                    (current.settings.multicast, current.joins_itself())
                {
                    // Rejoined below if the group stays; a failure means it was not joined.
                    let _ = SockRef::from(&*current.socket)
                        .leave_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED);
                }
                (
                    current.socket.clone(),
                    current.rounds.clone(),
                    current.next_request.clone(),
                )
            }
            _ => (
                Arc::new(bind_unicast(
                    settings.listen,
                    Sharing::of(settings.listen, current.map(|c| c.settings.listen)),
                )?),
                Arc::default(),
                Arc::new(AtomicU32::new(first_request_number())),
            ),
        };
        let local = socket.local_addr()?;
        let group_socket = match settings.multicast {
            Some((group, ttl)) => {
                let sending = SockRef::from(&*socket);
                sending.set_multicast_ttl_v4(u32::from(ttl))?;
                match settings.listen.ip() {
                    IpAddr::V4(ip) if !ip.is_unspecified() => {
                        sending.set_multicast_if_v4(&ip)?;
                        // Other proxies on this host, on their own addresses, are members too.
                        sending.set_multicast_loop_v4(true)?;
                        Some(join_group(group, settings.listen)?)
                    }
                    _ => {
                        // Bound to every address, this socket takes the group's datagrams
                        // itself (a second socket on the port could not be bound); without
                        // loopback it does not hear its own queries.
                        sending.set_multicast_loop_v4(false)?;
                        sending.join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)?;
                        None
                    }
                }
            }
            None => None,
        };
        let (stop, _) = watch::channel(false);
        Ok(IcpSocket {
            settings,
            local,
            socket,
            rounds,
            next_request,
            group_socket: Mutex::new(group_socket),
            stop,
        })
    }

    /// Whether the group is joined on the ICP socket itself (bound to every address).
    fn joins_itself(&self) -> bool {
        self.settings.listen.ip().is_unspecified()
    }

    /// The socket joined to the multicast group, taken once by the receive loop that serves it.
    pub(crate) fn take_group_socket(&self) -> Option<UdpSocket> {
        self.group_socket
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Told when the socket is retired; its receive loops end then.
    pub(crate) fn retired(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Stops its receive loops. Unless `successor` took over the socket, rounds still
    /// waiting end now with the replies they have, and the port is let go.
    pub fn retire(&self, successor: Option<&IcpSocket>) {
        let _ = self.stop.send(true);
        let kept = successor.is_some_and(|next| Arc::ptr_eq(&next.socket, &self.socket));
        if !kept {
            self.rounds
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
        }
    }

    pub fn next_request_number(&self) -> u32 {
        self.next_request.fetch_add(1, Relaxed)
    }

    pub async fn send(&self, message: &IcpMessage, to: SocketAddr) {
        match message.encode() {
            Ok(bytes) => {
                if let Err(e) = self.socket.send_to(&bytes, to).await {
                    tracing::debug!(%to, "ICP send failed: {e}");
                }
            }
            Err(e) => tracing::debug!(%to, "ICP message not sent: {e}"),
        }
    }
}

/// Who else may hold the address a UDP socket (ICP's, HTCP's) binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// Nobody: the bind fails when any socket holds the port there (another proxy included).
    Alone,
    /// This proxy's socket of the same kind, on the same port: a reload that changes
    /// `bind_address` binds the new address before the old socket is let go.
    BesideOurs,
}

impl Sharing {
    /// How a socket on `listen` is bound, given where the one it replaces listens.
    pub fn of(listen: SocketAddr, current: Option<SocketAddr>) -> Sharing {
        match current {
            Some(current) if current.port() == listen.port() => Sharing::BesideOurs,
            _ => Sharing::Alone,
        }
    }
}

/// Binds a UDP socket with SO_REUSEPORT, so that a reload can bind the same port on another
/// address (0.0.0.0 and 127.0.0.1 overlap) while the socket it replaces still holds it, as
/// the HTTP listener does. SO_REUSEPORT would also let a second proxy share the port
/// without a word, so unless `sharing` says the port is ours, a socket without it is bound
/// first: it fails whenever anything holds the port.
pub fn bind_unicast(addr: SocketAddr, sharing: Sharing) -> io::Result<UdpSocket> {
    if sharing == Sharing::Alone {
        new_udp_socket(addr, false)?;
    }
    UdpSocket::from_std(new_udp_socket(addr, true)?.into())
}

fn new_udp_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(reuse_port)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A socket on the group's address and our ICP port, joined on the interface of our one
/// address. Several proxies on one machine may each hold one (SO_REUSEADDR).
fn join_group(group: Ipv4Addr, listen: SocketAddr) -> io::Result<UdpSocket> {
    let interface = match listen.ip() {
        IpAddr::V4(ip) => ip,
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SocketAddr::new(IpAddr::V4(group), listen.port()).into())?;
    socket.join_multicast_v4(&group, &interface)?;
    UdpSocket::from_std(socket.into())
}

/// Request numbers start somewhere unpredictable, so a restarted proxy does not take a
/// late reply to its former self's query for one of its own.
fn first_request_number() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    nanos ^ std::process::id().rotate_left(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(listen: &str, multicast: bool) -> IcpSettings {
        IcpSettings {
            listen: listen.parse().unwrap(),
            multicast: multicast.then_some((Ipv4Addr::new(239, 255, 31, 39), 1)),
        }
    }

    #[tokio::test]
    async fn multicast_works_bound_to_one_address_or_to_every_address() {
        let one = IcpSocket::prepare(settings("127.0.0.1:0", true), None).unwrap();
        assert!(one.group_socket.lock().unwrap().is_some());
        let every = IcpSocket::prepare(settings("0.0.0.0:0", true), None).unwrap();
        assert!(every.group_socket.lock().unwrap().is_none());
        assert_eq!(every.local.ip(), IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    }

    fn free_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    #[tokio::test]
    async fn the_same_address_keeps_its_socket_and_another_gets_a_new_one() {
        let listen = format!("127.0.0.1:{}", free_port());
        let first = IcpSocket::prepare(settings(&listen, false), None).unwrap();
        let next = IcpSocket::prepare(settings(&listen, true), Some(&first)).unwrap();
        assert!(Arc::ptr_eq(&first.socket, &next.socket));
        assert!(Arc::ptr_eq(&first.rounds, &next.rounds));
        let elsewhere = format!("127.0.0.1:{}", free_port());
        let moved = IcpSocket::prepare(settings(&elsewhere, false), Some(&next)).unwrap();
        assert!(!Arc::ptr_eq(&moved.socket, &next.socket));
        let taken = IcpSocket::prepare(settings(&elsewhere, false), None);
        assert!(taken.is_err(), "the port is taken");
    }
}
