//! Whether the host names a config newly gives its peers and parents resolve: a name that
//! does not is saved all the same (it may resolve later), with a warning, so that an
//! administrator is not left to find it "up" in the console and failing every request.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::config::Config;

/// How long one name may take to resolve before it is reported.
const LOOKUP_LIMIT: Duration = Duration::from_secs(2);

/// A host name that did not resolve, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unresolved {
    pub host: String,
    pub why: String,
}

impl std::fmt::Display for Unresolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} does not resolve ({}); requests to it fail until it does",
            self.host, self.why
        )
    }
}

/// The names of peers and parents in `after` but not in `before` that do not resolve now
/// (addresses are not looked up), in name order.
pub async fn unresolved_names(after: &Config, before: &Config) -> Vec<Unresolved> {
    let known = host_names(before);
    let mut lookups = JoinSet::new();
    for host in host_names(after).difference(&known) {
        let host = host.clone();
        lookups.spawn(async move {
            let looked_up =
                tokio::time::timeout(LOOKUP_LIMIT, tokio::net::lookup_host((host.as_str(), 0)));
            let why = match looked_up.await {
                Ok(Ok(addrs)) => match addrs.count() {
                    0 => "no address".to_owned(),
                    _ => return None,
                },
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {} s", LOOKUP_LIMIT.as_secs()),
            };
            Some(Unresolved { host, why })
        });
    }
    let mut unresolved: Vec<Unresolved> = lookups.join_all().await.into_iter().flatten().collect();
    unresolved.sort_by(|a, b| a.host.cmp(&b.host));
    unresolved
}

/// The host names (not addresses) of the peers, the parents and the rules' parents.
fn host_names(config: &Config) -> BTreeSet<String> {
    let parents = std::iter::once(&config.parents)
        .chain(config.parent_rules.iter().map(|rule| &rule.parents))
        .flat_map(|list| list.0.iter().map(|p| p.addr.host.clone()));
    config
        .peers
        .iter()
        .map(|peer| peer.host.clone())
        .chain(parents)
        .filter(|host| host.parse::<std::net::IpAddr>().is_err())
        .map(|host| host.to_ascii_lowercase())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_name_that_does_not_resolve_is_reported_once() {
        let before = Config::default();
        let mut after = before.clone();
        after
            .set(
                "parents",
                "localhost:3129; nowhere.invalid:3128; 10.0.0.1:3128",
            )
            .unwrap();
        let unresolved = unresolved_names(&after, &before).await;
        assert_eq!(unresolved.len(), 1, "{unresolved:?}");
        assert_eq!(unresolved[0].host, "nowhere.invalid");
        assert!(unresolved[0].to_string().contains("does not resolve"));
        assert!(
            unresolved_names(&after, &after).await.is_empty(),
            "only new names"
        );
    }
}
