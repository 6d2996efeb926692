//! `canopy stats --clients`: who asked the running proxy (peers and child caches), and
//! what it answered them.

use std::process::ExitCode;

use canopy_config::control::{self, Command};
use canopy_config::stats::{ClientSnapshot, StatsSnapshot};

use super::{not_running, Paths};

/// The answer columns, by opcode name, in the order Squid's `mgr:server_list` gives them.
const OPCODES: [&str; 5] = ["HIT", "MISS", "MISS_NOFETCH", "DENIED", "ERR"];

pub(crate) async fn clients(paths: &Paths, json: bool) -> anyhow::Result<ExitCode> {
    let s: StatsSnapshot = control::call_typed(&paths.control, Command::Stats)
        .await
        .map_err(not_running)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s.clients)?);
    } else if s.clients.is_empty() {
        println!("no client has sent an ICP query, and no peer or ICP client an HTTP request");
    } else {
        print!("{}", table(&s.clients));
    }
    Ok(ExitCode::SUCCESS)
}

/// The clients as a table with a header line: names and dates left, counts right.
fn table(clients: &[ClientSnapshot]) -> String {
    let mut header = vec!["CLIENT", "PEER", "QUERIES"];
    header.extend(OPCODES);
    header.extend(["OBJECTS", "HITS", "BYTES", "LAST SEEN"]);
    let rows: Vec<Vec<String>> = clients.iter().map(row).collect();
    let last = header.len() - 1;
    super::table(&header, &rows, |i| i > 1 && i < last)
}

fn row(client: &ClientSnapshot) -> Vec<String> {
    let mut cells = vec![
        client
            .address
            .map_or_else(|| "other".to_owned(), |ip| ip.to_string()),
        client.peer.clone().unwrap_or_else(|| "-".to_owned()),
        client.icp_queries.to_string(),
    ];
    cells.extend(OPCODES.iter().map(|op| {
        client
            .icp_answers
            .get(*op)
            .copied()
            .unwrap_or(0)
            .to_string()
    }));
    cells.extend([
        client.objects.to_string(),
        client.hits.to_string(),
        client.bytes.to_string(),
        client
            .last_seen_at
            .clone()
            .unwrap_or_else(|| "-".to_owned()),
    ]);
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_with_aligned_columns_and_the_untracked_row_last() {
        let child = ClientSnapshot {
            address: Some("127.0.0.2".parse().unwrap()),
            peer: Some("squid".to_owned()),
            icp_queries: 12,
            icp_answers: [("HIT".to_owned(), 3), ("MISS".to_owned(), 9)].into(),
            objects: 3,
            hits: 3,
            bytes: 1500,
            last_seen_at: Some("2026-11-29T03:00:00.000Z".to_owned()),
        };
        let others = ClientSnapshot {
            icp_queries: 100,
            icp_answers: [("DENIED".to_owned(), 100)].into(),
            ..ClientSnapshot::default()
        };
        let text = table(&[child, others]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("CLIENT     PEER   QUERIES  HIT  MISS"));
        assert!(lines[1].starts_with("127.0.0.2  squid       12    3     9"));
        assert!(lines[2].starts_with("other      -          100    0     0"));
        let column = |line: &str| line.find("BYTES").or_else(|| line.find("1500"));
        assert_eq!(
            column(lines[0]).map(|c| c + 5),
            column(lines[1]).map(|c| c + 4)
        );
    }
}
