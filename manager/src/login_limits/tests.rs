use std::net::Ipv4Addr;

use super::*;

const ALICE: &str = "alice";
const PASSWORD: &str = "alice's password";

fn address(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, last))
}

fn failures() -> Failures {
    Failures {
        addresses: Backoff::new(PER_ADDRESS),
        accounts: Backoff::new(PER_ACCOUNT),
    }
}

#[test]
fn the_wait_doubles_after_the_free_failures_up_to_its_cap() {
    let waits: Vec<u64> = (1..=12)
        .map(|n| PER_ACCOUNT.wait_after(n).as_secs())
        .collect();
    assert_eq!(waits, [0, 0, 0, 0, 1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(PER_ACCOUNT.wait_after(u32::MAX), PER_ACCOUNT.most);
}

#[test]
fn an_account_that_keeps_failing_waits_whatever_the_address() {
    let mut failures = failures();
    let now = Instant::now();
    for n in 0..PER_ACCOUNT.free {
        failures
            .admit(address(n as u8), ALICE, now)
            .unwrap_or_else(|e| panic!("attempt {n}: {e}"));
    }
    let refused = failures.admit(address(99), ALICE, now).unwrap_err();
    assert_eq!(
        refused,
        Refusal::Account {
            account: ALICE.to_owned(),
            retry_after: Duration::from_secs(1)
        }
    );
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.retry_after(), "1");
    assert_eq!(
        refused.to_string(),
        "too many failed logins for \"alice\": try again in 1 s"
    );
    failures
        .admit(address(99), "bob", now)
        .expect("another account is not held back");
    let later = now + Duration::from_secs(1);
    failures
        .admit(address(99), ALICE, later)
        .expect("once the wait is over");
    assert!(
        failures.admit(address(99), ALICE, later).is_err(),
        "and then for twice as long"
    );
}

#[test]
fn an_address_that_keeps_failing_waits_whatever_the_account() {
    let mut failures = failures();
    let now = Instant::now();
    for n in 0..PER_ADDRESS.free {
        failures
            .admit(address(1), &format!("user{n}"), now)
            .unwrap_or_else(|e| panic!("attempt {n}: {e}"));
    }
    let refused = failures.admit(address(1), "someone", now).unwrap_err();
    assert_eq!(
        refused,
        Refusal::Address {
            address: address(1),
            retry_after: Duration::from_secs(1)
        }
    );
    failures
        .admit(address(2), "someone", now)
        .expect("another address is not held back");
}

#[test]
fn a_good_password_forgets_and_an_unchecked_attempt_is_taken_back() {
    let mut failures = failures();
    let now = Instant::now();
    for _ in 0..PER_ACCOUNT.free {
        failures.admit(address(1), ALICE, now).unwrap();
    }
    failures.withdraw(address(1), ALICE);
    failures
        .admit(address(1), ALICE, now)
        .expect("the withdrawn attempt left room for one more");
    assert!(failures.admit(address(1), ALICE, now).is_err());
    failures.forget(address(1), ALICE);
    failures
        .admit(address(1), ALICE, now)
        .expect("a good login starts the count again");
}

#[test]
fn failures_long_ago_are_forgotten() {
    let mut failures = failures();
    let now = Instant::now();
    for _ in 0..PER_ACCOUNT.free {
        failures.admit(address(1), ALICE, now).unwrap();
    }
    let much_later = now + FORGET_AFTER + Duration::from_secs(1);
    for n in 0..PER_ACCOUNT.free - 1 {
        failures
            .admit(address(1), ALICE, much_later)
            .unwrap_or_else(|e| panic!("attempt {n}: {e}"));
    }
}

#[test]
fn the_tables_stay_bounded_under_a_flood_of_new_keys() {
    let mut backoff = Backoff::new(PER_ACCOUNT);
    let start = Instant::now();
    for n in 0..MOST_REMEMBERED + 500 {
        backoff.count(format!("user{n}"), start + Duration::from_millis(n as u64));
    }
    assert_eq!(backoff.records.len(), MOST_REMEMBERED);
    assert!(backoff
        .records
        .contains_key(&format!("user{}", MOST_REMEMBERED + 499)));
    assert!(
        !backoff.records.contains_key("user0"),
        "the oldest went first"
    );
}

#[test]
fn ipv6_clients_are_counted_by_their_64_and_mapped_ipv4_as_ipv4() {
    let one: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
    let other: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
    assert_eq!(address_key(one), address_key(other));
    assert_eq!(
        address_key(one),
        "2001:db8:1:2::".parse::<IpAddr>().unwrap()
    );
    let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
    assert_eq!(address_key(mapped), address(7));
    assert_eq!(name_key(&"x".repeat(1000)).len(), LONGEST_NAME);
}

async fn db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
    accounts::set_password(&db, ALICE, PASSWORD).await.unwrap();
    (dir, db)
}

#[tokio::test]
async fn logins_are_checked_and_refused_once_the_account_must_wait() {
    let (_dir, db) = db().await;
    let limits = LoginLimits::default();
    let from = address(1);
    assert_eq!(
        limits
            .check_login(&db, from, ALICE, PASSWORD)
            .await
            .unwrap(),
        Checked::Good
    );
    for _ in 0..PER_ACCOUNT.free {
        assert_eq!(
            limits.check_login(&db, from, ALICE, "wrong").await.unwrap(),
            Checked::Wrong
        );
    }
    assert!(matches!(
        limits
            .check_login(&db, from, ALICE, PASSWORD)
            .await
            .unwrap(),
        Checked::Refused(Refusal::Account { .. })
    ));
    assert_eq!(
        limits
            .check_login(&db, from, "nobody", "wrong")
            .await
            .unwrap(),
        Checked::Wrong,
        "a name that is not an account is checked like one"
    );
}

#[tokio::test]
async fn a_login_waits_for_a_free_check_and_is_told_to_come_back() {
    let (_dir, db) = db().await;
    let limits = LoginLimits::default();
    let all_checks = limits
        .checks
        .clone()
        .acquire_many_owned(CHECKS_AT_ONCE as u32)
        .await
        .unwrap();
    let refused = limits
        .check_login(&db, address(1), ALICE, PASSWORD)
        .await
        .unwrap();
    assert_eq!(
        refused,
        Checked::Refused(Refusal::Busy {
            retry_after: BUSY_RETRY_AFTER
        })
    );
    let Checked::Refused(busy) = refused else {
        unreachable!()
    };
    assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
    drop(all_checks);
    for _ in 0..PER_ACCOUNT.free - 1 {
        limits
            .check_login(&db, address(1), ALICE, "wrong")
            .await
            .unwrap();
    }
    assert_eq!(
        limits
            .check_login(&db, address(1), ALICE, PASSWORD)
            .await
            .unwrap(),
        Checked::Good,
        "the busy attempt was not counted as a failure"
    );
}

#[tokio::test]
async fn good_basic_credentials_are_remembered_until_the_password_changes() {
    let (_dir, db) = db().await;
    let limits = LoginLimits::default();
    let from = address(1);
    assert_eq!(
        limits
            .check_scrape(&db, from, ALICE, PASSWORD)
            .await
            .unwrap(),
        Checked::Good
    );
    // With every check taken, only remembered credentials can get an answer.
    let all_checks = limits
        .checks
        .clone()
        .acquire_many_owned(CHECKS_AT_ONCE as u32)
        .await
        .unwrap();
    assert_eq!(
        limits
            .check_scrape(&db, from, ALICE, PASSWORD)
            .await
            .unwrap(),
        Checked::Good
    );
    assert!(matches!(
        limits
            .check_scrape(&db, from, ALICE, "alice's passwordX")
            .await
            .unwrap(),
        Checked::Refused(Refusal::Busy { .. })
    ));
    accounts::set_password(&db, ALICE, "a new password")
        .await
        .unwrap();
    assert!(
        matches!(
            limits
                .check_scrape(&db, from, ALICE, PASSWORD)
                .await
                .unwrap(),
            Checked::Refused(Refusal::Busy { .. })
        ),
        "a new password ends what was remembered"
    );
    drop(all_checks);
    assert_eq!(
        limits
            .check_scrape(&db, from, ALICE, PASSWORD)
            .await
            .unwrap(),
        Checked::Wrong
    );
    assert_eq!(
        limits
            .check_scrape(&db, from, ALICE, "a new password")
            .await
            .unwrap(),
        Checked::Good
    );
    let stored = accounts::password_hash(&db, ALICE).await.unwrap().unwrap();
    let now = Instant::now();
    assert!(limits.remembered(ALICE, "a new password", &stored, now));
    assert!(!limits.remembered(ALICE, PASSWORD, &stored, now));
    assert!(
        !limits.remembered(ALICE, "a new password", &stored, now + REMEMBER_SCRAPER),
        "remembered for a while only"
    );
}
