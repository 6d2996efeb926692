//! Targeted cache-control fields (RFC 9213): which field of the cache's target list governs a
//! response, read as the structured-field Dictionary it must be.

use http::header::{HeaderMap, HeaderName};

use super::cache_control::CacheControl;

/// The directives of the first field of `targets` that the response carries with a valid,
/// non-empty value (RFC 9213 §2.2), or `None` when none does and Cache-Control governs.
pub(super) fn governing(headers: &HeaderMap, targets: &[HeaderName]) -> Option<CacheControl> {
    targets.iter().find_map(|name| {
        let mut lines = headers.get_all(name).iter().peekable();
        lines.peek()?;
        let mut text = Vec::new();
        for (i, line) in lines.enumerate() {
            if i > 0 {
                text.push(b',');
            }
            text.extend_from_slice(line.as_bytes());
        }
        let members = dictionary(&text)?;
        if members.is_empty() {
            return None;
        }
        let mut cc = CacheControl {
            targeted: true,
            ..CacheControl::default()
        };
        for (key, value) in members {
            apply(&mut cc, &key, value);
        }
        Some(cc)
    })
}

/// A directive's value mapped to the structured type RFC 9213 §2.1 infers for it. Directives
/// whose value violates that type are not consumed (§2.1: implementations SHOULD NOT).
fn apply(cc: &mut CacheControl, key: &str, value: Value) {
    match (key, value) {
        (
            "max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error",
            Value::Integer(secs),
        ) if secs >= 0 => cc.apply(key, Some(&secs.to_string())),
        ("no-cache" | "private", Value::String(names)) => cc.apply(key, Some(&names)),
        (
            "no-cache" | "private" | "no-store" | "public" | "must-revalidate" | "proxy-revalidate"
            | "must-understand" | "immutable",
            Value::True,
        ) => cc.apply(key, None),
        _ => {}
    }
}

/// A Dictionary member's value, as far as cache directives need it told apart.
#[derive(Debug, PartialEq)]
enum Value {
    True,
    Integer(i64),
    String(String),
    /// False, decimals, tokens, byte sequences and inner lists: valid, but no cache
    /// directive takes them.
    Other,
}

/// Parses a Dictionary (RFC 8941 §4.2.2); `None` on any error, so that the field is ignored
/// as a whole. A repeated key keeps its last value; parameters are dropped (RFC 9213 §2.1).
fn dictionary(input: &[u8]) -> Option<Vec<(String, Value)>> {
    let mut parser = Parser { input, at: 0 };
    let mut members: Vec<(String, Value)> = Vec::new();
    parser.skip(b" ");
    while !parser.done() {
        let key = parser.key()?;
        let value = if parser.eat(b'=') {
            if parser.peek() == Some(b'(') {
                parser.inner_list()?;
                Value::Other
            } else {
                parser.bare_item()?
            }
        } else {
            Value::True
        };
        parser.parameters()?;
        members.retain(|(seen, _)| *seen != key);
        members.push((key, value));
        parser.skip(b" \t");
        if parser.done() {
            break;
        }
        if !parser.eat(b',') {
            return None;
        }
        parser.skip(b" \t");
        if parser.done() {
            return None;
        }
    }
    Some(members)
}

struct Parser<'a> {
    input: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn done(&self) -> bool {
        self.at >= self.input.len()
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let found = self.peek() == Some(byte);
        if found {
            self.at += 1;
        }
        found
    }

    fn skip(&mut self, bytes: &[u8]) {
        while self.peek().is_some_and(|b| bytes.contains(&b)) {
            self.at += 1;
        }
    }

    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a [u8] {
        let start = self.at;
        while self.peek().is_some_and(&keep) {
            self.at += 1;
        }
        &self.input[start..self.at]
    }

    fn key(&mut self) -> Option<String> {
        let first = self.peek()?;
        if !(first.is_ascii_lowercase() || first == b'*') {
            return None;
        }
        let key = self
            .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b));
        Some(String::from_utf8_lossy(key).into_owned())
    }

    fn parameters(&mut self) -> Option<()> {
        while self.eat(b';') {
            self.skip(b" ");
            self.key()?;
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Some(())
    }

    fn inner_list(&mut self) -> Option<()> {
        self.eat(b'(');
        loop {
            self.skip(b" ");
            if self.eat(b')') {
                return self.parameters();
            }
            self.bare_item()?;
            self.parameters()?;
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return None;
            }
        }
    }

    fn bare_item(&mut self) -> Option<Value> {
        match self.peek()? {
            b'-' | b'0'..=b'9' => self.number(),
            b'"' => self.string().map(Value::String),
            b':' => {
                self.at += 1;
                self.take_while(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
                self.eat(b':').then_some(Value::Other)
            }
            b'?' => {
                self.at += 1;
                match self.peek()? {
                    b'1' => {
                        self.at += 1;
                        Some(Value::True)
                    }
                    b'0' => {
                        self.at += 1;
                        Some(Value::Other)
                    }
                    _ => None,
                }
            }
            b if b.is_ascii_alphabetic() || b == b'*' => {
                self.take_while(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b));
                Some(Value::Other)
            }
            _ => None,
        }
    }

    fn number(&mut self) -> Option<Value> {
        let negative = self.eat(b'-');
        let digits = self.take_while(|b| b.is_ascii_digit());
        if digits.is_empty() || digits.len() > 15 {
            return None;
        }
        let whole: i64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
        if self.eat(b'.') {
            let fraction = self.take_while(|b| b.is_ascii_digit()).len();
            return (digits.len() <= 12 && (1..=3).contains(&fraction)).then_some(Value::Other);
        }
        Some(Value::Integer(if negative { -whole } else { whole }))
    }

    fn string(&mut self) -> Option<String> {
        self.eat(b'"');
        let mut text = String::new();
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    return Some(text);
                }
                b'\\' => {
                    self.at += 1;
                    let escaped = self.peek().filter(|b| matches!(b, b'"' | b'\\'))?;
                    text.push(char::from(escaped));
                    self.at += 1;
                }
                b @ 0x20..=0x7e => {
                    text.push(char::from(b));
                    self.at += 1;
                }
                _ => return None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionaries_parse_as_rfc_8941_reads_them() {
        assert_eq!(
            dictionary(b"max-age=60, no-store, private=\"a, b\";p=1, x=?0").unwrap(),
            vec![
                ("max-age".to_owned(), Value::Integer(60)),
                ("no-store".to_owned(), Value::True),
                ("private".to_owned(), Value::String("a, b".to_owned())),
                ("x".to_owned(), Value::Other),
            ]
        );
        assert_eq!(
            dictionary(b"a=1, a=2").unwrap(),
            vec![("a".to_owned(), Value::Integer(2))],
            "RFC 8941 §4.2.2: the last instance of a repeated key wins"
        );
        assert_eq!(dictionary(b"a=(1 2);q, b=1.5").unwrap().len(), 2);
        for broken in [
            &b"Max-Age=60"[..],
            b"max-age=60,",
            b"max-age=60 no-store",
            b"max-age=\"60",
            b"max-age==60",
            b"max-age=1234567890123456",
            b"a=(1 2",
        ] {
            assert_eq!(
                dictionary(broken),
                None,
                "{}",
                String::from_utf8_lossy(broken)
            );
        }
    }
}
