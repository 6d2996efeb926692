//! Reads Traffic Server `parent.config` lines into routing rules. A line with anything
//! Canopy cannot honour is reported, and then nothing is imported.

use super::ImportError;
use crate::config::{ParentList, ParentRule, RoundRobin};

/// The rules of a parent.config file, or every problem, one per line.
pub fn parse(text: &str) -> Result<Vec<ParentRule>, Vec<ImportError>> {
    let mut rules = Vec::new();
    let mut problems = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse_line(line) {
            Ok(rule) => rules.push(rule),
            Err(errors) => problems.extend(
                errors
                    .into_iter()
                    .map(|e| ImportError::at_line(number + 1, e)),
            ),
        }
    }
    if problems.is_empty() {
        Ok(rules)
    } else {
        Err(problems)
    }
}

fn parse_line(line: &str) -> Result<ParentRule, Vec<String>> {
    let mut rule = ParentRule {
        go_direct: true,
        ..ParentRule::default()
    };
    let mut errors = Vec::new();
    for (key, value) in pairs(line).map_err(|e| vec![e])? {
        let value = value.as_str();
        let outcome: Result<(), String> = match key.as_str() {
            "dest_domain" => {
                rule.dest_domain = Some(value.to_owned());
                Ok(())
            }
            "dest_host" => {
                rule.dest_host = Some(value.to_owned());
                Ok(())
            }
            "dest_ip" if value.contains('-') => Err(format!(
                "dest_ip={value}: address ranges are not supported; write a CIDR network"
            )),
            "dest_ip" => {
                rule.dest_ip = Some(value.to_owned());
                Ok(())
            }
            "url_regex" => {
                rule.url_regex = Some(value.to_owned());
                Ok(())
            }
            "scheme" => {
                rule.scheme = Some(value.to_ascii_lowercase());
                Ok(())
            }
            "port" => value
                .parse()
                .map(|p| rule.port = Some(p))
                .map_err(|_| format!("port={value}: expected a port number")),
            "method" => {
                rule.method = Some(value.to_ascii_uppercase());
                Ok(())
            }
            "parent" => value
                .parse::<ParentList>()
                .map(|p| rule.parents = p)
                .map_err(|e| format!("parent=\"{value}\": {e}")),
            "round_robin" => value
                .parse::<RoundRobin>()
                .map(|r| rule.round_robin = r)
                .map_err(|e| format!("round_robin={value}: {e}")),
            "go_direct" => match value {
                "true" => {
                    rule.go_direct = true;
                    Ok(())
                }
                "false" => {
                    rule.go_direct = false;
                    Ok(())
                }
                other => Err(format!("go_direct={other}: expected true or false")),
            },
            // Traffic Server's default: the parents are proxies, as Canopy's always are.
            "parent_is_proxy" if value == "true" => Ok(()),
            "parent_is_proxy" => Err(format!(
                "parent_is_proxy={value}: parents that are origin servers are not supported \
                 by Canopy"
            )),
            "secondary_parent" => Err(
                "secondary_parent= is not supported by Canopy: list the secondary parents \
                 after the others in parent= (round_robin=false tries them in order)"
                    .to_owned(),
            ),
            other => Err(format!("{other}= is not supported by Canopy")),
        };
        if let Err(e) = outcome {
            errors.push(e);
        }
    }
    if errors.is_empty() {
        Ok(rule)
    } else {
        Err(errors)
    }
}

/// A rule written as a parent.config line, so it can be read back.
pub fn line(rule: &ParentRule) -> String {
    let mut line = rule.matcher();
    if !rule.parents.0.is_empty() {
        line.push_str(&format!(" parent=\"{}\"", rule.parents));
    }
    line.push_str(&format!(
        " round_robin={} go_direct={}",
        rule.round_robin, rule.go_direct
    ));
    line
}

/// `key=value` pairs separated by spaces; a value may be in double quotes.
fn pairs(line: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once('=')
            .ok_or_else(|| format!("{rest:?} is not key=value"))?;
        let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted
                .find('"')
                .ok_or_else(|| format!("{key}= has an unclosed quote"))?;
            (&quoted[..end], &quoted[end + 1..])
        } else {
            let end = after.find(char::is_whitespace).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        out.push((key.trim().to_ascii_lowercase(), value.trim().to_owned()));
        rest = after.trim_start();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_traffic_server_rules_are_read() {
        let text = r#"
# route the test domain to b, everything else to a
dest_domain=a.test parent="127.0.0.1:3129" round_robin=false go_direct=false
url_regex=\.iso$ parent="p1:3128|1.0; p2:3128|3.0" round_robin=consistent_hash
dest_domain=. parent="127.0.0.1:3128" go_direct=true
"#;
        let rules = parse(text).unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].dest_domain.as_deref(), Some("a.test"));
        assert!(!rules[0].go_direct);
        assert_eq!(rules[1].round_robin, RoundRobin::ConsistentHash);
        assert_eq!(rules[1].parents.0[1].weight, 3);
        assert_eq!(rules[1].url_regex.as_deref(), Some("\\.iso$"));
        assert!(rules[2].go_direct);
    }

    #[test]
    fn a_written_line_reads_back_as_the_same_rule() {
        let rules = parse("dest_domain=a.test port=8080 parent=\"p1:3128; p2:3128|2\" round_robin=strict go_direct=false").unwrap();
        let again = parse(&line(&rules[0])).unwrap();
        assert_eq!(again, rules);
    }

    #[test]
    fn a_value_with_spaces_is_written_quoted_and_reads_back() {
        let rules = parse(r#"url_regex="/a b$" dest_ip="0 0" parent="p:1""#).unwrap();
        assert_eq!(rules[0].url_regex.as_deref(), Some("/a b$"));
        let written = line(&rules[0]);
        assert!(
            written.starts_with(r#"dest_ip="0 0" url_regex="/a b$""#),
            "{written}"
        );
        assert_eq!(parse(&written).unwrap(), rules);
    }

    #[test]
    fn what_cannot_be_mapped_is_reported_line_by_line() {
        let text = "dest_domain=a.test parent=\"p:1\" qstring=ignore\n\
                    dest_ip=1.2.3.0-1.2.3.255 parent=\"p:1\"\n\
                    dest_host=ok.test parent=\"p:1\"\n";
        let problems = parse(text).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert!(
            problems[0].to_string().starts_with("line 1: qstring="),
            "{problems:?}"
        );
        assert!(
            problems[1].to_string().starts_with("line 2: dest_ip="),
            "{problems:?}"
        );
    }

    #[test]
    fn parents_as_proxies_are_what_canopy_has_and_the_rest_is_said() {
        let rules = parse("dest_domain=a.test parent=\"p:1\" parent_is_proxy=true").unwrap();
        assert_eq!(rules[0].parents.to_string(), "p:1;");
        let problems = parse(
            "dest_domain=a.test parent=\"p:1\" parent_is_proxy=false\n\
             dest_domain=b.test parent=\"p:1\" secondary_parent=\"s:1\" round_robin=consistent_hash\n",
        )
        .unwrap_err();
        assert!(
            problems[0]
                .to_string()
                .contains("origin servers are not supported"),
            "{problems:?}"
        );
        assert!(
            problems[1]
                .to_string()
                .contains("list the secondary parents after the others"),
            "{problems:?}"
        );
    }

    mod properties {
        use super::*;
        use crate::config::{HostPort, ParentEntry};
        use proptest::prelude::*;

        /// A value parent.config can carry: no double quote (the format has no escape), no
        /// space at either end (values are trimmed), spaces inside only when quoted.
        fn value() -> impl Strategy<Value = String> {
            "[!#-~]([ !#-~]{0,14}[!#-~])?"
        }

        fn parents() -> impl Strategy<Value = ParentList> {
            let host = prop_oneof!["[a-z0-9][a-z0-9.-]{0,15}", Just("::1".to_owned())];
            prop::collection::vec((host, 1u16.., 1u32..=1000), 0..4).prop_map(|entries| {
                let mut list: Vec<ParentEntry> = Vec::new();
                for (host, port, weight) in entries {
                    let addr = HostPort { host, port };
                    if list.iter().all(|p| p.addr != addr) {
                        list.push(ParentEntry { addr, weight });
                    }
                }
                ParentList(list)
            })
        }

        fn rule() -> impl Strategy<Value = ParentRule> {
            (
                (
                    proptest::option::of(value()),
                    proptest::option::of(value()),
                    proptest::option::of(value()),
                    proptest::option::of(value()),
                ),
                proptest::option::of("[a-z][a-z0-9+.-]{0,8}"),
                proptest::option::of(any::<u16>()),
                proptest::option::of("[A-Z]{1,10}"),
                parents(),
                prop::sample::select(RoundRobin::ALL.to_vec()),
                any::<bool>(),
            )
                .prop_map(
                    |(matchers, scheme, port, method, parents, round_robin, go_direct)| {
                        let (dest_domain, dest_host, dest_ip, url_regex) = matchers;
                        ParentRule {
                            dest_domain,
                            dest_host,
                            // Ranges are refused; anything else is kept for validation.
                            dest_ip: dest_ip.filter(|ip| !ip.contains('-')),
                            url_regex,
                            scheme,
                            port,
                            method,
                            parents,
                            round_robin,
                            go_direct,
                        }
                    },
                )
        }

        proptest! {
            #[test]
            fn arbitrary_text_never_panics(text in any::<String>()) {
                let _ = parse(&text);
            }

            #[test]
            fn text_that_looks_like_rules_never_panics(
                text in "(dest_domain|parent|round_robin|go_direct|port|=|\"|;|\\||[a-z0-9.:]{1,6}|[ \t#\n]){0,40}",
            ) {
                if let Ok(rules) = parse(&text) {
                    for rule in rules {
                        prop_assert_eq!(parse(&line(&rule)), Ok(vec![rule]));
                    }
                }
            }

            #[test]
            fn written_rules_read_back_as_the_same_rules(
                rules in prop::collection::vec(rule(), 0..5),
            ) {
                let text: Vec<String> = rules.iter().map(line).collect();
                prop_assert_eq!(parse(&text.join("\n")), Ok(rules));
            }
        }
    }
}
