//! Routing rules compiled for matching: the first rule that matches a request decides its
//! parents; the `parents` setting is the rule for everything else.

use std::net::IpAddr;
use std::sync::atomic::AtomicUsize;

use http::{Method, Uri};
use ipnet::IpNet;
use regex::Regex;

use canopy_config::config::{ParentRule, RoundRobin};

/// A rule ready to match, with its parents as indexes into the runtime's parent table.
#[derive(Debug)]
pub struct Route {
    /// 1-based position in `parent_rules`; 0 for the default rule.
    pub number: usize,
    matcher: Matcher,
    /// (index into the parent table, weight)
    pub parents: Vec<(usize, u32)>,
    pub round_robin: RoundRobin,
    pub go_direct: bool,
    /// Where strict round robin is for this rule.
    pub rotation: AtomicUsize,
}

#[derive(Debug, Default)]
struct Matcher {
    dest_domain: Option<String>,
    dest_host: Option<String>,
    dest_ip: Option<IpNet>,
    url_regex: Option<Regex>,
    scheme: Option<String>,
    port: Option<u16>,
    method: Option<Method>,
}

/// A rule that cannot be compiled, with the rule's number and the value that was wrong.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("rule {rule}: dest_ip {text:?} is not an address or network")]
    DestIp { rule: usize, text: String },
    #[error("rule {rule}: url_regex: {source}")]
    UrlRegex {
        rule: usize,
        #[source]
        source: regex::Error,
    },
    #[error("rule {rule}: method {text:?}")]
    Method { rule: usize, text: String },
}

impl Route {
    /// Compiles a validated rule; `parent_index` maps each parent to the runtime's table.
    pub fn compile(
        number: usize,
        rule: &ParentRule,
        mut parent_index: impl FnMut(&canopy_config::config::ParentEntry) -> Option<usize>,
    ) -> Result<Route, RouteError> {
        let dest_ip = match &rule.dest_ip {
            None => None,
            Some(text) => Some(
                text.parse::<IpNet>()
                    .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| RouteError::DestIp {
                        rule: number,
                        text: text.clone(),
                    })?,
            ),
        };
        let url_regex = match &rule.url_regex {
            None => None,
            Some(text) => Some(Regex::new(text).map_err(|source| RouteError::UrlRegex {
                rule: number,
                source,
            })?),
        };
        let method = match &rule.method {
            None => None,
            Some(m) => Some(
                Method::from_bytes(m.as_bytes()).map_err(|_| RouteError::Method {
                    rule: number,
                    text: m.clone(),
                })?,
            ),
        };
        Ok(Route {
            number,
            matcher: Matcher {
                dest_domain: rule
                    .dest_domain
                    .as_ref()
                    .map(|d| d.trim_start_matches('.').to_ascii_lowercase()),
                dest_host: rule.dest_host.as_ref().map(|h| h.to_ascii_lowercase()),
                dest_ip,
                url_regex,
                scheme: rule.scheme.clone(),
                port: rule.port,
                method,
            },
            parents: rule
                .parents
                .0
                .iter()
                .filter_map(|p| parent_index(p).map(|i| (i, p.weight)))
                .collect(),
            round_robin: rule.round_robin,
            go_direct: rule.go_direct,
            rotation: AtomicUsize::new(0),
        })
    }

    /// The default rule: every request, through `parents`.
    pub fn default_rule(
        parents: Vec<(usize, u32)>,
        round_robin: RoundRobin,
        go_direct: bool,
    ) -> Route {
        Route {
            number: 0,
            matcher: Matcher::default(),
            parents,
            round_robin,
            go_direct,
            rotation: AtomicUsize::new(0),
        }
    }

    pub fn matches(&self, method: &Method, uri: &Uri) -> bool {
        let m = &self.matcher;
        let host = uri
            .host()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let scheme = uri.scheme_str().unwrap_or("http");
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let domain_ok = m
            .dest_domain
            .as_ref()
            .is_none_or(|d| d.is_empty() || host == *d || host.ends_with(&format!(".{d}")));
        let host_ok = m.dest_host.as_ref().is_none_or(|h| host == *h);
        let ip_ok = m
            .dest_ip
            .as_ref()
            .is_none_or(|net| host.parse::<IpAddr>().is_ok_and(|ip| net.contains(&ip)));
        let regex_ok = m
            .url_regex
            .as_ref()
            .is_none_or(|r| r.is_match(&uri.to_string()));
        domain_ok
            && host_ok
            && ip_ok
            && regex_ok
            && m.scheme.as_ref().is_none_or(|s| s == scheme)
            && m.port.is_none_or(|p| p == port)
            && m.method.as_ref().is_none_or(|want| want == method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> Route {
        let mut r: ParentRule = toml::from_str(text).unwrap();
        r.go_direct = true;
        Route::compile(1, &r, |_| Some(0)).unwrap()
    }

    fn get(url: &str) -> (Method, Uri) {
        (Method::GET, url.parse().unwrap())
    }

    #[test]
    fn dest_domain_matches_the_domain_and_its_subdomains() {
        let r = rule("dest_domain = \"a.test\"");
        for (url, want) in [
            ("http://a.test/", true),
            ("http://www.A.test/x", true),
            ("http://ba.test/", false),
            ("http://a.test.example/", false),
        ] {
            let (m, u) = get(url);
            assert_eq!(r.matches(&m, &u), want, "{url}");
        }
        let all = rule("dest_domain = \".\"");
        let (m, u) = get("http://anything.example/");
        assert!(all.matches(&m, &u));
    }

    #[test]
    fn dest_ip_port_scheme_and_method_narrow_the_match() {
        let r = rule("dest_ip = \"10.0.0.0/8\"\nport = 8080\nmethod = \"GET\"");
        let (m, u) = get("http://10.1.2.3:8080/");
        assert!(r.matches(&m, &u));
        let (m, u) = get("http://10.1.2.3/");
        assert!(!r.matches(&m, &u));
        assert!(!r.matches(&Method::POST, &"http://10.1.2.3:8080/".parse().unwrap()));
        let (m, u) = get("http://11.1.2.3:8080/");
        assert!(!r.matches(&m, &u));
    }

    #[test]
    fn url_regex_sees_the_whole_url() {
        let r = rule("url_regex = \"\\\\.iso$\"");
        let (m, u) = get("http://mirror.test/debian.iso");
        assert!(r.matches(&m, &u));
        let (m, u) = get("http://mirror.test/debian.iso.sig");
        assert!(!r.matches(&m, &u));
    }
}
