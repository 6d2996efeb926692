//! The cache key: what the store, the hierarchy and the ICP responder all name an object by.

use http::Uri;

/// The cache key: the absolute URL, scheme and host in lower case.
pub fn cache_key(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    // Built by hand: this runs on every hit, and format! costs more than the lookup.
    let mut key = String::with_capacity(scheme.len() + 3 + authority.len() + path.len());
    key.push_str(scheme);
    key.push_str("://");
    key.push_str(authority);
    key[..scheme.len() + 3 + authority.len()].make_ascii_lowercase();
    key.push_str(path);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_ignore_case_of_scheme_and_host() {
        let a: Uri = "http://Example.COM/A?b=1".parse().unwrap();
        assert_eq!(cache_key(&a), "http://example.com/A?b=1");
    }
}
