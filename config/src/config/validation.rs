//! The rules a whole config must keep, checked before any version is applied.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::errors::{ConfigErrors, FieldError};
use super::peers::{FleetPeering, HtcpPeer, IcpMode, PeerKind};
use super::settings::Config;
use super::values::{is_host_name, HostPort};

impl Config {
    /// Checks every rule that parsing alone cannot; returns every broken rule at once.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, key: &str, value: String, message: &str| {
            if !ok {
                errors.push(FieldError::new(key, value, message));
            }
        };
        check(
            is_host_name(&self.visible_name),
            "visible_name",
            self.visible_name.clone(),
            "expected a host name: letters, digits, dots, dashes and underscores, beginning \
             with a letter or digit, at most 253 characters",
        );
        for (key, port) in [("http_port", self.http_port), ("icp_port", self.icp_port)] {
            check(
                port != 0,
                key,
                port.to_string(),
                "expected a port number from 1 to 65535",
            );
        }
        check(
            self.htcp_port == 0 || self.htcp_port != self.icp_port,
            "htcp_port",
            self.htcp_port.to_string(),
            &format!(
                "expected 0 (off) or a UDP port other than icp_port's ({})",
                self.icp_port
            ),
        );
        check(
            self.manager_listen.port() != 0,
            "manager_listen",
            self.manager_listen.to_string(),
            "expected an address with a port from 1 to 65535",
        );
        let (store, store_size) = if self.disk_cache_on() {
            ("cache_dir_size", self.cache_dir_size)
        } else {
            ("cache_mem", self.cache_mem)
        };
        check(
            self.max_object_size <= store_size,
            "max_object_size",
            self.max_object_size.to_string(),
            &format!("must not be larger than {store} ({store_size})"),
        );
        check(
            self.max_object_size_in_memory <= self.cache_mem || self.cache_mem.0 == 0,
            "max_object_size_in_memory",
            self.max_object_size_in_memory.to_string(),
            &format!("must not be larger than cache_mem ({})", self.cache_mem),
        );
        check(
            self.heuristic_lm_factor.is_finite()
                && (0.0..=10.0).contains(&self.heuristic_lm_factor),
            "heuristic_lm_factor",
            self.heuristic_lm_factor.to_string(),
            "expected a fraction from 0 to 10, such as 0.1",
        );
        check(
            self.heuristic_min_s <= self.heuristic_max_s,
            "heuristic_min_s",
            self.heuristic_min_s.to_string(),
            "must not be larger than heuristic_max_s",
        );
        check(
            self.connect_timeout_ms > 0 && self.connect_timeout_ms <= 600_000,
            "connect_timeout_ms",
            self.connect_timeout_ms.to_string(),
            "expected 1 to 600000 milliseconds",
        );
        check(
            self.read_timeout_ms > 0 && self.read_timeout_ms <= 3_600_000,
            "read_timeout_ms",
            self.read_timeout_ms.to_string(),
            "expected 1 to 3600000 milliseconds",
        );
        let client_timeouts = [
            ("client_idle_timeout_s", self.client_idle_timeout_s, 86_400),
            ("request_timeout_s", self.request_timeout_s, 3_600),
            ("tunnel_idle_timeout_s", self.tunnel_idle_timeout_s, 86_400),
            ("client_lifetime_s", self.client_lifetime_s, 604_800),
        ];
        for (key, seconds, most) in client_timeouts {
            check(
                (1..=most).contains(&seconds),
                key,
                seconds.to_string(),
                &format!("expected 1 to {most} seconds"),
            );
        }
        check(
            self.icp_multicast_group.is_multicast(),
            "icp_multicast_group",
            self.icp_multicast_group.to_string(),
            "expected a multicast group in 224.0.0.0/4",
        );
        check(
            self.icp_multicast_ttl >= 1,
            "icp_multicast_ttl",
            self.icp_multicast_ttl.to_string(),
            "expected a TTL from 1 to 255",
        );
        check(
            self.icp_query_timeout_ms <= 60_000,
            "icp_query_timeout_ms",
            self.icp_query_timeout_ms.to_string(),
            "expected 0 (dynamic) or up to 60000 milliseconds",
        );
        check(
            self.icp_dead_peer_timeout_s >= 1,
            "icp_dead_peer_timeout_s",
            self.icp_dead_peer_timeout_s.to_string(),
            "expected at least 1 second",
        );
        check(
            self.icp_hit_obj_max_bytes <= 16_361,
            "icp_hit_obj_max_bytes",
            self.icp_hit_obj_max_bytes.to_string(),
            "expected at most 16361 bytes: one ICP datagram (16384) less its header, the object's size and a URL's NUL",
        );
        check(
            (1..=31_536_000).contains(&self.digest_rebuild_period_s),
            "digest_rebuild_period_s",
            self.digest_rebuild_period_s.to_string(),
            "expected from 1 second to a year (31536000)",
        );
        check(
            (1..=32).contains(&self.digest_bits_per_entry),
            "digest_bits_per_entry",
            self.digest_bits_per_entry.to_string(),
            "expected from 1 to 32 bits",
        );
        check(
            !(self.never_direct.0 && self.always_direct.0),
            "always_direct",
            "true".to_owned(),
            "cannot be on together with never_direct",
        );
        check(
            self.fail_threshold >= 1,
            "fail_threshold",
            self.fail_threshold.to_string(),
            "expected at least 1 failure",
        );
        check(
            self.retry_time_s >= 1,
            "retry_time_s",
            self.retry_time_s.to_string(),
            "expected at least 1 second",
        );
        errors.extend(self.fleet_peering_error());
        for (i, rule) in self.parent_rules.iter().enumerate() {
            errors.extend(rule.errors(&format!("parent_rules.{}", i + 1)));
        }
        errors.extend(self.parents.carp_name_error("parents", self.round_robin));
        errors.extend(self.peer_errors());
        errors.extend(self.own_listener_errors());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    /// Whether `host:port` is this proxy's own listener (`http_port` on `bind_address`, or on
    /// a loopback address when it listens on every address). Another proxy on the same
    /// host, on another port, is a legitimate peer.
    pub fn is_own_listener(&self, host: &str, port: u16) -> bool {
        if port != self.http_port {
            return false;
        }
        let ip: Option<IpAddr> = if host.eq_ignore_ascii_case("localhost") {
            Some(IpAddr::from([127, 0, 0, 1]))
        } else {
            host.parse().ok()
        };
        match (ip, self.bind_address.0) {
            (Some(ip), Some(bound)) => ip == bound,
            (Some(ip), None) => ip.is_loopback() || ip.is_unspecified(),
            (None, _) => false,
        }
    }

    /// A peer or parent that is this proxy would send its misses back to itself.
    fn own_listener_errors(&self) -> Vec<FieldError> {
        let message = |addr: &str| {
            format!("{addr} is this proxy's own listener (http_port); a peer or parent must be another cache")
        };
        let mut errors = Vec::new();
        for peer in &self.peers {
            if self.is_own_listener(&peer.host, peer.http_port) {
                let addr = format!("{}:{}", peer.host, peer.http_port);
                errors.push(FieldError::new(
                    &format!("peers.{}.host", peer.name),
                    &peer.host,
                    message(&addr),
                ));
            }
        }
        let lists = std::iter::once(("parents".to_owned(), &self.parents)).chain(
            self.parent_rules
                .iter()
                .enumerate()
                .map(|(i, rule)| (format!("parent_rules.{}", i + 1), &rule.parents)),
        );
        for (key, list) in lists {
            for parent in &list.0 {
                if self.is_own_listener(&parent.addr.host, parent.addr.port) {
                    let addr = parent.addr.to_string();
                    errors.push(FieldError::new(&key, &addr, message(&addr)));
                }
            }
        }
        errors
    }

    /// Fleet siblings are found by asking them, and a home node is useless to a proxy
    /// that always goes direct.
    fn fleet_peering_error(&self) -> Option<FieldError> {
        let message = match self.fleet_peering {
            FleetPeering::Siblings
                if self.icp_mode != IcpMode::SendReceive && self.htcp_port == 0 =>
            {
                "siblings are asked whether they hold an object: expected icp_mode \
                 send-receive, or an htcp_port"
            }
            FleetPeering::Carp if self.always_direct.0 => {
                "carp sends misses to their home node: cannot be on together with always_direct"
            }
            _ => return None,
        };
        Some(FieldError::new(
            "fleet_peering",
            self.fleet_peering,
            message,
        ))
    }

    fn peer_errors(&self) -> Vec<FieldError> {
        /// A peer's own connect timeout is bounded as `connect_timeout_ms` is.
        const MAX_PEER_CONNECT_TIMEOUT_MS: u64 = 600_000;
        let mut errors = Vec::new();
        let mut names = BTreeSet::new();
        let mut addresses = BTreeMap::new();
        for peer in &self.peers {
            // `peers.NAME.FIELD`, so a form puts the error beside its field.
            let key = |field: &str| format!("peers.{}.{field}", peer.name);
            if peer.name.is_empty()
                || !peer
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            {
                errors.push(FieldError::new(
                    &key("name"),
                    &peer.name,
                    "peer name: expected letters, digits, dots, dashes or underscores",
                ));
            }
            let at = (peer.host.to_ascii_lowercase(), peer.http_port);
            if let Some(first) = addresses.insert(at, peer.name.as_str()) {
                errors.push(FieldError::new(
                    &key("host"),
                    format!("{}:{}", peer.host, peer.http_port),
                    format!("peer {first} has the same host and HTTP port"),
                ));
            }
            if !names.insert(peer.name.as_str()) {
                errors.push(FieldError::new(
                    &key("name"),
                    &peer.name,
                    "two peers have this name",
                ));
            }
            if format!("{}:{}", peer.host, peer.http_port)
                .parse::<HostPort>()
                .is_err()
            {
                errors.push(FieldError::new(
                    &key("host"),
                    &peer.host,
                    "expected a host name or address, and an HTTP port from 1 to 65535",
                ));
            }
            if peer.icp_port == 0 {
                errors.push(FieldError::new(
                    &key("icp_port"),
                    peer.icp_port,
                    "expected an ICP port from 1 to 65535",
                ));
            }
            if peer.weight == 0 {
                errors.push(FieldError::new(
                    &key("weight"),
                    peer.weight,
                    "weight must be at least 1",
                ));
            }
            if peer.kind == PeerKind::Sibling {
                for (on, field, message) in [
                    (
                        peer.default_parent,
                        "default_parent",
                        "only a parent can be the default parent",
                    ),
                    (
                        peer.round_robin,
                        "round_robin",
                        "only a parent can be in the round-robin rotation",
                    ),
                ] {
                    if on {
                        errors.push(FieldError::new(&key(field), on, message));
                    }
                }
            }
            if let Some(ms) = peer.connect_timeout_ms {
                if !(1..=MAX_PEER_CONNECT_TIMEOUT_MS).contains(&ms) {
                    errors.push(FieldError::new(
                        &key("connect_timeout_ms"),
                        ms,
                        format!("expected 1 to {MAX_PEER_CONNECT_TIMEOUT_MS} milliseconds"),
                    ));
                }
            }
            if peer.htcp == HtcpPeer::Off {
                for (on, field) in [
                    (peer.no_clr, "no_clr"),
                    (peer.only_clr, "only_clr"),
                    (peer.no_purge_clr, "no_purge_clr"),
                    (peer.forward_clr, "forward_clr"),
                ] {
                    if on {
                        errors.push(FieldError::new(
                            &key(field),
                            on,
                            "applies to HTCP peers only: set htcp too",
                        ));
                    }
                }
            } else if peer.no_clr && peer.only_clr {
                errors.push(FieldError::new(
                    &key("only_clr"),
                    true,
                    "a peer sent only CLR cannot also be sent no CLR (no_clr is set)",
                ));
            }
            if peer.max_conn == Some(0) {
                errors.push(FieldError::new(
                    &key("max_conn"),
                    0,
                    "expected at least 1 (leave it unset for no limit)",
                ));
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests;
