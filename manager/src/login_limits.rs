//! What checking passwords may cost the console. A check runs argon2, which holds 19 MiB for
//! tens of milliseconds, so:
//!
//! - at most [`CHECKS_AT_ONCE`] checks run at a time, each on one of as many threads of
//!   its own, and a login waits [`WAIT_FOR_A_CHECK`] at most for its turn (503 after that);
//! - an address, and an account, that keep failing wait longer and longer before their next
//!   attempt is checked, and are answered 429 without a check meanwhile; an attempt is
//!   counted as failed before it is checked, so attempts that arrive together cannot all
//!   slip through before the first has failed;
//! - a scraper's HTTP Basic credentials, once found good, are remembered for
//!   [`REMEMBER_SCRAPER`], so scraping `/metrics` costs no argon2 per scrape.
//!
//! The tables are bounded, so a flood of new addresses or names cannot grow them.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{mpsc, Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::http::{HeaderValue, StatusCode};
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use canopy_config::versions::Db;
use tokio::sync::Semaphore;

use crate::accounts::{self, CheckMemory};

/// Password checks running at once; each holds argon2's 19 MiB while it runs.
pub const CHECKS_AT_ONCE: usize = 2;
/// How long a login waits for a check to be free before it is told to come back.
pub const WAIT_FOR_A_CHECK: Duration = Duration::from_secs(3);
/// What a login told to come back is asked to wait.
const BUSY_RETRY_AFTER: Duration = Duration::from_secs(2);
/// An address may fail this often before it has to wait: 1 s, then twice as long after each
/// further failure, 5 minutes at most.
const PER_ADDRESS: Policy = Policy {
    free: 10,
    first: Duration::from_secs(1),
    most: Duration::from_secs(300),
};
/// An account is held back sooner but never long, since its owner may be among those
/// waiting.
const PER_ACCOUNT: Policy = Policy {
    free: 5,
    first: Duration::from_secs(1),
    most: Duration::from_secs(30),
};
/// Failures are forgotten after this long without another.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Addresses, and names, whose failures are remembered at most; the oldest go first.
const MOST_REMEMBERED: usize = 4096;
/// How long good Basic credentials are taken without a new check.
pub const REMEMBER_SCRAPER: Duration = Duration::from_secs(60);
/// Longest account name counted; longer ones are no account's.
const LONGEST_NAME: usize = 64;

/// What became of a login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    Good,
    Wrong,
    /// Not checked at all.
    Refused(Refusal),
}

/// Why an attempt was not checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("too many failed logins from {address}: try again in {} s", seconds(.retry_after))]
    Address {
        address: IpAddr,
        retry_after: Duration,
    },
    #[error("too many failed logins for {account:?}: try again in {} s", seconds(.retry_after))]
    Account {
        account: String,
        retry_after: Duration,
    },
    #[error(
        "every password check is busy (at most {CHECKS_AT_ONCE} at a time): try again in {} s",
        seconds(.retry_after)
    )]
    Busy { retry_after: Duration },
}

impl Refusal {
    /// 429 for an address or account that must wait, 503 when the checks are all busy.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Address { .. } | Refusal::Account { .. } => StatusCode::TOO_MANY_REQUESTS,
            Refusal::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `Retry-After` value: whole seconds, rounded up.
    pub fn retry_after(&self) -> HeaderValue {
        let (Refusal::Address { retry_after, .. }
        | Refusal::Account { retry_after, .. }
        | Refusal::Busy { retry_after }) = self;
        HeaderValue::from(seconds(retry_after))
    }
}

fn seconds(duration: &Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// The console's one gate for password checks; see the module's documentation.
#[derive(Debug)]
pub struct LoginLimits {
    checks: Arc<Semaphore>,
    checkers: Checkers,
    failures: Mutex<Failures>,
    scrapers: Mutex<HashMap<String, Remembered>>,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            checks: Arc::new(Semaphore::new(CHECKS_AT_ONCE)),
            checkers: Checkers::start(),
            failures: Mutex::new(Failures {
                addresses: Backoff::new(PER_ADDRESS),
                accounts: Backoff::new(PER_ACCOUNT),
            }),
            scrapers: Mutex::default(),
        }
    }
}

impl LoginLimits {
    /// Checks a login form's password from `from`.
    pub async fn check_login(
        &self,
        db: &Db,
        from: IpAddr,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Checked> {
        if let Err(refusal) = self.admit(from, user) {
            return Ok(Checked::Refused(refusal));
        }
        let stored = accounts::password_hash(db, user).await?;
        self.run_check(from, user, password, stored).await
    }

    /// Checks a scraper's HTTP Basic credentials from `from`; good ones are remembered for
    /// [`REMEMBER_SCRAPER`], until the account's password changes.
    pub async fn check_scrape(
        &self,
        db: &Db,
        from: IpAddr,
        user: &str,
        password: &str,
    ) -> anyhow::Result<Checked> {
        let stored = accounts::password_hash(db, user).await?;
        if let Some(stored) = &stored {
            if self.remembered(user, password, stored, Instant::now()) {
                return Ok(Checked::Good);
            }
        }
        if let Err(refusal) = self.admit(from, user) {
            return Ok(Checked::Refused(refusal));
        }
        let checked = self.run_check(from, user, password, stored.clone()).await?;
        if let (Checked::Good, Some(stored)) = (&checked, stored) {
            self.remember(user, password, stored, Instant::now());
        }
        Ok(checked)
    }

    /// Counts the attempt as failed until it is found good, or refuses it.
    fn admit(&self, from: IpAddr, user: &str) -> Result<(), Refusal> {
        self.failures()
            .admit(address_key(from), name_key(user), Instant::now())
    }

    /// Waits for a free check and runs it; forgets the failures on a good password.
    async fn run_check(
        &self,
        from: IpAddr,
        user: &str,
        password: &str,
        stored: Option<String>,
    ) -> anyhow::Result<Checked> {
        let (address, name) = (address_key(from), name_key(user));
        let wait = tokio::time::timeout(WAIT_FOR_A_CHECK, self.checks.clone().acquire_owned());
        let Ok(Ok(permit)) = wait.await else {
            self.failures().withdraw(address, name);
            return Ok(Checked::Refused(Refusal::Busy {
                retry_after: BUSY_RETRY_AFTER,
            }));
        };
        let password = password.to_owned();
        let (answer, good) = tokio::sync::oneshot::channel();
        // The permit goes with the check, so it stays taken even if the client leaves.
        self.checkers.run(Box::new(move |memory| {
            let _permit = permit;
            let _ = answer.send(accounts::password_matches(
                stored.as_deref(),
                &password,
                memory,
            ));
        }));
        let good = good.await.context("the password check thread stopped")?;
        if good {
            self.failures().forget(address, name);
            Ok(Checked::Good)
        } else {
            Ok(Checked::Wrong)
        }
    }

    fn failures(&self) -> MutexGuard<'_, Failures> {
        self.failures.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn scrapers(&self) -> MutexGuard<'_, HashMap<String, Remembered>> {
        self.scrapers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn remembered(&self, user: &str, password: &str, stored: &str, now: Instant) -> bool {
        self.scrapers().get(user).is_some_and(|r| {
            r.until > now && r.stored == stored && same_digest(&r.digest, &r.digest_of(password))
        })
    }

    fn remember(&self, user: &str, password: &str, stored: String, now: Instant) {
        let mut salt = [0u8; 16];
        if getrandom::fill(&mut salt).is_err() {
            return;
        }
        let mut remembered = Remembered {
            salt,
            digest: [0; 32],
            stored,
            until: now + REMEMBER_SCRAPER,
        };
        remembered.digest = remembered.digest_of(password);
        let mut scrapers = self.scrapers();
        scrapers.retain(|_, r| r.until > now);
        scrapers.insert(user.to_owned(), remembered);
    }
}

type Job = Box<dyn FnOnce(&mut CheckMemory) + Send>;

/// The threads that run password checks, each with argon2's memory of its own, allocated
/// once and reused. With a new thread per check (tokio's blocking pool) and argon2
/// allocating for each, 2 checks at a time still left 570 MiB behind in the allocator.
#[derive(Debug)]
struct Checkers {
    jobs: mpsc::Sender<Job>,
}

impl Checkers {
    /// Starts [`CHECKS_AT_ONCE`] threads; they end when the `Checkers` is dropped.
    fn start() -> Checkers {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..CHECKS_AT_ONCE {
            let queue = queue.clone();
            let started = std::thread::Builder::new()
                .name(format!("password-check-{n}"))
                .spawn(move || {
                    let mut memory = CheckMemory::new();
                    loop {
                        let job = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
                        match job {
                            Ok(job) => job(&mut memory),
                            Err(_) => return,
                        }
                    }
                });
            if let Err(e) = started {
                tracing::error!("starting a password check thread: {e}");
            }
        }
        Checkers { jobs }
    }

    /// Queues `job`; the caller holds a permit, so at most [`CHECKS_AT_ONCE`] are queued.
    fn run(&self, job: Job) {
        if self.jobs.send(job).is_err() {
            tracing::error!("no password check thread is running");
        }
    }
}

/// Good Basic credentials of one account: a salted digest of the password, never the
/// password, and the hash it matched, so that a new password ends it at once.
#[derive(Debug)]
struct Remembered {
    salt: [u8; 16],
    digest: [u8; 32],
    stored: String,
    until: Instant,
}

impl Remembered {
    fn digest_of(&self, password: &str) -> [u8; 32] {
        Blake2b::<U32>::new()
            .chain_update(self.salt)
            .chain_update(password.as_bytes())
            .finalize()
            .into()
    }
}

/// Compares in time that does not depend on where the digests differ.
fn same_digest(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// An IPv6 client is counted by its /64, which one host usually holds whole.
fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u64::MAX as u128))),
        },
    }
}

fn name_key(user: &str) -> &str {
    match user.char_indices().nth(LONGEST_NAME) {
        Some((end, _)) => &user[..end],
        None => user,
    }
}

#[derive(Debug)]
struct Failures {
    addresses: Backoff<IpAddr>,
    accounts: Backoff<String>,
}

impl Failures {
    /// Counts an attempt from `address` at `name` as failed, unless either must still wait.
    fn admit(&mut self, address: IpAddr, name: &str, now: Instant) -> Result<(), Refusal> {
        if let Some(retry_after) = self.addresses.waiting(&address, now) {
            return Err(Refusal::Address {
                address,
                retry_after,
            });
        }
        if let Some(retry_after) = self.accounts.waiting(name, now) {
            return Err(Refusal::Account {
                account: name.to_owned(),
                retry_after,
            });
        }
        self.addresses.count(address, now);
        self.accounts.count(name.to_owned(), now);
        Ok(())
    }

    /// Takes back an attempt that was never checked.
    fn withdraw(&mut self, address: IpAddr, name: &str) {
        self.addresses.withdraw(&address);
        self.accounts.withdraw(name);
    }

    fn forget(&mut self, address: IpAddr, name: &str) {
        self.addresses.forget(&address);
        self.accounts.forget(name);
    }
}

/// How many failures are free, and how long to wait after the next ones.
#[derive(Debug, Clone, Copy)]
struct Policy {
    free: u32,
    first: Duration,
    most: Duration,
}

impl Policy {
    /// The wait after `failures` failures in a row.
    fn wait_after(self, failures: u32) -> Duration {
        match failures.checked_sub(self.free) {
            None => Duration::ZERO,
            Some(beyond) => self
                .first
                .saturating_mul(1 << beyond.min(20))
                .min(self.most),
        }
    }
}

#[derive(Debug)]
struct Record {
    failures: u32,
    last: Instant,
    /// No attempt is checked before then.
    until: Instant,
}

/// Failures in a row per key, and the wait they have earned.
#[derive(Debug)]
struct Backoff<K> {
    policy: Policy,
    records: HashMap<K, Record>,
}

impl<K: Hash + Eq + Clone> Backoff<K> {
    fn new(policy: Policy) -> Self {
        Backoff {
            policy,
            records: HashMap::new(),
        }
    }

    /// How long `key` must still wait, if at all.
    fn waiting<Q>(&self, key: &Q, now: Instant) -> Option<Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let record = self.records.get(key)?;
        (record.until > now).then(|| record.until - now)
    }

    fn count(&mut self, key: K, now: Instant) {
        if !self.records.contains_key(&key) {
            self.make_room(now);
        }
        let record = self.records.entry(key).or_insert(Record {
            failures: 0,
            last: now,
            until: now,
        });
        if now.duration_since(record.last) > FORGET_AFTER {
            record.failures = 0;
        }
        record.failures = record.failures.saturating_add(1);
        record.last = now;
        record.until = now + self.policy.wait_after(record.failures);
    }

    fn withdraw<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(record) = self.records.get_mut(key) {
            record.failures = record.failures.saturating_sub(1);
            record.until = record.last + self.policy.wait_after(record.failures);
        }
    }

    fn forget<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.records.remove(key);
    }

    /// Before a new key: drops what is forgotten anyway, then the oldest if still full.
    fn make_room(&mut self, now: Instant) {
        if self.records.len() < MOST_REMEMBERED {
            return;
        }
        self.records
            .retain(|_, r| now.duration_since(r.last) <= FORGET_AFTER);
        if self.records.len() >= MOST_REMEMBERED {
            let oldest = self
                .records
                .iter()
                .min_by_key(|(_, r)| r.last)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.records.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests;
