//! What a config version changed, told for people: the console's History and
//! `canopy config history` / `diff` say it the same way.

use crate::config::{Config, ParentRule};
use crate::import::parent_config;
use crate::versions::ConfigVersion;

/// What version `v` changed: from `before` (the version saved just before it) field by
/// field when at hand, else as its summary says.
pub fn version_changes(v: &ConfigVersion, before: Option<&ConfigVersion>) -> Vec<String> {
    match before {
        Some(before) => {
            let mut changes = readable_diff(&v.config, &before.config);
            if v.summary.starts_with("restored ") {
                let label = v.summary.split(':').next().unwrap_or_default();
                changes.insert(0, label.to_owned());
            }
            if changes.is_empty() {
                changes.push("no change".to_owned());
            }
            changes
        }
        None => changes_of(&v.summary),
    }
}

/// What changed from `before` to `after`, one line per setting, for a changed peer each
/// of its fields that changed, and for the routing rules which rule changed and how.
pub fn readable_diff(after: &Config, before: &Config) -> Vec<String> {
    after
        .diff(before)
        .into_iter()
        .flat_map(|line| {
            let changed_peer = line
                .strip_prefix("peer ")
                .and_then(|rest| rest.strip_suffix(" changed"));
            match changed_peer {
                Some(name) => vec![peer_change(name, after, before).unwrap_or(line)],
                None if line.starts_with("parent rules:") => {
                    rule_changes(&after.parent_rules, &before.parent_rules)
                }
                None => vec![line],
            }
        })
        .collect()
}

/// The rules as parent.config lines: one added, removed or moved up is said so; anything
/// else, rule by rule.
fn rule_changes(after: &[ParentRule], before: &[ParentRule]) -> Vec<String> {
    let without = |rules: &[ParentRule], i: usize| {
        let mut rest = rules.to_vec();
        rest.remove(i);
        rest
    };
    if let Some(i) = (0..after.len()).find(|&i| without(after, i) == before) {
        return vec![format!(
            "rule {} added: {}",
            i + 1,
            parent_config::line(&after[i])
        )];
    }
    if let Some(i) = (0..before.len()).find(|&i| without(before, i) == after) {
        return vec![format!(
            "rule {} removed: {}",
            i + 1,
            parent_config::line(&before[i])
        )];
    }
    let differ: Vec<usize> = (0..after.len().max(before.len()))
        .filter(|&i| after.get(i) != before.get(i))
        .collect();
    if let [i, j] = differ[..] {
        if j == i + 1 && after.get(i) == before.get(j) && after.get(j) == before.get(i) {
            return vec![format!(
                "rule {} moved up: {}",
                j + 1,
                parent_config::line(&after[i])
            )];
        }
    }
    let line = |rule: Option<&ParentRule>| rule.map_or("(none)".to_owned(), parent_config::line);
    differ
        .into_iter()
        .map(|i| {
            format!(
                "rule {}: {} → {}",
                i + 1,
                line(before.get(i)),
                line(after.get(i))
            )
        })
        .collect()
}

fn peer_change(name: &str, after: &Config, before: &Config) -> Option<String> {
    let fields = |config: &Config| {
        config
            .peers
            .iter()
            .find(|p| p.name == name)
            .and_then(|p| serde_json::to_value(p).ok())
            .and_then(|v| v.as_object().cloned())
    };
    let (new, old) = (fields(after)?, fields(before)?);
    let parts: Vec<String> = new
        .iter()
        .filter(|(key, value)| old.get(*key) != Some(value))
        .map(|(key, value)| {
            let was = old.get(key).map(ToString::to_string).unwrap_or_default();
            format!(
                "{key} {} → {}",
                was.trim_matches('"'),
                value.to_string().trim_matches('"')
            )
        })
        .collect();
    Some(format!("peer {name}: {}", parts.join(", ")))
}

/// A version's summary, one change per item. The summary joins changes with "; ", which
/// also ends each entry of a parent list, so a piece that does not begin a change (a
/// `setting: …`, `peer …` or `restored …`) belongs to the one before it.
fn changes_of(summary: &str) -> Vec<String> {
    let begins_change = |piece: &str| {
        let key = piece.split(": ").next().unwrap_or_default();
        piece.starts_with("peer ")
            || piece.starts_with("restored ")
            || (piece.contains(": ")
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
    };
    let mut changes: Vec<String> = Vec::new();
    for piece in summary.split("; ") {
        match changes.last_mut() {
            Some(last) if !begins_change(piece) => {
                last.push_str("; ");
                last.push_str(piece);
            }
            _ => changes.push(piece.to_owned()),
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::{changes_of, rule_changes};
    use crate::import::parent_config::parse;

    #[test]
    fn rule_changes_say_which_rule_and_how() {
        let two = parse("dest_domain=a parent=\"p:1\"\ndest_host=b")
            .unwrap()
            .into_rules();
        let moved: Vec<_> = two.iter().rev().cloned().collect();
        let line_a = "dest_domain=a parent=\"p:1;\" round_robin=false go_direct=true";
        let line_b = "dest_host=b round_robin=false go_direct=true";
        assert_eq!(
            rule_changes(&two, &two[1..]),
            [format!("rule 1 added: {line_a}")]
        );
        assert_eq!(
            rule_changes(&two[..1], &two),
            [format!("rule 2 removed: {line_b}")]
        );
        assert_eq!(
            rule_changes(&moved, &two),
            [format!("rule 2 moved up: {line_b}")]
        );
        let edited = parse("dest_domain=c parent=\"p:1\"\ndest_host=b")
            .unwrap()
            .into_rules();
        assert_eq!(
            rule_changes(&edited, &two),
            [format!(
                "rule 1: {line_a} → dest_domain=c parent=\"p:1;\" round_robin=false go_direct=true"
            )]
        );
    }

    #[test]
    fn a_parent_list_stays_one_change() {
        assert_eq!(
            changes_of("parents: (empty) → a:1; b:2;; icp_port: 3130 → 3131; peer x removed"),
            [
                "parents: (empty) → a:1; b:2;",
                "icp_port: 3130 → 3131",
                "peer x removed"
            ]
        );
        assert_eq!(
            changes_of("default configuration"),
            ["default configuration"]
        );
    }
}
