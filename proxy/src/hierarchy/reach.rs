//! Where the proxy may connect, and opening its upstream connections. Ports are checked on
//! the request (`safe_ports`, `ssl_ports`); a destination is checked on the very addresses
//! its host resolves to, just before connecting, so no spelling of an address gets past
//! (`127.1`, `2130706433`, `0x7f000001`, `[::1]`, `localhost`, a name that resolves to it).
//! A refused destination is never connected to: its error page cannot tell whether
//! anything listens there.

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

use crate::http::errors::ProxyError;
use canopy_config::config::{Config, PortList};

/// How connections are made: from which address, and how long connecting may take.
#[derive(Debug, Clone, Copy)]
pub struct ConnectSettings {
    pub local_address: Option<IpAddr>,
    pub connect_timeout: Duration,
}

/// Why a request may not go where it asks to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("port {port} is not in safe_ports ({allowed})")]
    UnsafePort { port: u16, allowed: PortList },
    #[error("CONNECT to port {port} is not allowed: it is not in ssl_ports ({allowed})")]
    TunnelPort { port: u16, allowed: PortList },
    #[error("{addr} is this proxy's own listener")]
    ThisProxy { addr: SocketAddr },
    #[error("{addr} is this proxy's console (manager_listen)")]
    Console { addr: SocketAddr },
    #[error("{addr} is a loopback address, and deny_to_localhost is on")]
    Loopback { addr: SocketAddr },
}

impl From<Denied> for ProxyError {
    fn from(denied: Denied) -> ProxyError {
        ProxyError::forbidden(format!("Access denied: {denied}."))
    }
}

/// The rules of one config version for where requests may go.
#[derive(Debug, Clone)]
pub struct Reach {
    safe_ports: PortList,
    ssl_ports: PortList,
    /// This proxy's HTTP listener; the unspecified address when it listens on every one.
    listener: SocketAddr,
    console: SocketAddr,
    deny_to_localhost: bool,
}

impl Reach {
    pub fn of(config: &Config) -> Reach {
        Reach {
            safe_ports: config.safe_ports.clone(),
            ssl_ports: config.ssl_ports.clone(),
            listener: config.http_listen(),
            console: config.manager_listen,
            deny_to_localhost: config.deny_to_localhost.0,
        }
    }

    /// Whether a plain HTTP request may go to `port`.
    pub fn check_port(&self, port: u16) -> Result<(), Denied> {
        if self.safe_ports.contains(port) {
            return Ok(());
        }
        Err(Denied::UnsafePort {
            port,
            allowed: self.safe_ports.clone(),
        })
    }

    /// Whether CONNECT may open a tunnel to `port`.
    pub fn check_tunnel_port(&self, port: u16) -> Result<(), Denied> {
        if self.ssl_ports.contains(port) {
            return Ok(());
        }
        Err(Denied::TunnelPort {
            port,
            allowed: self.ssl_ports.clone(),
        })
    }

    /// Whether `addr`, about to be connected to, may be. This proxy and its console are
    /// refused always; the rest of loopback when `deny_to_localhost` is on.
    pub fn check_address(&self, addr: SocketAddr) -> Result<(), Denied> {
        let ip = canonical(addr.ip());
        let addr = SocketAddr::new(ip, addr.port());
        if addr.port() == self.listener.port() && reaches(self.listener.ip(), ip) {
            return Err(Denied::ThisProxy { addr });
        }
        if addr.port() == self.console.port() && reaches(self.console.ip(), ip) {
            return Err(Denied::Console { addr });
        }
        if self.deny_to_localhost && (ip.is_loopback() || ip.is_unspecified()) {
            return Err(Denied::Loopback { addr });
        }
        Ok(())
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// Whether connecting to `dest` may reach a socket listening on `listening` (same port).
/// Erring towards yes: the unspecified address reaches this host; every loopback address
/// is a way of writing a loopback listener's; and a listener on every address is reached
/// at each address of this machine.
fn reaches(listening: IpAddr, dest: IpAddr) -> bool {
    let listening = canonical(listening);
    dest == listening
        || dest.is_unspecified()
        || (listening.is_loopback() && dest.is_loopback())
        || (listening.is_unspecified() && (dest.is_loopback() || is_own_address(dest)))
}

/// Whether `ip` is one of this machine's addresses: only those can be bound.
fn is_own_address(ip: IpAddr) -> bool {
    UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Why an upstream connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Denied(#[from] Denied),
    #[error("cannot resolve {host}")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("{host} has no address")]
    NoAddress { host: String },
    #[error("cannot bind {local}")]
    Bind {
        local: IpAddr,
        #[source]
        source: io::Error,
    },
    #[error("cannot connect to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {addr} timed out after {} ms", .timeout.as_millis())]
    TimedOut { addr: SocketAddr, timeout: Duration },
}

impl ConnectError {
    /// The message with its cause, for an error page.
    pub fn describe(&self) -> String {
        match std::error::Error::source(self) {
            Some(source) => format!("{self}: {source}"),
            None => self.to_string(),
        }
    }
}

impl From<ConnectError> for ProxyError {
    fn from(error: ConnectError) -> ProxyError {
        match error {
            ConnectError::Denied(denied) => denied.into(),
            ConnectError::TimedOut { .. } => ProxyError::gateway_timeout(error.to_string()),
            other => ProxyError::bad_gateway(other.describe()),
        }
    }
}

/// Opens a TCP connection to `host:port` from this proxy's address. With `reach`, every
/// address the host resolves to is checked before any is connected to; a parent, named
/// by the administrator, is connected to without it.
pub async fn connect(
    host: &str,
    port: u16,
    settings: ConnectSettings,
    reach: Option<&Reach>,
) -> Result<TcpStream, ConnectError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| ConnectError::Resolve {
            host: host.to_owned(),
            source,
        })?
        .collect();
    if let Some(reach) = reach {
        for addr in &addrs {
            reach.check_address(*addr)?;
        }
    }
    // Each address gets its share of the time, as hyper's connector shares it.
    let timeout = settings.connect_timeout / u32::try_from(addrs.len()).unwrap_or(u32::MAX).max(1);
    let mut failure = ConnectError::NoAddress {
        host: host.to_owned(),
    };
    for addr in addrs {
        match attempt(addr, settings.local_address, timeout).await {
            Ok(stream) => return Ok(stream),
            Err(e) => failure = e,
        }
    }
    Err(failure)
}

async fn attempt(
    addr: SocketAddr,
    local: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, ConnectError> {
    let failed = |source| ConnectError::Connect { addr, source };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(failed)?;
    if let Some(local) = local.filter(|local| local.is_ipv4() == addr.is_ipv4()) {
        socket
            .bind(SocketAddr::new(local, 0))
            .map_err(|source| ConnectError::Bind { local, source })?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(addr))
        .await
        .map_err(|_| ConnectError::TimedOut { addr, timeout })?
        .map_err(failed)?;
    stream.set_nodelay(true).map_err(failed)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reach(settings: &[(&str, &str)]) -> Reach {
        let mut config = Config::default();
        config
            .set_all(settings.iter().copied())
            .expect("valid settings");
        Reach::of(&config)
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ports_follow_safe_ports_and_ssl_ports() {
        let r = reach(&[]);
        for port in [80, 443, 21, 777, 1025, 8080, 65535] {
            assert_eq!(r.check_port(port), Ok(()), "{port}");
        }
        for port in [22, 25, 110, 1024] {
            let denied = r.check_port(port).unwrap_err();
            assert!(denied.to_string().contains("safe_ports"), "{denied}");
        }
        assert_eq!(r.check_tunnel_port(443), Ok(()));
        let denied = r.check_tunnel_port(8443).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "CONNECT to port 8443 is not allowed: it is not in ssl_ports (443)"
        );
        let none = reach(&[("ssl_ports", "")]);
        assert!(none.check_tunnel_port(443).is_err());
    }

    #[test]
    fn the_proxy_and_its_console_are_refused_at_every_loopback_address() {
        let r = reach(&[
            ("bind_address", "127.0.0.1"),
            ("http_port", "3128"),
            ("manager_listen", "127.0.0.1:8080"),
        ]);
        for dest in [
            "127.0.0.1:3128",
            "127.0.0.9:3128",
            "[::1]:3128",
            "[::ffff:127.0.0.1]:3128",
            "0.0.0.0:3128",
            "[::]:3128",
        ] {
            assert!(
                matches!(r.check_address(addr(dest)), Err(Denied::ThisProxy { .. })),
                "{dest}"
            );
        }
        assert!(matches!(
            r.check_address(addr("127.0.0.1:8080")),
            Err(Denied::Console { .. })
        ));
        // Another port on this host, and the same port elsewhere, are someone else.
        for dest in ["127.0.0.1:3129", "192.0.2.1:3128", "192.0.2.1:8080"] {
            assert_eq!(r.check_address(addr(dest)), Ok(()), "{dest}");
        }
    }

    #[test]
    fn a_proxy_on_every_address_is_refused_at_its_port_on_any_local_address() {
        let r = reach(&[("bind_address", ""), ("http_port", "3128")]);
        assert!(r.check_address(addr("127.0.0.5:3128")).is_err());
        assert!(r.check_address(addr("[::1]:3128")).is_err());
        // 192.0.2.0/24 is documentation space, never this machine's.
        assert_eq!(r.check_address(addr("192.0.2.7:3128")), Ok(()));
        assert_eq!(r.check_address(addr("127.0.0.5:3129")), Ok(()));
    }

    #[test]
    fn a_proxy_on_one_public_address_is_that_address_only() {
        let r = reach(&[("bind_address", "192.0.2.7"), ("http_port", "3128")]);
        assert!(r.check_address(addr("192.0.2.7:3128")).is_err());
        assert_eq!(r.check_address(addr("192.0.2.8:3128")), Ok(()));
        assert_eq!(r.check_address(addr("127.0.0.1:3128")), Ok(()));
    }

    #[test]
    fn deny_to_localhost_refuses_all_of_loopback() {
        let open = reach(&[]);
        assert_eq!(open.check_address(addr("127.0.0.1:8000")), Ok(()));
        let closed = reach(&[("deny_to_localhost", "on")]);
        for dest in [
            "127.0.0.1:8000",
            "127.255.0.1:80",
            "[::1]:80",
            "[::ffff:127.0.0.2]:80",
            "0.0.0.0:80",
        ] {
            let denied = closed.check_address(addr(dest)).unwrap_err();
            assert!(denied.to_string().contains("deny_to_localhost"), "{dest}");
        }
        assert_eq!(closed.check_address(addr("192.0.2.1:80")), Ok(()));
    }

    #[tokio::test]
    async fn a_refused_destination_is_never_connected_to() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let r = reach(&[("deny_to_localhost", "on")]);
        let settings = ConnectSettings {
            local_address: None,
            connect_timeout: Duration::from_secs(5),
        };
        for host in [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f000001",
            "localhost",
        ] {
            let error = connect(host, port, settings, Some(&r)).await.unwrap_err();
            assert!(matches!(error, ConnectError::Denied(_)), "{host}: {error}");
        }
        let nothing = listener.accept().unwrap_err();
        assert_eq!(
            nothing.kind(),
            io::ErrorKind::WouldBlock,
            "nobody connected"
        );
        // Without the rules (a parent), the same address is connected to.
        connect("127.0.0.1", port, settings, None).await.unwrap();
        assert!(listener.accept().is_ok());
    }
}
