//! The allocation-free Vary match against the normalized value it stands for.

use super::*;
use http::HeaderValue;
use proptest::prelude::*;

const NAMES: [HeaderName; 3] = [
    header::ACCEPT_LANGUAGE,
    header::ACCEPT_ENCODING,
    header::ACCEPT,
];

fn value_bytes() -> impl Strategy<Value = Vec<u8>> {
    let interesting = prop::sample::select(b"aAbBzZ;=q.1,, \t%-*".to_vec());
    prop::collection::vec(prop_oneof![any::<u8>(), interesting], 0..24)
}

/// Field lines of the three names, each line kept where it is a valid value.
fn request(lines: &[(usize, Vec<u8>)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, bytes) in lines {
        if let Ok(value) = HeaderValue::from_bytes(bytes) {
            map.append(NAMES[*name].clone(), value);
        }
    }
    map
}

fn lines() -> impl Strategy<Value = Vec<(usize, Vec<u8>)>> {
    prop::collection::vec((0..NAMES.len(), value_bytes()), 0..8)
}

proptest! {
    #[test]
    fn the_match_agrees_with_the_normalized_value(
        first in lines(),
        second in lines(),
        order in any::<prop::sample::Index>(),
    ) {
        let (a, b) = (request(&first), request(&second));
        // The same lines in another order: a value to match that often normalizes alike.
        let mut shuffled = first.clone();
        let turn = order.index(shuffled.len().max(1)).min(shuffled.len());
        shuffled.rotate_left(turn);
        let c = request(&shuffled);
        for name in &NAMES {
            for stored in [request_value(&a, name), request_value(&b, name), request_value(&c, name)] {
                prop_assert_eq!(
                    request_value_is(&a, name, stored.as_deref()),
                    request_value(&a, name) == stored,
                    "{} against {:?}", name, stored
                );
            }
        }
    }
}

#[test]
fn a_match_past_the_members_held_on_the_stack_agrees() {
    let many: Vec<String> = (0..40).rev().map(|i| format!("l{i:02}")).collect();
    let mut req = HeaderMap::new();
    let value = HeaderValue::from_str(&many.join(",")).expect("ascii");
    req.insert(header::ACCEPT_LANGUAGE, value);
    let normal = request_value(&req, &header::ACCEPT_LANGUAGE).expect("present");
    assert!(normal.starts_with("l00, l01, "), "{normal}");
    assert!(request_value_is(
        &req,
        &header::ACCEPT_LANGUAGE,
        Some(&normal)
    ));
    assert!(!request_value_is(
        &req,
        &header::ACCEPT_LANGUAGE,
        Some("l00")
    ));
    assert!(!request_value_is(&req, &header::ACCEPT_LANGUAGE, None));
}

#[test]
fn a_value_equal_but_for_its_end_does_not_match() {
    let mut req = HeaderMap::new();
    req.insert(header::ACCEPT, HeaderValue::from_static("text/html, */*"));
    assert!(request_value_is(
        &req,
        &header::ACCEPT,
        Some("text/html, */*")
    ));
    assert!(!request_value_is(
        &req,
        &header::ACCEPT,
        Some("text/html, */")
    ));
    assert!(!request_value_is(
        &req,
        &header::ACCEPT,
        Some("text/html, */*, x")
    ));
    assert!(!request_value_is(&req, &header::ACCEPT, Some("")));
    assert!(request_value_is(&HeaderMap::new(), &header::ACCEPT, None));
    req.insert(header::ACCEPT, HeaderValue::from_static(" , "));
    assert!(request_value_is(&req, &header::ACCEPT, Some("")));
    assert!(!request_value_is(&req, &header::ACCEPT, None));
}
