//! Console accounts, their sessions, and the counting of failed logins.
//!
//! Passwords are stored only as argon2id hashes. A session id is 32 random bytes; the
//! cookie carries it, the database only its SHA-256 (so reading the database opens no
//! session), and every form carries the session's own CSRF token.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use canopy_config::versions::{now_rfc3339, Db};
use sha2::{Digest, Sha256};
use sqlx::Row;

/// How long a login lasts.
pub const SESSION_SECONDS: i64 = 12 * 3600;

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// As the cookie carries it; never stored.
    pub id: String,
    pub user: String,
    /// Every form of this session carries this token; a POST without it is refused.
    pub csrf: String,
}

/// Sets (or creates the account with) `user`'s password.
pub async fn set_password(db: &Db, user: &str, password: &str) -> anyhow::Result<()> {
    check_user_name(user)?;
    if password.chars().count() < 8 {
        return Err(anyhow!("the password must be at least 8 characters long"));
    }
    let hash = hash_password(password.to_owned()).await?;
    sqlx::query(
        "INSERT INTO accounts (name, password_hash, created_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET password_hash = ?2, failed_logins = 0",
    )
    .bind(user)
    .bind(hash)
    .bind(now_rfc3339())
    .execute(db.pool())
    .await?;
    // A new password ends every session made with the old one.
    sqlx::query("DELETE FROM sessions WHERE account = ?")
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

fn check_user_name(user: &str) -> anyhow::Result<()> {
    let ok = !user.is_empty()
        && user.len() <= 64
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'));
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "account name {user:?}: expected 1 to 64 letters, digits, dots, dashes, underscores or @"
        ))
    }
}

async fn hash_password(password: String) -> anyhow::Result<String> {
    let salt_bytes = random_bytes::<16>()?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow!("salt: {e}"))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow!("hashing the password: {e}"))
    })
    .await
    .context("password hashing task")?
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
        sqlx::query_scalar("SELECT password_hash FROM accounts WHERE name = ?")
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
        "INSERT INTO login_failures (name, count, last_at) VALUES (?1, 1, ?2)
         ON CONFLICT (name) DO UPDATE SET count = count + 1, last_at = ?2",
    )
    .bind(truncate(user, 64))
    .bind(&now)
    .execute(db.pool())
    .await?;
    let in_a_row: Option<i64> = sqlx::query_scalar(
        "UPDATE accounts SET failed_logins = failed_logins + 1, last_failed_at = ?
         WHERE name = ? RETURNING failed_logins",
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
        sqlx::query_scalar("SELECT coalesce(sum(count), 0) FROM login_failures")
            .fetch_one(db.pool())
            .await?,
    )
}

/// Starts a session for `user` after a good password; resets the failure count.
pub async fn start_session(db: &Db, user: &str) -> anyhow::Result<Session> {
    let session = Session {
        id: random_token()?,
        user: user.to_owned(),
        csrf: random_token()?,
    };
    let now = unix_now();
    sqlx::query("DELETE FROM sessions WHERE expires_at < ?")
        .bind(now)
        .execute(db.pool())
        .await?;
    sqlx::query(
        "INSERT INTO sessions (id_sha256, account, csrf, created_at, expires_at)
         VALUES (?, ?, ?, ?, ?)",
    )
    .bind(stored_id(&session.id))
    .bind(user)
    .bind(&session.csrf)
    .bind(now_rfc3339())
    .bind(now + SESSION_SECONDS)
    .execute(db.pool())
    .await?;
    sqlx::query("UPDATE accounts SET failed_logins = 0, last_login_at = ? WHERE name = ?")
        .bind(now_rfc3339())
        .bind(user)
        .execute(db.pool())
        .await?;
    Ok(session)
}

/// The session with this id, when it exists and has not expired.
pub async fn find_session(db: &Db, id: &str) -> anyhow::Result<Option<Session>> {
    let row =
        sqlx::query("SELECT account, csrf FROM sessions WHERE id_sha256 = ? AND expires_at >= ?")
            .bind(stored_id(id))
            .bind(unix_now())
            .fetch_optional(db.pool())
            .await?;
    row.map(|row| {
        Ok(Session {
            id: id.to_owned(),
            user: row.try_get("account")?,
            csrf: row.try_get("csrf")?,
        })
    })
    .transpose()
}

pub async fn end_session(db: &Db, id: &str) -> anyhow::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE id_sha256 = ?")
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
fn generate_password() -> anyhow::Result<String> {
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

    #[test]
    fn secrets_compare_whole() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
