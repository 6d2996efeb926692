//! The order in which a rule's parents are tried: as listed, by client address, rotated
//! by weight, by a weighted consistent hash of the URL, or by Squid's CARP.

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use xxhash_rust::xxh3::xxh3_64_with_seed;

use canopy_config::config::RoundRobin;

use crate::hierarchy::carp::CarpArray;

/// A parent as selection sees it: its name (which keys the consistent hash), its host
/// (CARP's name for it) and its weight.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub name: &'a str,
    pub host: &'a str,
    pub weight: u32,
}

/// Indexes into `parents`, first choice first; every parent appears once, so the later
/// ones are the failover order.
pub fn order(
    mode: RoundRobin,
    parents: &[Candidate<'_>],
    url: &str,
    client: IpAddr,
    rotation: &AtomicUsize,
) -> Vec<usize> {
    let n = parents.len();
    if n == 0 {
        return Vec::new();
    }
    let first = match mode {
        RoundRobin::False => 0,
        RoundRobin::True => {
            (xxh3_64_with_seed(client.to_string().as_bytes(), 0) % n as u64) as usize
        }
        RoundRobin::Strict => {
            let total: usize = parents.iter().map(|p| p.weight as usize).sum();
            let mut slot = rotation.fetch_add(1, Relaxed) % total;
            parents
                .iter()
                .position(|p| {
                    let hit = slot < p.weight as usize;
                    slot = slot.saturating_sub(p.weight as usize);
                    hit
                })
                .unwrap_or(0)
        }
        RoundRobin::ConsistentHash => return by_rendezvous(parents, url),
        RoundRobin::Carp => return by_carp(parents, url),
    };
    (0..n).map(|i| (first + i) % n).collect()
}

/// Squid's CARP order, best score first, then any parent whose weight is too small a share
/// to score (Squid never picks one by CARP). `url` is in [`carp::request_url`]'s form.
///
/// [`carp::request_url`]: crate::hierarchy::carp::request_url
fn by_carp(parents: &[Candidate<'_>], url: &str) -> Vec<usize> {
    let mut order = CarpArray::new(parents.iter().map(|p| (p.host, p.weight))).order(url);
    let unscored: Vec<usize> = (0..parents.len()).filter(|i| !order.contains(i)).collect();
    order.extend(unscored);
    order
}

/// After CARP, Squid tries the first parent of the CARP order that is up, then every other
/// parent in the order listed (`selectAllParents`); `order` is the CARP order.
pub fn carp_failover(order: Vec<usize>, up: impl Fn(usize) -> bool) -> Vec<usize> {
    let Some(first) = order.iter().copied().find(|&i| up(i)) else {
        return order;
    };
    let mut rest: Vec<usize> = order.into_iter().filter(|&i| i != first).collect();
    rest.sort_unstable();
    std::iter::once(first).chain(rest).collect()
}

/// Weighted rendezvous hashing: each parent scores `weight / -ln(h)` for a hash `h` in
/// (0, 1) of the URL and its name; the highest score is the URL's home. Removing a parent
/// moves only the URLs it was home to, and shares follow the weights.
fn by_rendezvous(parents: &[Candidate<'_>], url: &str) -> Vec<usize> {
    let mut scored: Vec<(f64, usize)> = parents
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let seed = xxh3_64_with_seed(p.name.as_bytes(), 0);
            let h = xxh3_64_with_seed(url.as_bytes(), seed);
            // Map to the open interval (0, 1): never 0, never 1.
            let unit = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            (f64::from(p.weight) / -unit.ln(), i)
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidates<'a>(names: &'a [&'a str], weights: &[u32]) -> Vec<Candidate<'a>> {
        names
            .iter()
            .zip(weights)
            .map(|(name, &weight)| Candidate {
                name,
                host: name,
                weight,
            })
            .collect()
    }

    fn local() -> IpAddr {
        "127.0.0.1".parse().unwrap()
    }

    #[test]
    fn in_order_is_the_list_order() {
        let c = candidates(&["a", "b", "c"], &[1, 1, 1]);
        let order = order(
            RoundRobin::False,
            &c,
            "http://x/",
            local(),
            &AtomicUsize::new(0),
        );
        assert_eq!(order, [0, 1, 2]);
    }

    #[test]
    fn strict_rotates_by_weight() {
        let c = candidates(&["a", "b"], &[1, 3]);
        let rotation = AtomicUsize::new(0);
        let mut counts = [0; 2];
        for _ in 0..400 {
            counts[order(RoundRobin::Strict, &c, "http://x/", local(), &rotation)[0]] += 1;
        }
        assert_eq!(counts, [100, 300]);
    }

    #[test]
    fn by_client_address_one_client_sticks_to_one_parent() {
        let c = candidates(&["a", "b", "c"], &[1, 1, 1]);
        let rotation = AtomicUsize::new(0);
        let first = order(RoundRobin::True, &c, "http://x/1", local(), &rotation)[0];
        for i in 0..20 {
            let url = format!("http://x/{i}");
            assert_eq!(
                order(RoundRobin::True, &c, &url, local(), &rotation)[0],
                first
            );
        }
    }

    #[test]
    fn consistent_hash_spreads_evenly_and_moves_only_the_removed_share() {
        let names = ["p1:3128", "p2:3128", "p3:3128"];
        let three = candidates(&names, &[1, 1, 1]);
        let two = candidates(&names[..2], &[1, 1]);
        let rotation = AtomicUsize::new(0);
        let mut counts = [0usize; 3];
        let mut moved = 0;
        for i in 0..3000 {
            let url = format!("http://example.com/object/{i}");
            let home = order(RoundRobin::ConsistentHash, &three, &url, local(), &rotation)[0];
            counts[home] += 1;
            let after = order(RoundRobin::ConsistentHash, &two, &url, local(), &rotation)[0];
            if home != 2 && after != home {
                moved += 1;
            }
        }
        for count in counts {
            assert!((850..=1150).contains(&count), "{counts:?}");
        }
        assert_eq!(moved, 0, "URLs of the parents that stayed must not move");
    }

    #[test]
    fn consistent_hash_follows_weights() {
        let c = candidates(&["a", "b"], &[1, 3]);
        let rotation = AtomicUsize::new(0);
        let heavy = (0..4000)
            .filter(|i| {
                order(
                    RoundRobin::ConsistentHash,
                    &c,
                    &format!("http://x/{i}"),
                    local(),
                    &rotation,
                )[0] == 1
            })
            .count();
        assert!((2800..=3200).contains(&heavy), "{heavy}");
    }

    #[test]
    fn carp_is_squids_choice_with_the_down_parents_left_out_and_the_rest_as_listed() {
        let c = candidates(&["alpha", "beta", "gamma"], &[1, 2, 1]);
        let array = CarpArray::new([("alpha", 1), ("beta", 2), ("gamma", 1)]);
        let rotation = AtomicUsize::new(0);
        for i in 0..200 {
            let url = format!("http://carp.test/obj/{i}");
            let full = order(RoundRobin::Carp, &c, &url, local(), &rotation);
            assert_eq!(full, array.order(&url), "{url}");
            // Squid keeps every CARP parent in the hash when one is down (the URL hash runs
            // on through it) and takes the best score among those up.
            let down = full[0];
            let failover = carp_failover(full.clone(), |p| p != down);
            assert_eq!(failover[0], full[1], "{url}");
            let mut rest = failover[1..].to_vec();
            rest.sort_unstable();
            assert_eq!(failover[1..], rest, "then in list order");
            assert_eq!(failover.len(), 3);
        }
    }

    #[test]
    fn carp_names_parents_by_host_and_keeps_a_share_too_small_to_score_last() {
        let c = [
            Candidate {
                name: "a:1",
                host: "a",
                weight: 1,
            },
            Candidate {
                name: "b:1",
                host: "b",
                weight: 1000,
            },
        ];
        let rotation = AtomicUsize::new(0);
        let url = "http://x/";
        assert_eq!(order(RoundRobin::Carp, &c, url, local(), &rotation), [1, 0]);
        let by_host = CarpArray::new([("a", 1), ("b", 1)]);
        let same = [
            Candidate {
                name: "a:1",
                host: "a",
                weight: 1,
            },
            Candidate {
                name: "b:1",
                host: "b",
                weight: 1,
            },
        ];
        assert_eq!(
            order(RoundRobin::Carp, &same, url, local(), &rotation),
            by_host.order(url)
        );
    }
}
