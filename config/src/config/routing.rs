//! Where misses go: HTTP parent lists, how a list is used, and the routing rules that
//! choose one by destination.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::errors::FieldError;
use super::values::{written_as_text, HostPort};

written_as_text!(ParentList);

/// One HTTP parent: where it is, and its share of requests (Traffic Server's `|weight`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ParentEntry {
    pub addr: HostPort,
    pub weight: u32,
}

impl FromStr for ParentEntry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, weight) = match s.split_once('|') {
            Some((addr, weight)) => (addr, parse_weight(weight)?),
            None => (s, 1),
        };
        Ok(ParentEntry {
            addr: addr.parse()?,
            weight,
        })
    }
}

impl fmt::Display for ParentEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.weight == 1 {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}|{}", self.addr, self.weight)
        }
    }
}

/// A weight as Traffic Server writes it (`3` or `3.0`): a whole number from 1 to 1000.
fn parse_weight(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let whole = text.strip_suffix(".0").unwrap_or(text);
    match whole.parse::<u32>() {
        Ok(w @ 1..=1000) => Ok(w),
        _ => Err(format!(
            "weight {text:?} is not a whole number from 1 to 1000"
        )),
    }
}

/// The parent list in the seeds' form, `parent1:3128; parent2:3128;`, in the order tried;
/// `host:port|3` gives a parent three times the share of a weight-1 one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ParentList(pub Vec<ParentEntry>);

impl FromStr for ParentList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parents: Vec<ParentEntry> = Vec::new();
        for item in s.split([';', ',']).map(str::trim).filter(|i| !i.is_empty()) {
            let parent: ParentEntry = item.parse()?;
            if parents.iter().any(|p| p.addr == parent.addr) {
                return Err(format!("{} is listed twice", parent.addr));
            }
            parents.push(parent);
        }
        Ok(ParentList(parents))
    }
}

impl fmt::Display for ParentList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{p};")?;
        }
        Ok(())
    }
}

/// How a parent list is used (Traffic Server's `round_robin`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RoundRobin {
    /// In list order; the next parent only when the one before it fails.
    #[default]
    False,
    /// By client address: each client sticks to one parent.
    True,
    /// Rotate through the parents request by request, by weight.
    Strict,
    /// By URL on a weighted hash, so each URL has one home parent and adding or
    /// removing a parent moves only that parent's share.
    ConsistentHash,
    /// By URL as Squid's `carp` does, each parent named by its host, so Canopy and Squid
    /// send a URL to the same parent.
    Carp,
}

impl RoundRobin {
    pub const ALL: [RoundRobin; 5] = [
        RoundRobin::False,
        RoundRobin::True,
        RoundRobin::Strict,
        RoundRobin::ConsistentHash,
        RoundRobin::Carp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RoundRobin::False => "false",
            RoundRobin::True => "true",
            RoundRobin::Strict => "strict",
            RoundRobin::ConsistentHash => "consistent_hash",
            RoundRobin::Carp => "carp",
        }
    }
}

impl FromStr for RoundRobin {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "false" | "off" | "no" => Ok(RoundRobin::False),
            "true" | "on" | "yes" => Ok(RoundRobin::True),
            "strict" => Ok(RoundRobin::Strict),
            "consistent_hash" => Ok(RoundRobin::ConsistentHash),
            "carp" => Ok(RoundRobin::Carp),
            other => Err(format!(
                "{other:?} is not a round robin mode: expected false, true, strict, consistent_hash or carp"
            )),
        }
    }
}

impl fmt::Display for RoundRobin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One routing rule (a Traffic Server parent.config line): which requests it matches, and
/// the parents they go through. Every matcher given must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ParentRule {
    /// The domain and its subdomains; `.` matches every host.
    pub dest_domain: Option<String>,
    pub dest_host: Option<String>,
    /// An address or CIDR network the host is written as.
    pub dest_ip: Option<String>,
    pub url_regex: Option<String>,
    pub scheme: Option<String>,
    pub port: Option<u16>,
    pub method: Option<String>,
    pub parents: ParentList,
    pub round_robin: RoundRobin,
    /// Whether the origin may be tried when every parent has failed.
    pub go_direct: bool,
}

impl ParentRule {
    /// What the rule matches, in parent.config's words.
    pub fn matcher(&self) -> String {
        let mut parts = Vec::new();
        let fields = [
            ("dest_domain", &self.dest_domain),
            ("dest_host", &self.dest_host),
            ("dest_ip", &self.dest_ip),
            ("url_regex", &self.url_regex),
            ("scheme", &self.scheme),
            ("method", &self.method),
        ];
        for (name, value) in fields {
            match value {
                // parent.config ends an unquoted value at the first space.
                Some(value) if value.contains(char::is_whitespace) => {
                    parts.push(format!("{name}=\"{value}\""))
                }
                Some(value) => parts.push(format!("{name}={value}")),
                None => {}
            }
        }
        if let Some(port) = self.port {
            parts.push(format!("port={port}"));
        }
        parts.join(" ")
    }

    pub(super) fn errors(&self, key: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut fail =
            |value: &str, message: &str| errors.push(FieldError::new(key, value, message));
        let matchers = [
            &self.dest_domain,
            &self.dest_host,
            &self.dest_ip,
            &self.url_regex,
        ];
        if matchers.iter().all(|m| m.is_none()) {
            fail(
                "",
                "a rule needs dest_domain, dest_host, dest_ip or url_regex",
            );
        }
        if let Some(ip) = &self.dest_ip {
            if ip.parse::<IpNet>().is_err() && ip.parse::<IpAddr>().is_err() {
                fail(ip, "dest_ip: expected an address or CIDR network");
            }
        }
        if let Some(regex) = &self.url_regex {
            if let Err(e) = regex::Regex::new(regex) {
                fail(regex, &format!("url_regex does not compile: {e}"));
            }
        }
        if let Some(scheme) = &self.scheme {
            if !matches!(scheme.as_str(), "http" | "https") {
                fail(scheme, "scheme: expected http or https");
            }
        }
        if self.port == Some(0) {
            fail("0", "port: expected 1 to 65535");
        }
        if let Some(method) = &self.method {
            if method.is_empty() || !method.chars().all(|c| c.is_ascii_uppercase()) {
                fail(method, "method: expected an upper-case method such as GET");
            }
        }
        if self.parents.0.is_empty() && !self.go_direct {
            fail("", "a rule with no parents must allow go_direct");
        }
        errors.extend(self.parents.carp_name_error(key, self.round_robin));
        errors
    }
}

impl ParentList {
    /// CARP names a parent by its host, as a Squid `cache_peer`'s name defaults to its
    /// host, and Squid refuses two peers of one name: so must a CARP list.
    pub(super) fn carp_name_error(&self, key: &str, mode: RoundRobin) -> Option<FieldError> {
        if mode != RoundRobin::Carp {
            return None;
        }
        let (_, parent) = self.0.iter().enumerate().find(|(i, p)| {
            self.0[..*i]
                .iter()
                .any(|q| q.addr.host.eq_ignore_ascii_case(&p.addr.host))
        })?;
        Some(FieldError::new(
            key,
            &parent.addr,
            format!(
                "round_robin carp names each parent by its host, and host {} is listed twice",
                parent.addr.host
            ),
        ))
    }
}

#[cfg(test)]
mod tests;
