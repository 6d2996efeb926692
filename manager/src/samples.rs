//! The proxy's counters sampled into the database every few seconds, so charts have history
//! that survives a restart of either process. Each console samples its own node's proxy, so
//! a sample is kept by node: a chart shows one node, or the fleet summed (each node's
//! increases computed apart, then added).
//!
//! Samples hold the counters as the proxy reports them (they only grow while it runs); a
//! chart plots the increase between samples, and a counter that went down means the proxy
//! restarted, so the new value is the increase. Samples older than a week are thinned to
//! the last one of each five minutes (which keeps every increase), older than
//! [`KEEP_ROLLED_UP_S`] they go.

use std::time::Duration;

use canopy_config::control::ControlError;
use canopy_config::stats::{PeerSnapshot, PeerState, StatsSnapshot};
use canopy_config::versions::Db;
use serde::Serialize;
use sqlx::Row;

use crate::accounts::unix_now;
use crate::proxy;
use crate::state::AppState;

/// Samples this recent are all kept.
pub const FULL_RESOLUTION_S: i64 = 7 * 24 * 3600;
/// Older samples keep one per this many seconds.
pub const ROLLED_UP_STEP_S: i64 = 300;
/// Rolled-up samples are kept this long.
pub const KEEP_ROLLED_UP_S: i64 = 400 * 24 * 3600;

/// Whose samples a chart shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One node's.
    Node(String),
    /// Every node's, summed (on a lone Canopy: its whole history).
    Fleet,
}

impl Scope {
    /// From a page's `?node=`: empty or absent is the whole fleet.
    pub fn from_query(node: Option<&str>) -> Scope {
        match node.map(str::trim) {
            Some(name) if !name.is_empty() => Scope::Node(name.to_owned()),
            _ => Scope::Fleet,
        }
    }

    /// The node's name, empty for the fleet (as a form sends it back).
    pub fn node(&self) -> &str {
        match self {
            Scope::Node(name) => name,
            Scope::Fleet => "",
        }
    }
}

/// Samples the proxy's `stats` every `every` for as long as the console runs, as `node`'s.
pub async fn run_sampler(state: AppState, node: String, every: Duration) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(100)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_rollup = 0;
    loop {
        ticks.tick().await;
        let now = unix_now();
        match proxy::stats(&state.control).await {
            Ok(snapshot) => {
                if let Err(e) = record(&state.db, &node, now, &snapshot).await {
                    tracing::warn!("saving a stats sample: {e}");
                }
            }
            Err(ControlError::NotRunning(_)) => {}
            Err(e) => tracing::debug!("stats sample: {e}"),
        }
        if now - last_rollup >= 3600 {
            match roll_up(&state.db, now).await {
                Ok(()) => last_rollup = now,
                Err(e) => tracing::warn!("rolling up old stats samples: {e}"),
            }
        }
    }
}

fn icp_hits(peer: &PeerSnapshot) -> u64 {
    peer.icp_replies.get("HIT").copied().unwrap_or_default()
        + peer.icp_replies.get("HIT_OBJ").copied().unwrap_or_default()
}

fn icp_misses(peer: &PeerSnapshot) -> u64 {
    peer.icp_replies.get("MISS").copied().unwrap_or_default()
}

fn icp_other_replies(peer: &PeerSnapshot) -> u64 {
    peer.icp_replies.values().sum::<u64>() - icp_hits(peer) - icp_misses(peer)
}

/// Saves one snapshot of `node`'s proxy taken at `at` (unix seconds).
pub async fn record(db: &Db, node: &str, at: i64, s: &StatsSnapshot) -> Result<(), sqlx::Error> {
    let mut tx = db.pool().begin().await?;
    let icp_sent: u64 = s.peers.iter().map(|p| p.icp_queries).sum();
    let icp_replies: u64 = s.peers.iter().flat_map(|p| p.icp_replies.values()).sum();
    // A second sample in the same second replaces the first, peers and all.
    for table in ["stats_samples", "peer_samples"] {
        sqlx::query(&format!("DELETE FROM {table} WHERE node = $1 AND at = $2"))
            .bind(node)
            .bind(at)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(
        "INSERT INTO stats_samples (node, at, requests, hits, misses, bytes_from_cache,
            bytes_from_upstream, icp_queries_sent, icp_replies, icp_queries_received)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(node)
    .bind(at)
    .bind(s.requests as i64)
    .bind((s.hits_fresh + s.hits_stale + s.hits_revalidated) as i64)
    .bind(s.misses as i64)
    .bind(s.bytes_from_cache as i64)
    .bind(s.bytes_from_upstream as i64)
    .bind(icp_sent as i64)
    .bind(icp_replies as i64)
    .bind(s.icp_queries_received as i64)
    .execute(&mut *tx)
    .await?;
    for p in &s.peers {
        let reply_ms = if p.icp_reply_ms_recent > 0.0 {
            p.icp_reply_ms_recent
        } else {
            p.icp_reply_ms_avg
        };
        sqlx::query(
            "INSERT INTO peer_samples (node, at, peer, up, fetches, failures, bytes, icp_queries,
                icp_hits, icp_misses, icp_other_replies, icp_timeouts, icp_reply_ms,
                hits_served, false_hits, last_failure_at, last_failure)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        )
        .bind(node)
        .bind(at)
        .bind(&p.name)
        .bind(p.state.map(|st| i64::from(st == PeerState::Up)))
        .bind(p.fetches as i64)
        .bind(p.failures as i64)
        .bind(p.bytes as i64)
        .bind(p.icp_queries as i64)
        .bind(icp_hits(p) as i64)
        .bind(icp_misses(p) as i64)
        .bind(icp_other_replies(p) as i64)
        .bind(p.icp_timeouts as i64)
        .bind(reply_ms)
        .bind(p.hits_served as i64)
        .bind(p.false_hits as i64)
        .bind(p.last_failure.as_ref().map(|f| f.at.as_str()))
        .bind(p.last_failure.as_ref().map(|f| f.reason.as_str()))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}

/// Thins samples older than a week to one per five minutes; drops very old ones.
pub async fn roll_up(db: &Db, now: i64) -> Result<(), sqlx::Error> {
    let cut = now - FULL_RESOLUTION_S;
    let gone = now - KEEP_ROLLED_UP_S;
    sqlx::query(
        "DELETE FROM stats_samples WHERE at < $1 AND (at < $2 OR (node, at) NOT IN
           (SELECT node, max(at) FROM stats_samples WHERE at < $1 GROUP BY node, at / $3))",
    )
    .bind(cut)
    .bind(gone)
    .bind(ROLLED_UP_STEP_S)
    .execute(db.pool())
    .await?;
    sqlx::query(
        "DELETE FROM peer_samples WHERE at < $1 AND (at < $2 OR (node, peer, at) NOT IN
           (SELECT node, peer, max(at) FROM peer_samples WHERE at < $1
            GROUP BY node, peer, at / $3))",
    )
    .bind(cut)
    .bind(gone)
    .bind(ROLLED_UP_STEP_S)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// One sample of counters: when, and the values in a fixed order.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    pub at: i64,
    pub values: Vec<f64>,
}

/// Columns of `stats_samples`, in the order [`totals`] returns them.
pub const TOTAL_COLUMNS: &[&str] = &[
    "requests",
    "hits",
    "misses",
    "bytes_from_cache",
    "bytes_from_upstream",
    "icp_queries_sent",
    "icp_replies",
    "icp_queries_received",
];

/// Columns of `peer_samples`, in the order [`peer`] returns them.
pub const PEER_COLUMNS: &[&str] = &[
    "fetches",
    "failures",
    "bytes",
    "icp_queries",
    "icp_hits",
    "icp_misses",
    "icp_other_replies",
    "icp_timeouts",
    "icp_reply_ms",
    "hits_served",
    "false_hits",
];

/// One series per node, from rows ordered by node, then time.
fn series_from(
    rows: &[sqlx::any::AnyRow],
    columns: &[&str],
) -> Result<Vec<Vec<Sample>>, sqlx::Error> {
    let mut series: Vec<(String, Vec<Sample>)> = Vec::new();
    for row in rows {
        let node: String = row.try_get("node")?;
        let values = columns
            .iter()
            .map(|c| row.try_get::<f64, _>(*c))
            .collect::<Result<Vec<f64>, _>>()?;
        let sample = Sample {
            at: row.try_get("at")?,
            values,
        };
        match series.last_mut() {
            Some((of, samples)) if *of == node => samples.push(sample),
            _ => series.push((node, vec![sample])),
        }
    }
    Ok(series.into_iter().map(|(_, samples)| samples).collect())
}

/// The condition on `table`'s rows (aliased `s`) from `since` (`$1`) on, of the node `$2`
/// (every node when it is empty), each node's with its last sample before `since` (for the
/// first increase); `extra`: more conditions on the inner `b`.
fn since_condition(table: &str, extra: &str) -> String {
    format!(
        "($2 = '' OR s.node = $2) AND s.at >= (SELECT coalesce(max(b.at), $1) FROM {table} b
                                              WHERE b.node = s.node AND b.at < $1 {extra})"
    )
}

/// The columns read as floating point, so every value of a sample is an `f64`.
fn as_real(columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| format!("CAST({c} AS DOUBLE PRECISION) AS {c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Totals sampled from `since` on, one series per node of `scope`, each with its last
/// sample before `since` (for the first increase).
pub async fn totals(db: &Db, scope: &Scope, since: i64) -> Result<Vec<Vec<Sample>>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT s.node, s.at, {cols} FROM stats_samples s WHERE {condition}
         ORDER BY s.node, s.at",
        cols = as_real(TOTAL_COLUMNS),
        condition = since_condition("stats_samples", ""),
    ))
    .bind(since)
    .bind(scope.node())
    .fetch_all(db.pool())
    .await?;
    series_from(&rows, TOTAL_COLUMNS)
}

/// One peer's samples from `since` on, one series per node of `scope`, each with its last
/// one before `since`.
pub async fn peer(
    db: &Db,
    scope: &Scope,
    name: &str,
    since: i64,
) -> Result<Vec<Vec<Sample>>, sqlx::Error> {
    let rows = sqlx::query(&format!(
        "SELECT s.node, s.at, {cols} FROM peer_samples s WHERE s.peer = $3 AND {condition}
         ORDER BY s.node, s.at",
        cols = as_real(PEER_COLUMNS),
        condition = since_condition("peer_samples", "AND b.peer = $3"),
    ))
    .bind(since)
    .bind(scope.node())
    .bind(name)
    .fetch_all(db.pool())
    .await?;
    series_from(&rows, PEER_COLUMNS)
}

/// The nodes that have samples, by name (`''` for those from before samples had a node).
pub async fn sampled_nodes(db: &Db) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("SELECT DISTINCT node FROM stats_samples ORDER BY node")
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(|row| row.try_get("node")).collect()
}

/// A failure the proxy reported for a peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureSeen {
    pub at: String,
    pub reason: String,
}

/// The peer's most recent distinct failures seen by the nodes of `scope`, newest first.
pub async fn recent_failures(
    db: &Db,
    scope: &Scope,
    name: &str,
    limit: i64,
) -> Result<Vec<FailureSeen>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT DISTINCT last_failure_at, last_failure FROM peer_samples
         WHERE peer = $1 AND ($3 = '' OR node = $3) AND last_failure_at IS NOT NULL
         ORDER BY last_failure_at DESC LIMIT $2",
    )
    .bind(name)
    .bind(limit)
    .bind(scope.node())
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|row| {
            Ok(FailureSeen {
                at: row.try_get("last_failure_at")?,
                reason: row
                    .try_get::<Option<String>, _>("last_failure")?
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// A time window cut into equal buckets, one point of a chart each.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub end: i64,
    pub seconds: i64,
    pub buckets: usize,
}

impl Window {
    pub fn last_hour(now: i64) -> Window {
        Window {
            end: now,
            seconds: 3600,
            buckets: 60,
        }
    }

    pub fn start(&self) -> i64 {
        self.end - self.seconds
    }

    fn bucket_of(&self, at: i64) -> Option<usize> {
        if at <= self.start() || at > self.end {
            return None;
        }
        let offset = (at - self.start() - 1) * self.buckets as i64 / self.seconds;
        usize::try_from(offset).ok().filter(|b| *b < self.buckets)
    }
}

/// The counters' increases within each bucket, and the seconds those increases cover;
/// `None` where there was no sample (the proxy was down or the console was).
pub fn increases(samples: &[Sample], window: Window) -> Vec<Option<(f64, Vec<f64>)>> {
    let mut buckets: Vec<Option<(f64, Vec<f64>)>> = vec![None; window.buckets];
    for pair in samples.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let Some(b) = window.bucket_of(after.at) else {
            continue;
        };
        let restarted = after.values.iter().zip(&before.values).any(|(a, b)| a < b);
        let deltas: Vec<f64> = after
            .values
            .iter()
            .zip(&before.values)
            .map(|(a, b)| if restarted { *a } else { a - b })
            .collect();
        let seconds = (after.at - before.at) as f64;
        let slot = buckets[b].get_or_insert_with(|| (0.0, vec![0.0; deltas.len()]));
        slot.0 += seconds;
        for (sum, d) in slot.1.iter_mut().zip(deltas) {
            *sum += d;
        }
    }
    buckets
}

/// [`increases`], kept only for the buckets the samples cover from their start: a bucket
/// the proxy or the console came up in the middle of would give a rate from part of it.
pub fn whole_buckets(samples: &[Sample], window: Window) -> Vec<Option<(f64, Vec<f64>)>> {
    let mut whole = vec![false; window.buckets];
    let width = window.seconds / window.buckets as i64;
    for pair in samples.windows(2) {
        if let Some(b) = window.bucket_of(pair[1].at) {
            let bucket_start = window.start() + b as i64 * width;
            whole[b] |= pair[0].at <= bucket_start;
        }
    }
    increases(samples, window)
        .into_iter()
        .zip(whole)
        .map(|(bucket, whole)| bucket.filter(|_| whole))
        .collect()
}

/// [`whole_buckets`] of each node's series, added: the fleet's increases. A bucket is kept
/// where any node's is; its seconds are the most any node's cover, so that an increase over
/// them is the fleet's rate.
pub fn summed_buckets(series: &[Vec<Sample>], window: Window) -> Vec<Option<(f64, Vec<f64>)>> {
    let mut sum: Vec<Option<(f64, Vec<f64>)>> = vec![None; window.buckets];
    for one in series {
        for (slot, bucket) in sum.iter_mut().zip(whole_buckets(one, window)) {
            match (slot.as_mut(), bucket) {
                (Some((seconds, deltas)), Some((more_seconds, more))) => {
                    *seconds = seconds.max(more_seconds);
                    for (total, d) in deltas.iter_mut().zip(more) {
                        *total += d;
                    }
                }
                (None, bucket) => *slot = bucket,
                (Some(_), None) => {}
            }
        }
    }
    sum
}

/// [`means`] over the samples of every node's series together.
pub fn means_over(series: &[Vec<Sample>], index: usize, window: Window) -> Vec<Option<f64>> {
    means(&series.concat(), index, window)
}

/// The mean of column `index` over the samples in each bucket (for gauges, such as a
/// reply time, where 0 means nothing was measured).
pub fn means(samples: &[Sample], index: usize, window: Window) -> Vec<Option<f64>> {
    let mut sums = vec![(0.0, 0u32); window.buckets];
    for s in samples {
        let value = s.values.get(index).filter(|v| **v > 0.0);
        if let (Some(b), Some(v)) = (window.bucket_of(s.at), value) {
            sums[b].0 += v;
            sums[b].1 += 1;
        }
    }
    sums.into_iter()
        .map(|(sum, n)| (n > 0).then(|| sum / f64::from(n)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use canopy_config::stats::Failure;

    fn snapshot(requests: u64, hits: u64, peer_fetches: u64) -> StatsSnapshot {
        StatsSnapshot {
            requests,
            hits_fresh: hits,
            peers: vec![PeerSnapshot {
                name: "squid".into(),
                fetches: peer_fetches,
                icp_queries: peer_fetches * 2,
                icp_replies: [("HIT".to_owned(), peer_fetches), ("DENIED".to_owned(), 1)]
                    .into_iter()
                    .collect(),
                last_failure: Some(Failure {
                    at: "2026-01-01T00:00:00.000Z".into(),
                    reason: "connection refused".into(),
                }),
                ..PeerSnapshot::default()
            }],
            ..StatsSnapshot::default()
        }
    }

    #[tokio::test]
    async fn samples_come_back_as_increases_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
        let now = 1_000_000;
        record(&db, "a", now - 7200, &snapshot(1, 0, 0))
            .await
            .unwrap();
        record(&db, "a", now - 3590, &snapshot(10, 5, 1))
            .await
            .unwrap();
        record(&db, "a", now - 3000, &snapshot(30, 15, 3))
            .await
            .unwrap();
        // The proxy restarted: its counters began again.
        record(&db, "a", now - 2990, &snapshot(4, 2, 1))
            .await
            .unwrap();
        let window = Window::last_hour(now);
        let mut totals = totals(&db, &Scope::Fleet, window.start()).await.unwrap();
        assert_eq!(totals.len(), 1, "one node");
        let totals = totals.remove(0);
        assert_eq!(totals.len(), 4, "one sample before the window, three in it");
        let inc = increases(&totals, window);
        let (seconds, first) = inc[0].clone().unwrap();
        assert_eq!(seconds, 3610.0);
        assert_eq!(&first[..2], &[9.0, 5.0]);
        let (_, tenth) = inc[9].clone().unwrap();
        assert_eq!(&tenth[..2], &[20.0, 10.0]);
        let (_, restart) = inc[10].clone().unwrap();
        assert_eq!(
            &restart[..2],
            &[4.0, 2.0],
            "after a restart the new value is the increase"
        );
        assert!(inc[30].is_none());
        let peer = peer(&db, &Scope::Fleet, "squid", window.start())
            .await
            .unwrap()
            .concat();
        assert_eq!(peer.last().unwrap().values[0], 1.0);
        assert_eq!(
            peer.last().unwrap().values[6],
            1.0,
            "DENIED is an other reply"
        );
        let failures = recent_failures(&db, &Scope::Fleet, "squid", 5)
            .await
            .unwrap();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].reason, "connection refused");
    }

    #[tokio::test]
    async fn old_samples_are_thinned_not_lost() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
        let now = 100 * 24 * 3600;
        let old = now - FULL_RESOLUTION_S - 3 * ROLLED_UP_STEP_S;
        let old = old - old % ROLLED_UP_STEP_S;
        for i in 0..60 {
            record(&db, "a", old + i * 5, &snapshot(i as u64, 0, 0))
                .await
                .unwrap();
        }
        record(&db, "a", now - 10, &snapshot(100, 0, 0))
            .await
            .unwrap();
        record(&db, "a", now - KEEP_ROLLED_UP_S - 10, &snapshot(1, 0, 0))
            .await
            .unwrap();
        roll_up(&db, now).await.unwrap();
        let all = totals(&db, &Scope::Fleet, 0).await.unwrap().concat();
        let ats: Vec<i64> = all.iter().map(|s| s.at).collect();
        assert_eq!(ats, [old + 295, now - 10]);
        assert_eq!(
            all[0].values[0], 59.0,
            "the last of the five minutes is kept"
        );
        let peer = peer(&db, &Scope::Fleet, "squid", 0).await.unwrap().concat();
        assert_eq!(peer.len(), 2);
    }

    #[tokio::test]
    async fn two_nodes_samples_in_the_same_seconds_are_both_kept_and_summed() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("canopy.db")).await.unwrap();
        let now = 1_000_000;
        for (node, requests) in [("a", [10, 13, 20]), ("b", [500, 600, 700])] {
            for (i, n) in requests.into_iter().enumerate() {
                let at = now - 120 + 60 * i as i64;
                record(&db, node, at, &snapshot(n, 0, n)).await.unwrap();
            }
        }
        let window = Window::last_hour(now);
        let fleet = totals(&db, &Scope::Fleet, window.start()).await.unwrap();
        assert_eq!(fleet.len(), 2, "a series per node");
        assert!(fleet.iter().all(|one| one.len() == 3), "none overwritten");
        let sum = summed_buckets(&fleet, window);
        assert_eq!(
            sum[59].as_ref().map(|b| (b.0, b.1[0])),
            Some((60.0, 7.0 + 100.0))
        );
        assert_eq!(sum[58].as_ref().map(|b| b.1[0]), Some(3.0 + 100.0));
        let b = Scope::Node("b".to_owned());
        let only_b = totals(&db, &b, window.start()).await.unwrap();
        assert_eq!(
            summed_buckets(&only_b, window)[59].as_ref().unwrap().1[0],
            100.0
        );
        let peer_sum = summed_buckets(&peer(&db, &Scope::Fleet, "squid", 0).await.unwrap(), window);
        assert_eq!(peer_sum[59].as_ref().unwrap().1[0], 107.0, "fetches");
        assert_eq!(sampled_nodes(&db).await.unwrap(), ["a", "b"]);
    }

    #[test]
    fn a_minute_the_samples_began_in_the_middle_of_gives_no_rate() {
        let window = Window::last_hour(3600);
        let sample = |at: i64, misses: f64| Sample {
            at,
            values: vec![misses],
        };
        // Sampling began 20 s before the end of the minute 3480..3540.
        let samples = [
            sample(3520, 0.0),
            sample(3530, 2.0),
            sample(3540, 3.0),
            sample(3570, 4.0),
            sample(3600, 9.0),
        ];
        let buckets = whole_buckets(&samples, window);
        assert!(increases(&samples, window)[58].is_some());
        assert_eq!(buckets[58], None, "20 s of a minute");
        assert_eq!(
            buckets[59],
            Some((60.0, vec![6.0])),
            "the whole last minute"
        );
    }
}
