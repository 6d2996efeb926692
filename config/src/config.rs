//! The configuration model: every setting, its default, how it is written as text, and the
//! validation that both the proxy and the manager use before a config version is applied.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// One wrong field: which setting, the value given, and what was expected instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{key} = {value:?}: {message}")]
pub struct FieldError {
    pub key: String,
    pub value: String,
    pub message: String,
}

impl FieldError {
    pub fn new(key: &str, value: impl fmt::Display, message: impl Into<String>) -> Self {
        FieldError {
            key: key.to_owned(),
            value: value.to_string(),
            message: message.into(),
        }
    }
}

/// Every error found in a config, so a form can show each beside its field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<FieldError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

/// Where a TOML file cannot be read as a config: its line and column (from 1), the key there
/// when the fault is in a value, and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct TomlFault {
    pub line: usize,
    pub column: usize,
    pub key: Option<String>,
    pub message: String,
}

impl TomlFault {
    fn new(text: &str, error: &toml::de::Error, key: Option<String>) -> TomlFault {
        let (line, column) = error
            .span()
            .map_or((1, 1), |span| line_and_column(text, span.start));
        TomlFault {
            line,
            column,
            key,
            message: error.message().to_owned(),
        }
    }
}

impl fmt::Display for TomlFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)?;
        if let Some(key) = &self.key {
            write!(f, ", {key}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The line and column, counted from 1 (the column in characters), of byte `offset` of `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text.as_bytes()[..offset.min(text.len())];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |newline| newline + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, column)
}

/// Why a TOML file cannot be imported as a config.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// Not TOML, an unknown key, or a value of the wrong type.
    #[error(transparent)]
    Unreadable(#[from] TomlFault),
    /// The file reads, but the config it makes breaks a rule.
    #[error(transparent)]
    Invalid(#[from] ConfigErrors),
}

/// Serde reads and writes these settings as the text `config set` takes: one `FromStr` and
/// one `Display` per type, and this pair of conversions for each.
macro_rules! written_as_text {
    ($($ty:ty),* $(,)?) => {$(
        impl TryFrom<String> for $ty {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                s.parse()
            }
        }

        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.to_string()
            }
        }
    )*};
}

written_as_text!(
    ByteSize,
    HostPort,
    ParentList,
    StatusList,
    PortList,
    CidrList,
    HostList,
    OptionalAddr
);

/// The items of a list setting, separated by commas, white space or both.
fn list_items(s: &str) -> impl Iterator<Item = &str> {
    s.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
}

/// A size in bytes, written with an optional K, M or G suffix (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ByteSize(pub u64);

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let upper = t.to_ascii_uppercase();
        let digits = upper.trim_end_matches('B').trim_end_matches('I');
        let (number, shift) = match digits.chars().last() {
            Some('K') => (&digits[..digits.len() - 1], 10),
            Some('M') => (&digits[..digits.len() - 1], 20),
            Some('G') => (&digits[..digits.len() - 1], 30),
            _ => (digits, 0),
        };
        let n: u64 = number.trim().parse().map_err(|_| {
            "expected a size in bytes, such as 1048576, 512K, 256M or 2G".to_owned()
        })?;
        n.checked_mul(1 << shift)
            .map(ByteSize)
            .ok_or_else(|| "size is too large".to_owned())
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
            if n >= 1 << shift && n % (1 << shift) == 0 {
                return write!(f, "{}{unit}", n >> shift);
            }
        }
        write!(f, "{n}")
    }
}

/// A host (name or address) and a port, written `host:port` (`[v6]:port` for IPv6).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not host:port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("{s:?} has no host before the port"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(format!("{host:?} is not a host name or address"));
        }
        let port = parse_port(port).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(HostPort {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        _ => Err(format!(
            "port {:?} is not a number from 1 to 65535",
            s.trim()
        )),
    }
}

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

/// HTTP status codes, written `502, 503`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StatusList(pub Vec<u16>);

impl FromStr for StatusList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        list_items(s)
            .map(|code| match code.parse::<u16>() {
                Ok(c @ 100..=599) => Ok(c),
                _ => Err(format!("{code:?} is not an HTTP status code (100-599)")),
            })
            .collect::<Result<Vec<u16>, String>>()
            .map(StatusList)
    }
}

impl fmt::Display for StatusList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(", "))
    }
}

/// TCP ports, written `80, 443, 1025-65535`: single ports and ranges, in any order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortList(pub Vec<RangeInclusive<u16>>);

impl PortList {
    pub fn contains(&self, port: u16) -> bool {
        self.0.iter().any(|range| range.contains(&port))
    }
}

impl FromStr for PortList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        list_items(s)
            .map(|item| {
                let (low, high) = item.split_once('-').unwrap_or((item, item));
                let (low, high) = (parse_port(low)?, parse_port(high)?);
                if low > high {
                    return Err(format!("{item:?} is not a range: {low} is above {high}"));
                }
                Ok(low..=high)
            })
            .collect::<Result<Vec<_>, String>>()
            .map(PortList)
    }
}

impl fmt::Display for PortList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, range) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            if range.start() == range.end() {
                write!(f, "{}", range.start())?;
            } else {
                write!(f, "{}-{}", range.start(), range.end())?;
            }
        }
        Ok(())
    }
}

/// A list of networks in CIDR form (`10.0.0.0/8, ::1/128`); a bare address is one host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CidrList(pub Vec<IpNet>);

impl CidrList {
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&addr))
    }
}

impl FromStr for CidrList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for item in list_items(s) {
            let net = match item.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => item
                    .parse::<IpAddr>()
                    .map(IpNet::from)
                    .map_err(|_| format!("{item:?} is not an address or CIDR network"))?,
            };
            nets.push(net);
        }
        Ok(CidrList(nets))
    }
}

impl fmt::Display for CidrList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join(", "))
    }
}

/// Host names, comma or space separated (`console.example.com, canopy`), kept in lower case.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostList(pub Vec<String>);

impl HostList {
    /// Whether `host` (any case) is one of the names.
    pub fn contains(&self, host: &str) -> bool {
        self.0.iter().any(|name| name.eq_ignore_ascii_case(host))
    }
}

impl FromStr for HostList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut names = Vec::new();
        for item in list_items(s) {
            if !is_host_name(item) {
                return Err(format!(
                    "{item:?} is not a host name: expected letters, digits, dots, dashes and \
                     underscores, without a port"
                ));
            }
            names.push(item.to_ascii_lowercase());
        }
        Ok(HostList(names))
    }
}

impl fmt::Display for HostList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(", "))
    }
}

/// An optional address: empty text means "not set".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OptionalAddr(pub Option<IpAddr>);

impl FromStr for OptionalAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Ok(OptionalAddr(None));
        }
        s.parse()
            .map(|a| OptionalAddr(Some(a)))
            .map_err(|_| format!("{s:?} is not an IP address (or empty for every address)"))
    }
}

impl fmt::Display for OptionalAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => Ok(()),
        }
    }
}

/// A yes/no setting; accepts the spellings administrators use in Squid and Traffic Server files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Flag(pub bool);

impl FromStr for Flag {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Ok(Flag(true)),
            "false" | "off" | "no" | "0" => Ok(Flag(false)),
            other => Err(format!("{other:?} is not on/off (true/false)")),
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0 { "true" } else { "false" })
    }
}

/// How this proxy takes part in ICP (Traffic Server's three modes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IcpMode {
    #[default]
    Disabled,
    /// Answer queries from peers, never send any.
    Receive,
    /// Answer queries and query peers on every miss that may go to them.
    SendReceive,
}

impl IcpMode {
    pub const ALL: [IcpMode; 3] = [IcpMode::Disabled, IcpMode::Receive, IcpMode::SendReceive];

    pub fn as_str(self) -> &'static str {
        match self {
            IcpMode::Disabled => "disabled",
            IcpMode::Receive => "receive",
            IcpMode::SendReceive => "send-receive",
        }
    }

    pub fn answers_queries(self) -> bool {
        self != IcpMode::Disabled
    }
}

impl FromStr for IcpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        IcpMode::ALL
            .into_iter()
            .find(|m| m.as_str() == s.trim().to_ascii_lowercase())
            .ok_or_else(|| {
                format!("{s:?} is not an ICP mode: expected disabled, receive or send-receive")
            })
    }
}

impl fmt::Display for IcpMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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
}

impl RoundRobin {
    pub const ALL: [RoundRobin; 4] = [
        RoundRobin::False,
        RoundRobin::True,
        RoundRobin::Strict,
        RoundRobin::ConsistentHash,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RoundRobin::False => "false",
            RoundRobin::True => "true",
            RoundRobin::Strict => "strict",
            RoundRobin::ConsistentHash => "consistent_hash",
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
            other => Err(format!(
                "{other:?} is not a round robin mode: expected false, true, strict or consistent_hash"
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

    fn errors(&self, key: &str) -> Vec<FieldError> {
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
        errors
    }
}

/// Whether a peer is one level up (parent) or beside us (sibling) in the hierarchy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    Parent,
    Sibling,
}

impl PeerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerKind::Parent => "parent",
            PeerKind::Sibling => "sibling",
        }
    }
}

impl FromStr for PeerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "parent" => Ok(PeerKind::Parent),
            "sibling" => Ok(PeerKind::Sibling),
            other => Err(format!(
                "{other:?} is not a peer type: expected parent or sibling"
            )),
        }
    }
}

impl fmt::Display for PeerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A neighbouring cache that takes ICP queries and HTTP requests from us (Squid's cache_peer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    pub name: String,
    pub host: String,
    #[serde(rename = "type")]
    pub kind: PeerKind,
    pub http_port: u16,
    pub icp_port: u16,
    /// Objects fetched through this peer are not stored here.
    #[serde(default)]
    pub proxy_only: bool,
    /// Never sent ICP queries.
    #[serde(default)]
    pub no_query: bool,
    /// Answers queries sent to the multicast group, so its reply is expected there.
    #[serde(default)]
    pub multicast_responder: bool,
    /// A sibling that may fetch misses through us (Squid's allow-miss).
    #[serde(default)]
    pub allow_miss: bool,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

macro_rules! settings {
    ($( $key:ident : $ty:ty = $default:expr, $help:literal; )*) => {
        /// The whole configuration of one Canopy: what a config version holds.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $( #[doc = $help] pub $key: $ty, )*
            /// Neighbouring caches (ICP peers), edited with `canopy peer` and the console.
            pub peers: Vec<Peer>,
            /// Routing rules, first match wins; `parents` is the rule for everything else.
            pub parent_rules: Vec<ParentRule>,
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $key: $default, )* peers: Vec::new(), parent_rules: Vec::new() }
            }
        }

        /// A config file's settings, each there or not: what an import lays over a config.
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ConfigFile {
            $( $key: Option<$ty>, )*
            peers: Option<Vec<Peer>>,
            parent_rules: Option<Vec<ParentRule>>,
        }

        impl ConfigFile {
            /// `config` with each setting this file holds set to the file's value.
            fn laid_over(self, mut config: Config) -> Config {
                $( if let Some(value) = self.$key { config.$key = value; } )*
                if let Some(peers) = self.peers { config.peers = peers; }
                if let Some(rules) = self.parent_rules { config.parent_rules = rules; }
                config
            }
        }

        /// Every scalar setting, in the order `canopy config list` shows them.
        pub const SETTINGS: &[Setting] = &[ $( Setting { key: stringify!($key), help: $help }, )* ];

        impl Config {
            /// A setting's value written as text, as `config set` takes it.
            pub fn get(&self, key: &str) -> Result<String, FieldError> {
                match key {
                    $( stringify!($key) => Ok(self.$key.to_string()), )*
                    _ => Err(unknown_key(key)),
                }
            }

            /// Parses one setting from text. The whole config should be validated afterwards.
            fn parse_into(&mut self, key: &str, value: &str) -> Result<(), FieldError> {
                match key {
                    $( stringify!($key) => {
                        self.$key = value
                            .trim()
                            .parse::<$ty>()
                            .map_err(|e| FieldError::new(key, value, e.to_string()))?;
                        Ok(())
                    } )*
                    _ => Err(unknown_key(key)),
                }
            }
        }
    };
}

/// A setting's name and what it is for.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub key: &'static str,
    pub help: &'static str,
}

fn unknown_key(key: &str) -> FieldError {
    let known: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
    FieldError::new(
        key,
        "",
        format!("unknown setting; known settings: {}", known.join(", ")),
    )
}

settings! {
    visible_name: String = default_visible_name(),
        "Name shown in Via and X-Cache headers; peers see it in loops.";
    bind_address: OptionalAddr = OptionalAddr(None),
        "The one address of this proxy: its listener, ICP socket and outgoing connections. Empty: listen on every address.";
    http_port: u16 = 3128,
        "TCP port of the proxy listener.";
    allowed_clients: CidrList = default_allowed_clients(),
        "Clients allowed to use the proxy (CIDR list). Anyone else gets 403.";
    safe_ports: PortList = default_safe_ports(),
        "Ports plain HTTP requests may go to (Squid's Safe_ports), such as `80, 443, 1025-65535`; others get 403.";
    ssl_ports: PortList = PortList(vec![443..=443]),
        "Ports CONNECT may open tunnels to (Squid's SSL_ports); others get 403.";
    deny_to_localhost: Flag = Flag(false),
        "Refuse requests to loopback addresses (127.0.0.0/8, ::1) too; recommended in production. This proxy and its console are refused always.";
    cache_mem: ByteSize = ByteSize(256 << 20),
        "Memory for cached objects (bytes; K, M, G suffixes).";
    max_object_size: ByteSize = ByteSize(8 << 20),
        "Largest object stored; bigger ones pass through uncached.";
    heuristic_lm_factor: f64 = 0.1,
        "Heuristic freshness as a fraction of the time since Last-Modified.";
    heuristic_min_s: u64 = 0,
        "Floor of heuristic freshness, seconds.";
    heuristic_max_s: u64 = 86_400,
        "Cap of heuristic freshness, seconds.";
    parent_caching: Flag = Flag(true),
        "Send misses through the HTTP parents listed in parents.";
    parents: ParentList = ParentList::default(),
        "HTTP parent caches, `host:port; host:port;`, tried in this order.";
    round_robin: RoundRobin = RoundRobin::False,
        "false: in order, the next on failure; true: by client address; strict: rotate; consistent_hash: by URL.";
    never_direct: Flag = Flag(false),
        "Never go to the origin server: only through parents.";
    always_direct: Flag = Flag(false),
        "Always go to the origin server, never through parents.";
    fail_threshold: u32 = 10,
        "Connection failures within retry_time_s that mark a parent down.";
    retry_time_s: u64 = 300,
        "How long a parent stays down before it is tried again, seconds.";
    retry_statuses: StatusList = StatusList(vec![502, 503]),
        "Parent responses that send an idempotent request on to the next parent.";
    debug_headers: Flag = Flag(false),
        "Add X-Canopy-Hop to responses: which hop served, by which rule, and why.";
    connect_timeout_ms: u64 = 5_000,
        "Time allowed to connect to a parent or origin, milliseconds.";
    read_timeout_ms: u64 = 60_000,
        "Time allowed for an upstream response to start, and between any two reads of its body, milliseconds.";
    client_idle_timeout_s: u64 = 120,
        "How long a client connection may wait for its next request (or its first) before it is closed, seconds.";
    request_timeout_s: u64 = 60,
        "Time allowed for a request's headers to arrive once their first byte has, seconds.";
    tunnel_idle_timeout_s: u64 = 900,
        "A CONNECT tunnel that carries nothing either way for this long is closed, seconds.";
    client_lifetime_s: u64 = 86_400,
        "The longest a client connection may stay open, tunnels included, however busy, seconds.";
    access_log: String = "access.log".to_owned(),
        "Access log in Squid's native format (relative to the data dir); empty: off.";
    manager_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)),
        "Address and port of the web console.";
    manager_hosts: HostList = HostList::default(),
        "More names the console answers to (such as console.example.com); it always answers to IP addresses and localhost. Any other Host gets 421, so a page whose DNS name was rebound to this console cannot use it.";
    icp_mode: IcpMode = IcpMode::Disabled,
        "ICP: disabled, receive (answer only) or send-receive.";
    icp_port: u16 = 3130,
        "UDP port of ICP queries and replies.";
    icp_multicast_enabled: Flag = Flag(false),
        "Send ICP queries once to the multicast group instead of to each peer.";
    icp_multicast_group: Ipv4Addr = Ipv4Addr::new(239, 255, 31, 30),
        "ICP multicast group (224.0.0.0/4).";
    icp_multicast_ttl: u8 = 1,
        "TTL of multicast ICP queries (1-255).";
    icp_query_timeout_ms: u64 = 0,
        "How long to wait for ICP replies, milliseconds; 0: dynamic.";
    icp_dead_peer_timeout_s: u64 = 10,
        "A peer that has not answered ICP for this long is dead.";
    icp_hit_fresh_for_s: u64 = 30,
        "Answer ICP HIT only for objects fresh at least this much longer.";
    icp_allowed_clients: CidrList = CidrList::default(),
        "Child caches that are not peers but may send ICP queries.";
    icp_hits_only: Flag = Flag(false),
        "Answer MISS_NOFETCH instead of MISS: peers should not send misses here for now.";
}

/// The machine's host name, as Squid's `visible_hostname` defaults to it; "canopy" when the
/// name cannot be read or is not a valid header token.
fn default_visible_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| is_host_name(name))
        .unwrap_or_else(|| "canopy".to_owned())
}

/// Whether `name` is a host name, safe to write raw into Via, X-Cache and error pages:
/// letters, digits, dots, dashes and underscores, beginning with a letter or digit, at most
/// 253 characters.
pub fn is_host_name(name: &str) -> bool {
    name.len() <= 253
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

/// Squid's default `Safe_ports`: the well-known ports of HTTP, FTP, gopher, wais, http-mgmt,
/// gss-http, multiling HTTP and filemaker, and every unprivileged port.
fn default_safe_ports() -> PortList {
    PortList(vec![
        80..=80,
        443..=443,
        21..=21,
        70..=70,
        210..=210,
        280..=280,
        488..=488,
        591..=591,
        777..=777,
        1025..=65535,
    ])
}

fn default_allowed_clients() -> CidrList {
    "127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7, fe80::/10"
        .parse()
        .unwrap_or_default()
}

impl Config {
    /// Sets one setting from text and checks the result; on any error nothing changes.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigErrors> {
        let mut next = self.clone();
        next.parse_into(key, value)
            .map_err(|e| ConfigErrors(vec![e]))?;
        next.validate()?;
        *self = next;
        Ok(())
    }

    /// Sets many settings from text at once (a form): every parse error is reported.
    pub fn set_all<'a>(
        &mut self,
        values: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), ConfigErrors> {
        let mut next = self.clone();
        let mut errors = Vec::new();
        for (key, value) in values {
            if let Err(e) = next.parse_into(key, value) {
                errors.push(e);
            }
        }
        if let Err(ConfigErrors(more)) = next.validate() {
            for m in more {
                if !errors.iter().any(|e| e.key == m.key) {
                    errors.push(m);
                }
            }
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors));
        }
        *self = next;
        Ok(())
    }

    /// Reads a whole config from TOML (as `config export` writes it), then validates it; what
    /// the file leaves out takes its default.
    pub fn from_toml(text: &str) -> Result<Config, ImportError> {
        Config::default().merged_toml(text)
    }

    /// This config with the settings of a TOML file laid over it, then validated: settings
    /// the file leaves out keep their values, and `peers` and `parent_rules` are replaced only
    /// when the file holds them.
    pub fn merged_toml(&self, text: &str) -> Result<Config, ImportError> {
        let config = read_config_file(text)?.laid_over(self.clone());
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }

    /// The address the proxy listener binds.
    pub fn http_listen(&self) -> SocketAddr {
        let ip = self
            .bind_address
            .0
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        SocketAddr::new(ip, self.http_port)
    }

    /// The address the ICP socket binds.
    pub fn icp_listen(&self) -> SocketAddr {
        let ip = self
            .bind_address
            .0
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        SocketAddr::new(ip, self.icp_port)
    }

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
            self.manager_listen.port() != 0,
            "manager_listen",
            self.manager_listen.to_string(),
            "expected an address with a port from 1 to 65535",
        );
        check(
            self.max_object_size <= self.cache_mem,
            "max_object_size",
            self.max_object_size.to_string(),
            "must not be larger than cache_mem",
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
        for (i, rule) in self.parent_rules.iter().enumerate() {
            errors.extend(rule.errors(&format!("parent_rules.{}", i + 1)));
        }
        errors.extend(self.peer_errors());
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(errors))
        }
    }

    fn peer_errors(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut names = BTreeSet::new();
        for peer in &self.peers {
            let key = format!("peers.{}", peer.name);
            if peer.name.is_empty()
                || !peer
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
            {
                errors.push(FieldError::new(
                    &key,
                    &peer.name,
                    "peer name: expected letters, digits, dots, dashes or underscores",
                ));
            }
            if !names.insert(peer.name.as_str()) {
                errors.push(FieldError::new(
                    &key,
                    &peer.name,
                    "two peers have this name",
                ));
            }
            if format!("{}:{}", peer.host, peer.http_port)
                .parse::<HostPort>()
                .is_err()
            {
                errors.push(FieldError::new(
                    &key,
                    &peer.host,
                    "expected a host name or address, and an HTTP port from 1 to 65535",
                ));
            }
            if peer.icp_port == 0 {
                errors.push(FieldError::new(
                    &key,
                    peer.icp_port,
                    "expected an ICP port from 1 to 65535",
                ));
            }
            if peer.weight == 0 {
                errors.push(FieldError::new(
                    &key,
                    peer.weight,
                    "weight must be at least 1",
                ));
            }
        }
        errors
    }

    /// What changed from `before` to `self`, one readable line per setting or peer.
    pub fn diff(&self, before: &Config) -> Vec<String> {
        let mut changes = Vec::new();
        for setting in SETTINGS {
            let (old, new) = (before.get(setting.key), self.get(setting.key));
            if old != new {
                changes.push(format!(
                    "{}: {} → {}",
                    setting.key,
                    shown(&old.unwrap_or_default()),
                    shown(&new.unwrap_or_default())
                ));
            }
        }
        for peer in &before.peers {
            match self.peers.iter().find(|p| p.name == peer.name) {
                None => changes.push(format!("peer {} removed", peer.name)),
                Some(now) if now != peer => changes.push(format!("peer {} changed", peer.name)),
                Some(_) => {}
            }
        }
        if self.parent_rules != before.parent_rules {
            changes.push(format!(
                "parent rules: {} → {}",
                before.parent_rules.len(),
                self.parent_rules.len()
            ));
        }
        for peer in &self.peers {
            if !before.peers.iter().any(|p| p.name == peer.name) {
                changes.push(format!(
                    "peer {} added ({} {}:{})",
                    peer.name, peer.kind, peer.host, peer.http_port
                ));
            }
        }
        changes
    }
}

fn read_config_file(text: &str) -> Result<ConfigFile, TomlFault> {
    let document = toml::Deserializer::parse(text).map_err(|e| TomlFault::new(text, &e, None))?;
    serde_path_to_error::deserialize(document).map_err(|e| {
        // The path is "." when the fault is in the document itself, such as an unknown key.
        let key = Some(e.path().to_string()).filter(|path| path != ".");
        TomlFault::new(text, e.inner(), key)
    })
}

fn shown(value: &str) -> String {
    if value.is_empty() {
        "(empty)".to_owned()
    } else {
        value.to_owned()
    }
}

#[cfg(test)]
mod properties;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_safe() {
        let config = Config::default();
        config.validate().unwrap();
        assert_eq!(config.http_port, 3128);
        assert_eq!(config.icp_port, 3130);
        assert_eq!(config.icp_mode, IcpMode::Disabled);
        assert!(config
            .allowed_clients
            .contains("127.0.0.1".parse().unwrap()));
        assert!(config
            .allowed_clients
            .contains("192.168.1.9".parse().unwrap()));
        assert!(!config.allowed_clients.contains("8.8.8.8".parse().unwrap()));
        assert_eq!(config.manager_listen.to_string(), "127.0.0.1:8080");
    }

    #[test]
    fn byte_sizes_take_suffixes() {
        assert_eq!("512K".parse::<ByteSize>().unwrap().0, 512 * 1024);
        assert_eq!("256m".parse::<ByteSize>().unwrap().0, 256 << 20);
        assert_eq!("2GB".parse::<ByteSize>().unwrap().0, 2 << 30);
        assert_eq!("1000".parse::<ByteSize>().unwrap().0, 1000);
        assert_eq!(ByteSize(256 << 20).to_string(), "256M");
        assert!("banana".parse::<ByteSize>().is_err());
    }

    #[test]
    fn parent_list_reads_the_seeds_form() {
        let list: ParentList = "parent1:3128; parent2:8080;".parse().unwrap();
        assert_eq!(list.0.len(), 2);
        assert_eq!(list.0[1].addr.host, "parent2");
        let weighted: ParentList = "a:1|1.0; b:2|3".parse().unwrap();
        assert_eq!(weighted.0[1].weight, 3);
        assert_eq!(weighted.to_string(), "a:1; b:2|3;");
        assert!("a:1|0".parse::<ParentList>().is_err());
        assert_eq!(list.to_string(), "parent1:3128; parent2:8080;");
        assert_eq!(list.to_string().parse::<ParentList>().unwrap(), list);
        assert!("parent1".parse::<ParentList>().is_err());
        assert!("p:0;".parse::<ParentList>().is_err());
        assert!("p:70000;".parse::<ParentList>().is_err());
        assert!("p:1; p:1;".parse::<ParentList>().is_err());
    }

    #[test]
    fn set_refuses_bad_values_and_changes_nothing() {
        let mut config = Config::default();
        let err = config.set("cache_mem", "banana").unwrap_err();
        assert_eq!(err.0[0].key, "cache_mem");
        assert!(err.to_string().contains("banana"), "{err}");
        assert_eq!(config, Config::default());
        assert!(config.set("http_port", "0").is_err());
        assert!(config.set("http_port", "70000").is_err());
        assert!(config.set("icp_multicast_group", "10.0.0.1").is_err());
        assert!(config.set("icp_mode", "sometimes").is_err());
        let unknown = config.set("no_such_key", "1").unwrap_err();
        assert!(unknown.to_string().contains("unknown setting"));
        assert_eq!(config, Config::default());
        config.set("http_port", "8081").unwrap();
        assert_eq!(config.get("http_port").unwrap(), "8081");
    }

    #[test]
    fn set_all_reports_every_bad_field() {
        let mut config = Config::default();
        let err = config
            .set_all([
                ("http_port", "0"),
                ("icp_port", "x"),
                ("icp_mode", "receive"),
            ])
            .unwrap_err();
        let keys: Vec<&str> = err.0.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["icp_port", "http_port"]);
        assert_eq!(config, Config::default());
    }

    #[test]
    fn every_setting_round_trips_through_text() {
        let config = Config::default();
        for setting in SETTINGS {
            let text = config.get(setting.key).unwrap();
            let mut copy = config.clone();
            copy.set(setting.key, &text)
                .unwrap_or_else(|e| panic!("{}: {e}", setting.key));
            assert_eq!(copy, config, "{}", setting.key);
        }
    }

    #[test]
    fn toml_round_trips_with_peers() {
        let mut config = Config::default();
        config.peers.push(Peer {
            name: "squid".into(),
            host: "127.0.0.2".into(),
            kind: PeerKind::Sibling,
            http_port: 3128,
            icp_port: 3130,
            proxy_only: false,
            no_query: false,
            multicast_responder: false,
            allow_miss: false,
            weight: 1,
        });
        config.set("parents", "a:1; b:2;").unwrap();
        let text = config.to_toml();
        assert_eq!(Config::from_toml(&text).unwrap(), config);
        let Err(ImportError::Invalid(bad)) = Config::from_toml("http_port = 0") else {
            panic!("http_port = 0 must be refused by validation");
        };
        assert_eq!(bad.0[0].key, "http_port");
        let unknown = Config::from_toml("colour = \"red\"").unwrap_err();
        assert!(unknown.to_string().contains("colour"), "{unknown}");
    }

    #[test]
    fn visible_name_is_a_host_name() {
        let mut config = Config::default();
        for good in ["edge", "cache-1.example.net", "Proxy_2"] {
            config.set("visible_name", good).unwrap();
        }
        for bad in [
            "", "a b", "a;b", "x\"y", "<b>", "a,b", "(a)", "-a", ".a", "é",
        ] {
            let err = config.set("visible_name", bad).unwrap_err();
            assert_eq!(err.0[0].key, "visible_name");
            assert_eq!(err.0[0].value, bad);
            assert!(err.0[0].message.contains("letters, digits"), "{err}");
        }
        assert!(config.set("visible_name", &"a".repeat(254)).is_err());
        assert_eq!(config.visible_name, "Proxy_2");
    }

    #[test]
    fn manager_hosts_are_names_without_ports() {
        let mut config = Config::default();
        assert!(config.manager_hosts.0.is_empty());
        config
            .set("manager_hosts", "Console.Example.com, canopy")
            .unwrap();
        assert_eq!(
            config.get("manager_hosts").unwrap(),
            "console.example.com, canopy"
        );
        assert!(config.manager_hosts.contains("CONSOLE.example.com"));
        assert!(!config.manager_hosts.contains("example.com"));
        for bad in ["console.example.com:8080", "[::1]", "a/b", "-a"] {
            let err = config.set("manager_hosts", bad).unwrap_err();
            assert_eq!(err.0[0].key, "manager_hosts");
            assert_eq!(err.0[0].value, bad);
            assert!(err.0[0].message.contains("not a host name"), "{err}");
        }
        config.set("manager_hosts", "").unwrap();
        assert!(config.manager_hosts.0.is_empty());
    }

    #[test]
    fn port_lists_take_ports_and_ranges() {
        let list: PortList = "80, 443 1025-65535".parse().unwrap();
        assert!(list.contains(80) && list.contains(1025) && list.contains(65535));
        assert!(!list.contains(25) && !list.contains(1024));
        assert_eq!(list.to_string(), "80, 443, 1025-65535");
        assert_eq!(list.to_string().parse::<PortList>().unwrap(), list);
        assert!("".parse::<PortList>().unwrap().0.is_empty());
        for bad in ["0", "70000", "10-5", "http", "1-2-3"] {
            assert!(bad.parse::<PortList>().is_err(), "{bad}");
        }
        let mut config = Config::default();
        let err = config.set("safe_ports", "80, 9-1").unwrap_err();
        assert_eq!(err.0[0].key, "safe_ports");
        assert!(err.to_string().contains("9-1"), "{err}");
        assert!(config.safe_ports.contains(8080) && !config.safe_ports.contains(25));
        assert_eq!(config.ssl_ports.to_string(), "443");
    }

    #[test]
    fn timeouts_must_be_set_and_bounded() {
        let mut config = Config::default();
        for key in [
            "client_idle_timeout_s",
            "request_timeout_s",
            "tunnel_idle_timeout_s",
        ] {
            let err = config.set(key, "0").unwrap_err();
            assert_eq!(err.0[0].key, key);
            assert!(err.0[0].message.contains("seconds"), "{err}");
        }
        assert!(config.set("client_lifetime_s", "604801").is_err());
        config.set("client_lifetime_s", "604800").unwrap();
        assert_eq!(Config::default().request_timeout_s, 60);
    }

    #[test]
    fn diff_names_each_change() {
        let before = Config::default();
        let mut after = before.clone();
        after.set("http_port", "3129").unwrap();
        assert_eq!(after.diff(&before), ["http_port: 3128 → 3129"]);
    }

    #[test]
    fn line_and_column_count_from_one_in_characters() {
        assert_eq!(line_and_column("a = 1\nbb = 2", 0), (1, 1));
        assert_eq!(line_and_column("a = 1\nbb = 2", 6), (2, 1));
        assert_eq!(line_and_column("a = 1\nbb = 2", 11), (2, 6));
        assert_eq!(line_and_column("v = \"é\" x", 9), (1, 9));
        assert_eq!(line_and_column("a", 7), (1, 2));
    }

    #[test]
    fn a_merged_file_changes_only_what_it_holds() {
        let mut before = Config::default();
        before.set("icp_port", "4827").unwrap();
        before.set("parents", "a:1;").unwrap();
        before.peers.push(Peer {
            name: "north".into(),
            host: "10.0.0.1".into(),
            kind: PeerKind::Parent,
            http_port: 3128,
            icp_port: 3130,
            proxy_only: false,
            no_query: false,
            multicast_responder: false,
            allow_miss: false,
            weight: 1,
        });
        let after = before.merged_toml("http_port = 18529\n").unwrap();
        assert_eq!(after.diff(&before), ["http_port: 3128 → 18529"]);
        let emptied = before.merged_toml("peers = []\n").unwrap();
        assert_eq!(emptied.diff(&before), ["peer north removed"]);
        let replaced = Config::from_toml("http_port = 18529\n").unwrap();
        assert_eq!(replaced.icp_port, 3130);
        assert!(replaced.peers.is_empty());
    }

    #[test]
    fn a_bad_file_names_line_column_and_key() {
        let config = Config::default();
        let text = "icp_port = 3131\nhttp_port = \"abc\"\n";
        let Err(ImportError::Unreadable(fault)) = config.merged_toml(text) else {
            panic!("a string for http_port must be refused");
        };
        assert_eq!((fault.line, fault.column), (2, 13));
        assert_eq!(fault.key.as_deref(), Some("http_port"));
        assert!(fault.message.contains("expected u16"), "{fault}");
        assert!(
            fault
                .to_string()
                .starts_with("line 2, column 13, http_port: "),
            "{fault}"
        );

        let peer = "[[peers]]\nname = \"p\"\nhost = \"h\"\ntype = \"aunt\"\n";
        let Err(ImportError::Unreadable(fault)) = config.merged_toml(peer) else {
            panic!("an unknown peer type must be refused");
        };
        assert_eq!(
            (fault.line, fault.key.as_deref()),
            (4, Some("peers[0].type"))
        );

        let Err(ImportError::Unreadable(fault)) = config.merged_toml("http_port = \n") else {
            panic!("a key without a value is not TOML");
        };
        assert_eq!((fault.line, fault.key), (1, None));

        let Err(ImportError::Unreadable(fault)) = config.merged_toml("\ncolour = 1\n") else {
            panic!("an unknown key must be refused");
        };
        assert_eq!(fault.line, 2);
        assert!(fault.message.contains("colour"), "{fault}");
    }
}
