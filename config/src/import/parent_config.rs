//! Reads Traffic Server `parent.config` lines into routing rules. An option Canopy does not
//! honour is listed as ignored and the rule kept; a rule that would match or route otherwise
//! than in Traffic Server (an unknown matcher, an origin-server parent) is listed and left
//! out; a line that cannot be read refuses the whole file.

use super::ImportError;
use crate::config::{ParentList, ParentRule, RoundRobin};

/// What a file gave: its rules with the line each came from, and what was ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleImport {
    pub rules: Vec<ImportedRule>,
    pub ignored: Vec<ImportError>,
}

/// A rule and the line (from 1) it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedRule {
    pub line: usize,
    pub rule: ParentRule,
}

impl RuleImport {
    /// The rules alone, in file order.
    pub fn into_rules(self) -> Vec<ParentRule> {
        self.rules.into_iter().map(|r| r.rule).collect()
    }
}

/// What one line gave: a rule (with its ignored options), or a rule left out and why.
enum Line {
    Rule(ParentRule, Vec<String>),
    LeftOut(String),
}

/// Traffic Server options that change how a rule routes in ways Canopy does not model, but
/// whose absence leaves the rule's match and its parents as written.
const IGNORED_OPTIONS: &[&str] = &[
    "qstring",
    "ignore_query",
    "parent_retry",
    "max_simple_retries",
    "max_unavailable_server_retries",
    "simple_server_retry_responses",
    "unavailable_server_retry_responses",
    "secondary_mode",
    "ignore_self_detect",
    "go_direct_on_error",
];

/// The rules of a parent.config file and what was ignored, or every line that cannot be read.
pub fn parse(text: &str) -> Result<RuleImport, Vec<ImportError>> {
    let mut import = RuleImport {
        rules: Vec::new(),
        ignored: Vec::new(),
    };
    let mut unreadable = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let number = index + 1;
        let at = |message: String| ImportError::at_line(number, message);
        match parse_line(line) {
            Ok(Line::Rule(rule, notes)) => {
                import.ignored.extend(notes.into_iter().map(at));
                import.rules.push(ImportedRule { line: number, rule });
            }
            Ok(Line::LeftOut(why)) => import.ignored.push(at(format!("rule not imported: {why}"))),
            Err(errors) => unreadable.extend(errors.into_iter().map(at)),
        }
    }
    if unreadable.is_empty() {
        Ok(import)
    } else {
        Err(unreadable)
    }
}

fn parse_line(line: &str) -> Result<Line, Vec<String>> {
    let mut rule = ParentRule {
        go_direct: true,
        ..ParentRule::default()
    };
    let mut errors = Vec::new();
    let mut notes = Vec::new();
    let mut left_out = Vec::new();
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
            "dest_ip" if value.contains('-') => {
                left_out.push(format!(
                    "dest_ip={value}: address ranges are not supported; write a CIDR network"
                ));
                Ok(())
            }
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
            "parent_is_proxy" => {
                left_out.push(format!(
                    "parent_is_proxy={value}: parents that are origin servers are not \
                     supported by Canopy"
                ));
                Ok(())
            }
            // Traffic Server's second consistent-hash ring, tried when a URL's primary
            // parent is down; Canopy rehashes onto the remaining parents instead.
            "secondary_parent" => {
                notes.push(format!(
                    "secondary_parent=\"{value}\" ignored: Canopy has no secondary ring; a URL \
                     whose parent is down goes to the next of the parents in parent="
                ));
                Ok(())
            }
            option if IGNORED_OPTIONS.contains(&option) => {
                notes.push(format!(
                    "{option}={value} ignored: Canopy has no such option"
                ));
                Ok(())
            }
            other => {
                left_out.push(format!("{other}= is not a matcher or option Canopy knows"));
                Ok(())
            }
        };
        if let Err(e) = outcome {
            errors.push(e);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if !left_out.is_empty() {
        return Ok(Line::LeftOut(left_out.join("; ")));
    }
    Ok(Line::Rule(rule, notes))
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
        let rules = parse(text).unwrap().into_rules();
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
        let rules = parse("dest_domain=a.test port=8080 parent=\"p1:3128; p2:3128|2\" round_robin=strict go_direct=false").unwrap().into_rules();
        let again = parse(&line(&rules[0])).unwrap().into_rules();
        assert_eq!(again, rules);
    }

    #[test]
    fn a_value_with_spaces_is_written_quoted_and_reads_back() {
        let rules = parse(r#"url_regex="/a b$" dest_ip="0 0" parent="p:1""#)
            .unwrap()
            .into_rules();
        assert_eq!(rules[0].url_regex.as_deref(), Some("/a b$"));
        let written = line(&rules[0]);
        assert!(
            written.starts_with(r#"dest_ip="0 0" url_regex="/a b$""#),
            "{written}"
        );
        assert_eq!(parse(&written).unwrap().into_rules(), rules);
    }

    #[test]
    fn options_canopy_lacks_are_listed_and_the_rule_kept() {
        let text = "dest_domain=a.test parent=\"p:1\" qstring=ignore\n\
                    dest_domain=b.test parent=\"p:1\" secondary_parent=\"s:1\" round_robin=consistent_hash\n\
                    dest_domain=c.test parent=\"p:1\" parent_is_proxy=true\n";
        let import = parse(text).unwrap();
        let lines: Vec<usize> = import.rules.iter().map(|r| r.line).collect();
        assert_eq!(lines, [1, 2, 3]);
        assert_eq!(import.rules[1].rule.parents.to_string(), "p:1;");
        let ignored: Vec<String> = import.ignored.iter().map(ToString::to_string).collect();
        assert_eq!(ignored.len(), 2, "{ignored:?}");
        assert!(
            ignored[0].starts_with("line 1: qstring=ignore ignored"),
            "{ignored:?}"
        );
        assert!(
            ignored[1].starts_with("line 2: secondary_parent=\"s:1\" ignored"),
            "{ignored:?}"
        );
    }

    #[test]
    fn a_rule_that_would_match_or_route_otherwise_is_left_out_and_the_rest_imported() {
        let text = "dest_ip=1.2.3.0-1.2.3.255 parent=\"p:1\"\n\
                    dest_host=ok.test parent=\"p:1\"\n\
                    dest_domain=a.test parent=\"p:1\" parent_is_proxy=false\n\
                    src_ip=10.0.0.1 parent=\"p:1\"\n";
        let import = parse(text).unwrap();
        assert_eq!(import.rules.len(), 1);
        assert_eq!(import.rules[0].line, 2);
        assert_eq!(import.rules[0].rule.dest_host.as_deref(), Some("ok.test"));
        let ignored: Vec<String> = import.ignored.iter().map(ToString::to_string).collect();
        assert_eq!(ignored.len(), 3, "{ignored:?}");
        assert!(
            ignored[0].starts_with("line 1: rule not imported: dest_ip="),
            "{ignored:?}"
        );
        assert!(
            ignored[1].contains("origin servers are not supported"),
            "{ignored:?}"
        );
        assert!(
            ignored[2].starts_with("line 4: rule not imported: src_ip="),
            "{ignored:?}"
        );
    }

    #[test]
    fn a_line_that_cannot_be_read_refuses_the_file() {
        let text = "dest_domain=a.test parent=\"p:1\"\n\
                    dest_domain=b.test port=http\n\
                    just words\n";
        let problems = parse(text).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].to_string().starts_with("line 2: port=http"),
            "{problems:?}"
        );
        assert!(
            problems[1].to_string().starts_with("line 3: "),
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
                if let Ok(import) = parse(&text) {
                    for rule in import.into_rules() {
                        prop_assert_eq!(parse(&line(&rule)).map(RuleImport::into_rules), Ok(vec![rule]));
                    }
                }
            }

            #[test]
            fn written_rules_read_back_as_the_same_rules(
                rules in prop::collection::vec(rule(), 0..5),
            ) {
                let text: Vec<String> = rules.iter().map(line).collect();
                prop_assert_eq!(parse(&text.join("\n")).map(RuleImport::into_rules), Ok(rules));
            }
        }
    }
}
