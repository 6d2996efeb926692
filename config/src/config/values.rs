//! The value types of settings, each read from and written as the text `config set` takes.

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

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

pub(super) use written_as_text;

written_as_text!(
    ByteSize,
    HostPort,
    StatusList,
    PortList,
    CidrList,
    HostList,
    OptionalAddr,
    FieldNameList
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

/// HTTP field names, comma or space separated (`CDN-Cache-Control, Canopy-Cache-Control`),
/// in the order given, kept in lower case.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FieldNameList(pub Vec<String>);

impl FromStr for FieldNameList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut names: Vec<String> = Vec::new();
        for item in list_items(s) {
            let token = item
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if !token {
                return Err(format!(
                    "{item:?} is not a field name: expected letters, digits and !#$%&'*+-.^_`|~"
                ));
            }
            let name = item.to_ascii_lowercase();
            if !names.contains(&name) {
                names.push(name);
            }
        }
        Ok(FieldNameList(names))
    }
}

impl fmt::Display for FieldNameList {
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

#[cfg(test)]
mod tests;
