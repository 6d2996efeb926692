use super::*;

/// Squid 5.7's `cache_peer … parent … carp` lines of the test: names and weights in order.
const PARENTS: [(&str, u32); 3] = [("alpha", 1), ("beta", 2), ("gamma", 1)];

/// Where Squid 5.7 sent these URLs with [`PARENTS`] (read off its access log).
const SQUID_PICKS: [(&str, &str); 12] = [
    ("http://carp.test/obj/0", "beta"),
    ("http://carp.test/obj/1", "beta"),
    ("http://carp.test/obj/2", "gamma"),
    ("http://carp.test/obj/3", "beta"),
    ("http://carp.test/obj/4", "alpha"),
    ("http://carp.test/obj/5", "beta"),
    ("http://carp.test/obj/6", "gamma"),
    ("http://carp.test/obj/7", "alpha"),
    ("http://carp.test/obj/8", "alpha"),
    ("http://carp.test/obj/9", "gamma"),
    ("http://carp.test/obj/10", "alpha"),
    ("http://carp.test/obj/11", "beta"),
];

fn member(array: &CarpArray, index: usize) -> &Member {
    array
        .members
        .iter()
        .find(|m| m.index == index)
        .expect("member")
}

#[test]
fn hashes_and_multipliers_are_the_ones_squid_reports() {
    // Squid's cache manager page `carp` for PARENTS: Hash %x, Multiplier %f.
    let array = CarpArray::new(PARENTS);
    let reported = [
        (0x_f2c6_9b1e, "0.908560"),
        (0x_1514_511f, "1.211414"),
        (0x_6c94_70bd, "0.908560"),
    ];
    for (index, (hash, multiplier)) in reported.into_iter().enumerate() {
        let member = member(&array, index);
        assert_eq!(member.hash, hash, "hash of {}", PARENTS[index].0);
        assert_eq!(format!("{:.6}", member.load_multiplier), multiplier);
    }
}

#[test]
fn every_url_goes_where_squid_sent_it() {
    let array = CarpArray::new(PARENTS);
    for (url, parent) in SQUID_PICKS {
        let picked = array.pick(url).map(|i| PARENTS[i].0);
        assert_eq!(picked, Some(parent), "{url}");
    }
}

#[test]
fn members_are_in_weight_order_ties_in_list_order() {
    let array = CarpArray::new(PARENTS);
    let order: Vec<usize> = array.members.iter().map(|m| m.index).collect();
    assert_eq!(order, vec![0, 2, 1]);
}

#[test]
fn the_order_lists_every_parent_once_best_first() {
    let array = CarpArray::new(PARENTS);
    for (url, _) in SQUID_PICKS {
        let mut order = array.order(url);
        assert_eq!(order.first().copied(), array.pick(url));
        order.sort_unstable();
        assert_eq!(order, vec![0, 1, 2]);
    }
}

#[test]
fn a_zero_weight_counts_as_one() {
    assert_eq!(
        CarpArray::new([("a", 0), ("b", 1)]),
        CarpArray::new([("a", 1), ("b", 1)])
    );
}

#[test]
fn no_parents_pick_nothing() {
    assert_eq!(CarpArray::new([]).pick("http://h/"), None);
}

#[test]
fn a_single_parent_takes_everything() {
    let array = CarpArray::new([("only", 7)]);
    assert_eq!(array.order("http://h/x"), vec![0]);
}

#[test]
fn octets_above_127_are_sign_extended_as_a_c_char() {
    assert_eq!(signed_char(b'a'), 0x61);
    assert_eq!(signed_char(0xe9), 0xffff_ffe9);
    assert_ne!(name_hash("caf\u{e9}"), name_hash("cafe"));
}

#[test]
fn the_url_hashed_is_squids_effective_request_uri() {
    let url = |text: &str| request_url(&text.parse().unwrap());
    assert_eq!(
        url("http://Carp.TEST:80/obj/1?q=A"),
        "http://carp.test/obj/1?q=A"
    );
    assert_eq!(url("http://carp.test:8080/x"), "http://carp.test:8080/x");
    assert_eq!(url("https://carp.test:443"), "https://carp.test/");
}
