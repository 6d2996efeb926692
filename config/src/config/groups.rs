//! Where each setting is edited: the group (a page of the console) every setting belongs
//! to, and the form control its type is edited with.

use std::net::{Ipv4Addr, SocketAddr};

use super::peers::{FleetPeering, IcpMode};
use super::routing::{ParentList, RoundRobin};
use super::values::{
    ByteSize, CidrList, FieldNameList, Flag, HostList, OptionalAddr, PortList, StatusList,
};

/// The settings as an administrator thinks of them; each group is one page of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// The listener, its addresses and who may use it.
    Proxy,
    /// Memory, object size and heuristic freshness.
    Cache,
    /// HTTP parents, the direct/parent choice and parent health.
    Routing,
    /// Answering and sending ICP queries.
    Icp,
    /// Time allowed to clients and upstream servers.
    Timeouts,
    /// The access log and diagnostic headers.
    Logging,
    /// Where the web console listens and the names it answers to.
    Console,
}

impl Group {
    /// Every group, in the order the console lists them.
    pub const ALL: [Group; 7] = [
        Group::Proxy,
        Group::Cache,
        Group::Routing,
        Group::Icp,
        Group::Timeouts,
        Group::Logging,
        Group::Console,
    ];

    /// The group's name in an address: `/configure/proxy`.
    pub fn slug(self) -> &'static str {
        match self {
            Group::Proxy => "proxy",
            Group::Cache => "cache",
            Group::Routing => "routing",
            Group::Icp => "icp",
            Group::Timeouts => "timeouts",
            Group::Logging => "logging",
            Group::Console => "console",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Group::Proxy => "Proxy",
            Group::Cache => "Cache",
            Group::Routing => "Routing",
            Group::Icp => "ICP",
            Group::Timeouts => "Timeouts",
            Group::Logging => "Logging",
            Group::Console => "Console",
        }
    }

    /// One sentence on what the group's settings decide, under the page's title.
    pub fn lead(self) -> &'static str {
        match self {
            Group::Proxy => "The listener: its port and address, who may use it, and where requests may go.",
            Group::Cache => "How much this cache keeps in memory and on disk, the largest object it stores, and how long objects without an explicit lifetime stay fresh.",
            Group::Routing => "Where this cache sends the requests it cannot answer itself.",
            Group::Icp => "Answering other caches' ICP queries, and asking peers before a miss goes on.",
            Group::Timeouts => "How long clients, parents and origin servers are waited for.",
            Group::Logging => "The access log and the diagnostic headers added to responses.",
            Group::Console => "Where this web console listens and the names it answers to.",
        }
    }

    pub fn from_slug(slug: &str) -> Option<Group> {
        Group::ALL.into_iter().find(|g| g.slug() == slug)
    }
}

/// The form control a setting is edited with, from its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// On or off.
    Checkbox,
    /// A number typed in a short box.
    Number,
    /// One line of text.
    Text,
    /// Several items, one per line (the setting's text separates them with commas).
    List,
    /// One of a few values: (value, words).
    Choice(&'static [(&'static str, &'static str)]),
}

/// A setting's type as a form edits it, and what its text must look like when it does not
/// parse (the standard library's own words, such as "invalid digit found in string", do
/// not say it).
pub trait Editable {
    const CONTROL: Control;
    const EXPECTED: Option<&'static str> = None;
}

/// What the text of setting `key` of type `T` must look like, given its parser's `error`.
pub(super) fn parse_failure<T: Editable>(key: &str, error: String) -> String {
    match T::EXPECTED {
        Some(_) if key.ends_with("_port") => "expected a port number from 1 to 65535".to_owned(),
        Some(expected) => expected.to_owned(),
        None => error,
    }
}

macro_rules! editable {
    ($control:expr => $($ty:ty),*) => {$(
        impl Editable for $ty {
            const CONTROL: Control = $control;
        }
    )*};
    ($control:expr, $expected:literal => $($ty:ty),*) => {$(
        impl Editable for $ty {
            const CONTROL: Control = $control;
            const EXPECTED: Option<&'static str> = Some($expected);
        }
    )*};
}

editable!(Control::Checkbox => Flag);
editable!(Control::Text => String, OptionalAddr, ByteSize, ParentList);
editable!(Control::List => CidrList, HostList, PortList, StatusList, FieldNameList);
editable!(Control::Number, "expected a whole number from 0 to 255" => u8);
editable!(Control::Number, "expected a whole number from 0 to 65535" => u16);
editable!(Control::Number, "expected a whole number from 0 to 4294967295" => u32);
editable!(Control::Number, "expected a whole number, 0 or more" => u64);
editable!(Control::Number, "expected a number, such as 0.1" => f64);
editable!(Control::Text, "expected an IPv4 address, such as 239.255.31.30" => Ipv4Addr);
editable!(Control::Text, "expected an address and a port, such as 127.0.0.1:8080" => SocketAddr);

/// The round robin modes as forms offer them: (setting value, words).
pub const ROUND_ROBIN_MODES: &[(&str, &str)] = &[
    ("false", "Off: in list order, the next only on failure"),
    ("strict", "Strict: rotate request by request"),
    ("true", "By client: each client keeps one parent"),
    (
        "consistent_hash",
        "Consistent hash: each URL keeps one parent",
    ),
    ("carp", "CARP: each URL to the parent Squid's carp picks"),
];

impl Editable for RoundRobin {
    const CONTROL: Control = Control::Choice(ROUND_ROBIN_MODES);
}

impl Editable for IcpMode {
    const CONTROL: Control = Control::Choice(&[
        ("disabled", "Disabled"),
        ("receive", "Only receive queries"),
        ("send-receive", "Send and receive queries"),
    ]);
}

impl Editable for FleetPeering {
    const CONTROL: Control = Control::Choice(&[
        ("off", "Off: only the peers configured"),
        (
            "siblings",
            "Siblings: every other node of the fleet is a sibling",
        ),
        ("carp", "CARP: each URL has one home node"),
    ]);
}
