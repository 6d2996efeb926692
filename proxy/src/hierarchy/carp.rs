//! CARP, the Cache Array Routing Protocol, computed exactly as Squid's `src/carp.cc` does, so
//! that Canopy and Squid send each URL to the same parent.
//!
//! Each parent has a 32-bit hash of its name (a Squid `cache_peer`'s name defaults to its
//! host) and a load multiplier derived from the weights. A request's URL is hashed into a
//! running value that Squid does *not* reset between parents: parent k (in weight order)
//! combines the hash of the URL's characters accumulated k + 1 times over. Resetting it per
//! parent, as the CARP draft does, disagreed with Squid 5.7 on 34 of 60 URLs.

use std::cmp::Ordering;

use http::Uri;

/// Squid's mixing constant.
const MIX: u32 = 0x6253_1965;

/// One parent's part in CARP.
#[derive(Debug, Clone, PartialEq)]
struct Member {
    /// Position in the list the array was built from.
    index: usize,
    hash: u32,
    load_multiplier: f64,
}

/// The parents of a CARP array, with their hashes and load multipliers (Squid's `carpInit`).
#[derive(Debug, Clone, PartialEq)]
pub struct CarpArray {
    /// In ascending weight order, ties in list order, as Squid sorts them.
    members: Vec<Member>,
}

impl CarpArray {
    /// The array of `parents`, each a name and a weight. A weight below 1 counts as 1, as
    /// Squid's `cache_peer` parser makes it.
    pub fn new<'a>(parents: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let parents: Vec<(usize, u32, u32)> = parents
            .into_iter()
            .enumerate()
            .map(|(index, (name, weight))| (index, name_hash(name), weight.max(1)))
            .collect();
        let total: f64 = parents.iter().map(|&(_, _, w)| f64::from(w)).sum();
        let mut weighted: Vec<(usize, u32, u32, f64)> = parents
            .into_iter()
            .map(|(index, hash, weight)| {
                let load_factor = f64::from(weight) / total;
                let load_factor = if (load_factor * 1000.0).floor() == 0.0 {
                    0.0
                } else {
                    load_factor
                };
                (index, hash, weight, load_factor)
            })
            .collect();
        // glibc's qsort, which Squid calls, is a merge sort here: stable.
        weighted.sort_by_key(|&(_, _, weight, _)| weight);

        // The draft's multipliers: X_k = ((K-k+1)(P_k - P_{k-1}) / (X_1…X_{k-1})
        // + X_{k-1}^(K-k+1))^(1/(K-k+1)), in Squid's order of operations.
        let k_total = weighted.len();
        let (mut p_last, mut x_product, mut x_last) = (0.0_f64, 1.0_f64, 0.0_f64);
        let members = weighted
            .into_iter()
            .enumerate()
            .map(|(k, (index, hash, _, load_factor))| {
                let kk1 = (k_total - k) as f64;
                let mut multiplier = (kk1 * (load_factor - p_last)) / x_product;
                multiplier += x_last.powf(kk1);
                multiplier = multiplier.powf(1.0 / kk1);
                x_product *= multiplier;
                x_last = multiplier;
                p_last = load_factor;
                Member {
                    index,
                    hash,
                    load_multiplier: multiplier,
                }
            })
            .collect();
        Self { members }
    }

    /// The parents for `url`, best first, as indexes into the list the array was built
    /// from. Squid takes the first of these that is alive; a parent whose score is 0 is never
    /// taken and is left out. `url` is the absolute URL as Squid sees it
    /// (`effectiveRequestUri`: scheme and host in lower case, no default port).
    pub fn order(&self, url: &str) -> Vec<usize> {
        let mut url_hash: u32 = 0;
        let mut scored: Vec<(usize, f64)> = self
            .members
            .iter()
            .enumerate()
            .map(|(position, member)| {
                // Not reset between parents: Squid's `user_hash` runs on.
                for &octet in url.as_bytes() {
                    url_hash = url_hash
                        .wrapping_add(url_hash.rotate_left(19))
                        .wrapping_add(signed_char(octet));
                }
                let mut combined = url_hash ^ member.hash;
                combined = combined.wrapping_add(combined.wrapping_mul(MIX));
                combined = combined.rotate_left(21);
                (position, f64::from(combined) * member.load_multiplier)
            })
            .filter(|&(_, score)| score > 0.0)
            .collect();
        // Highest score first; on a tie Squid keeps the one earlier in weight order.
        scored.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal));
        scored
            .into_iter()
            .map(|(position, _)| self.members[position].index)
            .collect()
    }

    /// The parent Squid would pick for `url` with every parent alive.
    pub fn pick(&self, url: &str) -> Option<usize> {
        self.order(url).first().copied()
    }
}

/// A request's URL as Squid's CARP hashes it (`effectiveRequestUri`): scheme and host in
/// lower case, the port only when it is not the scheme's default, then path and query.
pub fn request_url(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http").to_ascii_lowercase();
    let host = uri.host().unwrap_or_default().to_ascii_lowercase();
    let default_port = if scheme == "https" { 443 } else { 80 };
    let path = uri
        .path_and_query()
        .map(|p| p.as_str())
        .filter(|p| !p.is_empty())
        .unwrap_or("/");
    match uri.port_u16().filter(|&port| port != default_port) {
        Some(port) => format!("{scheme}://{host}:{port}{path}"),
        None => format!("{scheme}://{host}{path}"),
    }
}

/// Squid's per-peer hash over its name.
fn name_hash(name: &str) -> u32 {
    let mut hash: u32 = 0;
    for &octet in name.as_bytes() {
        hash = hash
            .wrapping_add(hash.rotate_left(19))
            .wrapping_add(signed_char(octet));
    }
    hash = hash.wrapping_add(hash.wrapping_mul(MIX));
    hash.rotate_left(21)
}

/// A C `char` added to an `unsigned int`: signed on Squid's platforms, so octets above 127
/// are sign-extended.
fn signed_char(octet: u8) -> u32 {
    octet as i8 as i32 as u32
}

#[cfg(test)]
mod tests;
