//! Console accounts, their roles, their sessions, and the counting of failed logins.
//!
//! Passwords are stored only as argon2id hashes. A session id is 32 random bytes; the
//! cookie carries it, the database only its SHA-256 (so reading the database opens no
//! session), and every form carries the session's own CSRF token. A session's role is read
//! from its account on every request, so a changed role counts from the next one.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use canopy_config::versions::{now_rfc3339, Db};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// How long a login lasts.
pub const SESSION_SECONDS: i64 = 12 * 3600;

/// The shortest password an account may have.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// What an account may do, as Traffic Manager's access levels: an administrator changes
/// anything; a monitor sees every page and changes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Administrator,
    Monitor,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Administrator, Role::Monitor];

    /// As stored, and as the CLI and the forms take it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "admin",
            Role::Monitor => "monitor",
        }
    }

    /// "an administrator", "a monitor".
    pub fn with_article(self) -> &'static str {
        match self {
            Role::Administrator => "an administrator",
            Role::Monitor => "a monitor",
        }
    }

    /// Whether this role may change anything (config, peers, cache, accounts).
    pub fn may_change(self) -> bool {
        self == Role::Administrator
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Administrator => "administrator",
            Role::Monitor => "monitor",
        })
    }
}

impl FromStr for Role {
    type Err = AccountError;

    fn from_str(text: &str) -> Result<Role, AccountError> {
        match text.trim().to_ascii_lowercase().as_str() {
            "admin" | "administrator" => Ok(Role::Administrator),
            "monitor" => Ok(Role::Monitor),
            _ => Err(AccountError::UnknownRole(text.to_owned())),
        }
    }
}

/// Why an account was not added, removed or changed; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error(
        "account name {0:?}: expected 1 to 64 letters, digits, dots, dashes, underscores or @"
    )]
    BadName(String),
    #[error(
        "the password has {0} characters; it must be at least {MIN_PASSWORD_CHARS} characters long"
    )]
    ShortPassword(usize),
    #[error("role {0:?}: expected admin or monitor")]
    UnknownRole(String),
    #[error("there is no account named {0:?}")]
    NotFound(String),
    #[error("there is already an account named {0:?}")]
    Exists(String),
    #[error(
        "{name:?} is the last administrator: it cannot be {what}; make another account an \
         administrator first"
    )]
    LastAdministrator { name: String, what: &'static str },
    #[error("hashing the password: {0}")]
    Hashing(String),
    #[error("the accounts database: {0}")]
    Database(#[from] sqlx::Error),
}

/// An account as the Accounts page and `canopy admin list` show it.
#[derive(Debug, Clone)]
pub struct Account {
    pub name: String,
    pub role: Role,
    pub created_at: String,
    pub last_login_at: Option<String>,
    /// Failed logins since the last good one.
    pub failed_logins: i64,
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// As the cookie carries it; never stored.
    pub id: String,
    pub user: String,
    /// The account's role as of this request.
    pub role: Role,
    /// Every form of this session carries this token; a POST without it is refused.
    pub csrf: String,
}

/// Sets (or creates the account, as an administrator, with) `user`'s password.
pub async fn set_password(db: &Db, user: &str, password: &str) -> Result<(), AccountError> {
    check_user_name(user)?;
    let hash = hash_password(password).await?;
    sqlx::query(
        "INSERT INTO accounts (name, password_hash, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO UPDATE SET password_hash = $2, failed_logins = 0",
    )
    .bind(user)
    .bind(hash)
    .bind(now_rfc3339())
    .execute(db.pool())
    .await?;
    end_sessions_of(db, user).await
}

/// Replaces the password of the account `user`, which must exist, and ends its sessions.
pub async fn change_password(db: &Db, user: &str, password: &str) -> Result<(), AccountError> {
    let hash = hash_password(password).await?;
    let changed =
        sqlx::query("UPDATE accounts SET password_hash = $1, failed_logins = 0 WHERE name = $2")
            .bind(hash)
            .bind(user)
            .execute(db.pool())
            .await?
            .rows_affected();
    if changed == 0 {
        return Err(AccountError::NotFound(user.to_owned()));
    }
    end_sessions_of(db, user).await
}

/// Creates the account `name` with `role`; refused when the name is taken.
pub async fn add(db: &Db, name: &str, role: Role, password: &str) -> Result<(), AccountError> {
    check_user_name(name)?;
    let hash = hash_password(password).await?;
    let added = sqlx::query(
        "INSERT INTO accounts (name, password_hash, created_at, role) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(hash)
    .bind(now_rfc3339())
    .bind(role.as_str())
    .execute(db.pool())
    .await?
    .rows_affected();
    if added == 0 {
        return Err(AccountError::Exists(name.to_owned()));
    }
    Ok(())
}

/// Removes the account `name` and ends its sessions; never the last administrator.
pub async fn remove(db: &Db, name: &str) -> Result<(), AccountError> {
    // One statement, so two removals at once cannot both pass the count.
    let removed = sqlx::query(
        "DELETE FROM accounts WHERE name = $1
         AND (role != 'admin' OR (SELECT count(*) FROM accounts WHERE role = 'admin') > 1)",
    )
    .bind(name)
    .execute(db.pool())
    .await?
    .rows_affected();
    if removed == 0 {
        return Err(refusal(db, name, "removed").await);
    }
    end_sessions_of(db, name).await
}

/// Gives the account `name` the role `role`, from its next request on; never demotes the last
/// administrator.
pub async fn set_role(db: &Db, name: &str, role: Role) -> Result<(), AccountError> {
    let changed = sqlx::query(
        "UPDATE accounts SET role = $2 WHERE name = $1
         AND ($2 = 'admin' OR role != 'admin'
              OR (SELECT count(*) FROM accounts WHERE role = 'admin') > 1)",
    )
    .bind(name)
    .bind(role.as_str())
    .execute(db.pool())
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(refusal(db, name, "made a monitor").await);
    }
    Ok(())
}

/// Why a guarded change of `name` touched no row: no such account, or it is the last
/// administrator.
async fn refusal(db: &Db, name: &str, what: &'static str) -> AccountError {
    match find(db, name).await {
        Ok(Some(_)) => AccountError::LastAdministrator {
            name: name.to_owned(),
            what,
        },
        Ok(None) => AccountError::NotFound(name.to_owned()),
        Err(e) => e,
    }
}

/// The account `name`, when there is one.
pub async fn find(db: &Db, name: &str) -> Result<Option<Account>, AccountError> {
    Ok(list(db).await?.into_iter().find(|a| a.name == name))
}

/// Every account, by name.
pub async fn list(db: &Db) -> Result<Vec<Account>, AccountError> {
    let rows = sqlx::query(
        "SELECT name, role, created_at, last_login_at, failed_logins FROM accounts ORDER BY name",
    )
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(Account {
                name: row.try_get("name")?,
                role: row.try_get::<String, _>("role")?.parse()?,
                created_at: row.try_get("created_at")?,
                last_login_at: row.try_get("last_login_at")?,
                failed_logins: row.try_get("failed_logins")?,
            })
        })
        .collect()
}

async fn end_sessions_of(db: &Db, user: &str) -> Result<(), AccountError> {
    sqlx::query("DELETE FROM sessions WHERE account = $1")
        .bind(user)
        .execute(db.pool())
        .await?;
    Ok(())
}

/// Creates `admin` with a generated password when there is no account at all, and returns
/// that password so the caller can print it once.
pub async fn ensure_admin(db: &Db) -> anyhow::Result<Option<String>> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(db.pool())
        .await?;
    if count > 0 {
        return Ok(None);
    }
    let password = generate_password()?;
    set_password(db, "admin", &password).await?;
    Ok(Some(password))
}

fn check_user_name(user: &str) -> Result<(), AccountError> {
    let ok = !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    if ok {
        Ok(())
    } else {
        Err(AccountError::BadName(user.to_owned()))
    }
}

async fn hash_password(password: &str) -> Result<String, AccountError> {
    let length = password.chars().count();
    if length < MIN_PASSWORD_CHARS {
        return Err(AccountError::ShortPassword(length));
    }
    let salt_bytes = random_bytes::<16>().map_err(|e| AccountError::Hashing(e.to_string()))?;
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&salt_bytes)
            .map_err(|e| AccountError::Hashing(format!("salt: {e}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AccountError::Hashing(e.to_string()))
    })
    .await
    .map_err(|e| AccountError::Hashing(format!("the hashing task: {e}")))?
}

/// Checks `user`'s password. Unknown users cost as much time as wrong passwords.
///
/// Runs argon2 without any limit: the console's requests go through
/// [`crate::login_limits::LoginLimits`] instead.
pub async fn verify_password(db: &Db, user: &str, password: &str) -> anyhow::Result<bool> {
    let stored = password_hash(db, user).await?;
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        password_matches(stored.as_deref(), &password, &mut CheckMemory::new())
    })
    .await
    .context("password check task")
}

/// The stored argon2 hash of `user`'s password, when `user` is an account.
pub async fn password_hash(db: &Db, user: &str) -> anyhow::Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT password_hash FROM accounts WHERE name = $1")
            .bind(user)
            .fetch_optional(db.pool())
            .await?,
    )
}

/// Argon2's working memory (19 MiB for the hashes made here), grown to what a check needs
/// and kept for the next, so that checks do not each ask the allocator for it anew.
pub type CheckMemory = Vec<Block>;

/// Whether `password` matches the `stored` hash; without an account it is checked against a
/// stand-in hash, so that a name that is not an account costs as much as a wrong password.
/// Runs argon2 (tens of milliseconds) in `memory`: call it off the async threads.
pub fn password_matches(stored: Option<&str>, password: &str, memory: &mut CheckMemory) -> bool {
    match stored {
        Some(stored) => matches_hash(stored, password, memory),
        None => {
            if let Some(stand_in) = stand_in_hash() {
                matches_hash(stand_in, password, memory);
            }
            false
        }
    }
}

/// What argon2's `verify_password` does, in memory the caller keeps.
fn matches_hash(stored: &str, password: &str, memory: &mut CheckMemory) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let algorithm = Algorithm::try_from(parsed.algorithm);
    let version = parsed.version.map(Version::try_from).transpose();
    let (Ok(algorithm), Ok(version), Ok(params)) = (algorithm, version, Params::try_from(&parsed))
    else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version.unwrap_or_default(), params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..blocks])
        .is_ok()
        && same_bytes(&out, expected.as_bytes())
}

/// A hash made with the same parameters as every account's, of a password nobody types.
fn stand_in_hash() -> Option<&'static str> {
    static STAND_IN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    STAND_IN
        .get_or_init(|| {
            let salt = SaltString::encode_b64(b"canopy stand-in!").ok()?;
            Argon2::default()
                .hash_password(b"not an account", &salt)
                .ok()
                .map(|h| h.to_string())
        })
        .as_deref()
}

/// Counts a failed login for `user` (an account or not); returns how many in a row the
/// account has had since its last good login (1 for a name that is not an account).
pub async fn record_failed_login(db: &Db, user: &str) -> anyhow::Result<i64> {
    let now = now_rfc3339();
    sqlx::query(
        "INSERT INTO login_failures (name, count, last_at) VALUES ($1, 1, $2)
         ON CONFLICT (name) DO UPDATE SET count = count + 1, last_at = $2",
    )
    .bind(truncate(user, 64))
    .bind(&now)
    .execute(db.pool())
    .await?;
    let in_a_row: Option<i64> = sqlx::query_scalar(
        "UPDATE accounts SET failed_logins = failed_logins + 1, last_failed_at = $1
         WHERE name = $2 RETURNING failed_logins",
    )
    .bind(&now)
    .bind(user)
    .fetch_optional(db.pool())
    .await?;
    Ok(in_a_row.unwrap_or(1))
}

/// Failed logins ever, for accounts and unknown names alike (never goes down).
pub async fn failed_login_total(db: &Db) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT CAST(coalesce(sum(count), 0) AS BIGINT) FROM login_failures")
            .fetch_one(db.pool())
            .await?,
    )
}

/// Starts a session for `user` after a good password; resets the failure count.
pub async fn start_session(db: &Db, user: &str) -> anyhow::Result<Session> {
    let role = find(db, user)
        .await?
        .ok_or_else(|| AccountError::NotFound(user.to_owned()))?
        .role;
    let session = Session {
        id: random_token()?,
        user: user.to_owned(),
        role,
        csrf: random_token()?,
    };
    let now = unix_now();
    sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
        .bind(now)
        .execute(db.pool())
        .await?;
    sqlx::query(
        "INSERT INTO sessions (id_sha256, account, csrf, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(stored_id(&session.id))
    .bind(user)
    .bind(&session.csrf)
    .bind(now_rfc3339())
    .bind(now + SESSION_SECONDS)
    .execute(db.pool())
    .await?;
    sqlx::query("UPDATE accounts SET failed_logins = 0, last_login_at = $1 WHERE name = $2")
        .bind(now_rfc3339())
        .bind(user)
        .execute(db.pool())
        .await?;
    Ok(session)
}

/// The session with this id, when it exists, has not expired and its account still exists,
/// with the account's role as it is now.
pub async fn find_session(db: &Db, id: &str) -> anyhow::Result<Option<Session>> {
    let row = sqlx::query(
        "SELECT s.account, s.csrf, a.role FROM sessions s JOIN accounts a ON a.name = s.account
         WHERE s.id_sha256 = $1 AND s.expires_at >= $2",
    )
    .bind(stored_id(id))
    .bind(unix_now())
    .fetch_optional(db.pool())
    .await?;
    row.map(|row| {
        Ok(Session {
            id: id.to_owned(),
            user: row.try_get("account")?,
            role: row.try_get::<String, _>("role")?.parse()?,
            csrf: row.try_get("csrf")?,
        })
    })
    .transpose()
}

pub async fn end_session(db: &Db, id: &str) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE id_sha256 = $1")
        .bind(stored_id(id))
        .execute(db.pool())
        .await?;
    Ok(())
}

/// What the database keeps of a session id: its SHA-256 in hex. The id is 256 random
/// bits, so a fast hash is enough; no one can find an id from it.
fn stored_id(id: &str) -> String {
    format!("{:x}", Sha256::digest(id.as_bytes()))
}

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| anyhow!("the system's random source: {e}"))?;
    Ok(bytes)
}

/// 32 random bytes as hex: a session id or a CSRF token.
pub fn random_token() -> anyhow::Result<String> {
    Ok(random_bytes::<32>()?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// 20 characters from an alphabet without look-alikes (no 0/O, 1/l/I).
pub fn generate_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - 256 % ALPHABET.len();
    let mut password = String::new();
    while password.len() < 20 {
        for b in random_bytes::<32>()? {
            if (b as usize) < limit && password.len() < 20 {
                password.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(password)
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    same_bytes(a.as_bytes(), b.as_bytes())
}

fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
        (dir, db)
    }

    #[tokio::test]
    async fn the_first_admin_is_created_once() {
        let (_dir, db) = db().await;
        let password = ensure_admin(&db).await.unwrap().unwrap();
        assert_eq!(password.len(), 20);
        assert!(verify_password(&db, "admin", &password).await.unwrap());
        assert!(!verify_password(&db, "admin", "wrong password")
            .await
            .unwrap());
        assert_eq!(ensure_admin(&db).await.unwrap(), None);
    }

    #[tokio::test]
    async fn set_password_replaces_the_old_one_and_ends_sessions() {
        let (_dir, db) = db().await;
        set_password(&db, "alice", "first password").await.unwrap();
        let session = start_session(&db, "alice").await.unwrap();
        assert!(find_session(&db, &session.id).await.unwrap().is_some());
        set_password(&db, "alice", "second password").await.unwrap();
        assert!(find_session(&db, &session.id).await.unwrap().is_none());
        assert!(!verify_password(&db, "alice", "first password")
            .await
            .unwrap());
        assert!(verify_password(&db, "alice", "second password")
            .await
            .unwrap());
        assert!(set_password(&db, "alice", "short").await.is_err());
        assert!(set_password(&db, "bad name", "long enough").await.is_err());
    }

    #[tokio::test]
    async fn failed_logins_are_counted_for_known_and_unknown_names() {
        let (_dir, db) = db().await;
        set_password(&db, "alice", "a password").await.unwrap();
        assert_eq!(record_failed_login(&db, "alice").await.unwrap(), 1);
        assert_eq!(record_failed_login(&db, "alice").await.unwrap(), 2);
        record_failed_login(&db, "mallory").await.unwrap();
        assert_eq!(failed_login_total(&db).await.unwrap(), 3);
        start_session(&db, "alice").await.unwrap();
        assert_eq!(
            record_failed_login(&db, "alice").await.unwrap(),
            1,
            "a good login starts the count again"
        );
        assert_eq!(
            failed_login_total(&db).await.unwrap(),
            4,
            "the total never goes down"
        );
    }

    #[tokio::test]
    async fn the_database_keeps_only_the_hash_of_a_session_id() {
        let (_dir, db) = db().await;
        set_password(&db, "alice", "a password").await.unwrap();
        let session = start_session(&db, "alice").await.unwrap();
        let stored: Vec<String> = sqlx::query_scalar("SELECT id_sha256 FROM sessions")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert_eq!(stored, [stored_id(&session.id)]);
        assert_ne!(stored[0], session.id);
        assert!(
            find_session(&db, &stored[0]).await.unwrap().is_none(),
            "what the database holds does not open the session"
        );
        let found = find_session(&db, &session.id).await.unwrap().unwrap();
        assert_eq!((found.user.as_str(), found.csrf), ("alice", session.csrf));
        end_session(&db, &session.id).await.unwrap();
        assert!(find_session(&db, &session.id).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn sessions_stored_in_plain_text_end_with_the_upgrade() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("canopy.db");
        // The schema as it was before session ids were hashed.
        let old = dir.path().join("old-migrations");
        std::fs::create_dir(&old).unwrap();
        for name in [
            "0001_config_versions.sql",
            "0002_accounts.sql",
            "0003_stats_samples.sql",
        ] {
            let from = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations");
            std::fs::copy(from.join(name), old.join(name)).unwrap();
        }
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path())
            .await
            .unwrap()
            .run(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO accounts (name, password_hash, created_at) VALUES ('alice', 'x', 'now');
             INSERT INTO sessions (id, account, csrf, created_at, expires_at)
             VALUES ('plain', 'alice', 'csrf', 'now', 9999999999);",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;

        let db = Db::open(&path).await.unwrap();
        assert!(find_session(&db, "plain").await.unwrap().is_none());
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(
            left, 0,
            "the plain-text session is gone; its user logs in again"
        );
    }

    #[test]
    fn a_session_id_is_stored_as_its_sha256() {
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        assert_eq!(
            stored_id("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn checks_reuse_their_memory_and_agree_with_argon2() {
        let (_dir, db) = db().await;
        set_password(&db, "alice", "a password").await.unwrap();
        let stored = password_hash(&db, "alice").await.unwrap().unwrap();
        let parsed = PasswordHash::new(&stored).unwrap();
        let mut memory = CheckMemory::new();
        for (password, expected) in [("a password", true), ("a passworD", false), ("", false)] {
            use argon2::PasswordVerifier;
            let argon2_says = Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok();
            assert_eq!(argon2_says, expected, "{password:?}");
            assert_eq!(
                password_matches(Some(&stored), password, &mut memory),
                expected,
                "{password:?}"
            );
        }
        assert_eq!(
            memory.len(),
            Params::DEFAULT_M_COST as usize,
            "19 MiB, kept"
        );
        assert!(!password_matches(None, "a password", &mut memory));
        assert!(!password_matches(
            Some("not a hash"),
            "a password",
            &mut memory
        ));
    }

    #[tokio::test]
    async fn the_last_administrator_is_neither_removed_nor_demoted() {
        let (_dir, db) = db().await;
        set_password(&db, "admin", "a password").await.unwrap();
        add(&db, "watcher", Role::Monitor, "a password")
            .await
            .unwrap();
        for refused in [
            remove(&db, "admin").await,
            set_role(&db, "admin", Role::Monitor).await,
        ] {
            match refused {
                Err(AccountError::LastAdministrator { name, .. }) => assert_eq!(name, "admin"),
                other => panic!("{other:?}"),
            }
        }
        let text = remove(&db, "admin").await.unwrap_err().to_string();
        assert_eq!(
            text,
            "\"admin\" is the last administrator: it cannot be removed; make another account \
             an administrator first"
        );
        assert_eq!(
            find(&db, "admin").await.unwrap().unwrap().role,
            Role::Administrator
        );

        set_role(&db, "watcher", Role::Administrator).await.unwrap();
        set_role(&db, "admin", Role::Monitor).await.unwrap();
        assert!(matches!(
            remove(&db, "watcher").await,
            Err(AccountError::LastAdministrator { .. })
        ));
        remove(&db, "admin").await.unwrap();
        let left: Vec<(String, Role)> = list(&db)
            .await
            .unwrap()
            .into_iter()
            .map(|a| (a.name, a.role))
            .collect();
        assert_eq!(left, [("watcher".to_owned(), Role::Administrator)]);
    }

    #[tokio::test]
    async fn a_monitor_is_removed_and_missing_accounts_are_named() {
        let (_dir, db) = db().await;
        set_password(&db, "admin", "a password").await.unwrap();
        add(&db, "watcher", Role::Monitor, "a password")
            .await
            .unwrap();
        assert!(matches!(
            add(&db, "watcher", Role::Administrator, "a password").await,
            Err(AccountError::Exists(name)) if name == "watcher"
        ));
        assert_eq!(
            find(&db, "watcher").await.unwrap().unwrap().role,
            Role::Monitor
        );
        remove(&db, "watcher").await.unwrap();
        for missing in [
            remove(&db, "watcher").await,
            set_role(&db, "watcher", Role::Administrator).await,
            change_password(&db, "watcher", "a password").await,
        ] {
            assert!(
                matches!(&missing, Err(AccountError::NotFound(name)) if name == "watcher"),
                "{missing:?}"
            );
        }
        assert!(matches!(
            add(&db, "x", Role::Monitor, "short").await,
            Err(AccountError::ShortPassword(5))
        ));
        assert!(matches!(
            add(&db, "bad name", Role::Monitor, "long enough").await,
            Err(AccountError::BadName(_))
        ));
    }

    #[tokio::test]
    async fn a_session_has_its_accounts_role_as_of_now_and_ends_with_the_account() {
        let (_dir, db) = db().await;
        set_password(&db, "admin", "a password").await.unwrap();
        add(&db, "bob", Role::Administrator, "a password")
            .await
            .unwrap();
        let session = start_session(&db, "bob").await.unwrap();
        assert_eq!(session.role, Role::Administrator);
        set_role(&db, "bob", Role::Monitor).await.unwrap();
        let found = find_session(&db, &session.id).await.unwrap().unwrap();
        assert_eq!(found.role, Role::Monitor, "demoted from the next request");
        assert!(!found.role.may_change());
        remove(&db, "bob").await.unwrap();
        assert!(find_session(&db, &session.id).await.unwrap().is_none());
        let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
            .fetch_one(db.pool())
            .await
            .unwrap();
        assert_eq!(sessions, 0);
    }

    #[test]
    fn roles_read_as_the_cli_and_the_forms_write_them() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().unwrap(), role);
            assert_eq!(role.to_string().parse::<Role>().unwrap(), role);
        }
        assert!(Role::Administrator.may_change());
        assert!(!Role::Monitor.may_change());
        assert_eq!(
            "root".parse::<Role>().unwrap_err().to_string(),
            "role \"root\": expected admin or monitor"
        );
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
