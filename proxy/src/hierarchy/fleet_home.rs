//! A fleet's CARP array (`fleet_peering = carp`): the home node of each URL among the live
//! nodes, this one included, and whether a request has been through a node of the fleet.

use http::request::Parts;

use crate::hierarchy::carp::{self, CarpArray};
use crate::hierarchy::parents::Parent;
use crate::http::headers::is_loop;

/// Every live node of the fleet as CARP hashes it, built when the registry changes.
pub struct FleetHome {
    array: CarpArray,
    /// In the array's order: `None` for this node, the others as HTTP parents.
    members: Vec<Option<Parent>>,
    /// Every node's visible name, this one's included.
    visible_names: Vec<String>,
}

impl FleetHome {
    /// `members` are (node name, `None` for this node or the node as a parent), in the
    /// same order on every node (by name), since CARP's result depends on it.
    pub fn new(members: Vec<(String, Option<Parent>)>, visible_names: Vec<String>) -> Self {
        FleetHome {
            array: CarpArray::new(members.iter().map(|(name, _)| (name.as_str(), 1))),
            members: members.into_iter().map(|(_, parent)| parent).collect(),
            visible_names,
        }
    }

    /// The node `parts` should be fetched through: its URL's home, when that is another
    /// node and the request has not been through any node of the fleet (a Via entry
    /// names one), so a request is never sent on to a fleet node twice.
    pub fn home(&self, parts: &Parts) -> Option<&Parent> {
        if self
            .visible_names
            .iter()
            .any(|name| is_loop(&parts.headers, name))
        {
            return None;
        }
        let home = self.array.pick(&carp::request_url(&parts.uri))?;
        self.members.get(home)?.as_ref()
    }

    /// The other nodes, as parents.
    pub fn others(&self) -> impl Iterator<Item = &Parent> {
        self.members.iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::hierarchy::reach::ConnectSettings;
    use crate::hierarchy::upstream;

    fn parent(name: &str) -> Parent {
        let settings = ConnectSettings {
            local_address: None,
            connect_timeout: std::time::Duration::from_secs(1),
        };
        Parent {
            name: format!("fleet:{name}"),
            host: "127.0.0.9".to_owned(),
            port: 3128,
            client: upstream::parent_client("127.0.0.9", 3128, settings).unwrap(),
            stats: Arc::default(),
        }
    }

    fn request(url: &str, via: Option<&'static str>) -> Parts {
        let mut request = http::Request::get(url);
        if let Some(via) = via {
            request = request.header(http::header::VIA, via);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn each_url_has_the_home_squids_carp_gives_and_fleet_requests_stay_put() {
        let names = ["node1", "node2", "node3"];
        let array = CarpArray::new(names.iter().map(|n| (*n, 1)));
        let home = FleetHome::new(
            vec![
                ("node1".to_owned(), None),
                ("node2".to_owned(), Some(parent("node2"))),
                ("node3".to_owned(), Some(parent("node3"))),
            ],
            vec!["one".to_owned(), "two".to_owned(), "three".to_owned()],
        );
        let mut seen = [0; 3];
        for i in 0..60 {
            let url = format!("http://example.com/{i}");
            let parts = request(&url, None);
            let want = array.pick(&url).unwrap();
            seen[want] += 1;
            let got = home.home(&parts).map(|p| p.name.clone());
            let expected = (want > 0).then(|| format!("fleet:{}", names[want]));
            assert_eq!(got, expected, "{url}");
            let relayed = request(&url, Some("1.1 edge, 1.1 two (Canopy/0.1.0)"));
            assert!(home.home(&relayed).is_none(), "{url} came through node2");
        }
        assert!(
            seen.iter().all(|&n| n > 0),
            "every node is home to some: {seen:?}"
        );
        assert_eq!(home.others().count(), 2);
    }
}
