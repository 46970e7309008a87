//! Validated scalar values of service.toml: durations, sizes, subjects and
//! names. Each parses during deserialisation, so a bad value is reported by
//! the TOML parser with its line, column and caret.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;

/// A duration written as `"30s"`, `"1m 30s"`, `"250ms"` or plain seconds (`30`, `0.5`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl Dur {
    /// Parses the string form (`"30s"`, `"2m"`, `"1.5"` as seconds).
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if let Ok(secs) = t.parse::<f64>() {
            return Self::from_secs_f64(secs);
        }
        humantime::parse_duration(t)
            .map(Dur)
            .map_err(|e| format!("invalid duration {s:?} ({e}); write it as \"30s\", \"500ms\", \"2m\" or a number of seconds"))
    }

    fn from_secs_f64(secs: f64) -> Result<Self, String> {
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!(
                "invalid duration {secs}: must be zero or more seconds"
            ));
        }
        Duration::try_from_secs_f64(secs)
            .map(Dur)
            .map_err(|_| format!("invalid duration {secs}: too long"))
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"30s\" or a number of seconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                Dur::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                Dur::from_secs_f64(v as f64).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Ok(Dur(Duration::from_secs(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Dur, E> {
                Dur::from_secs_f64(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// A rate per second written `"5000/s"` (a count) or `"10MiB/s"` (bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct PerSecond(pub u64);

impl TryFrom<String> for PerSecond {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let amount = s
            .trim()
            .strip_suffix("/s")
            .ok_or_else(|| format!("invalid rate {s:?}: write it as \"5000/s\" or \"10MiB/s\""))?;
        match ByteSize::parse(amount) {
            Ok(ByteSize(n)) if n > 0 => Ok(PerSecond(n)),
            Ok(_) => Err(format!("invalid rate {s:?}: it must be more than zero")),
            Err(e) => Err(format!("invalid rate {s:?}: {e}")),
        }
    }
}

/// A size in bytes written as `"64MiB"`, `"512KiB"`, `"1GB"` or a plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Parses the string form. Units: B, KB, MB, GB (powers of 1000) and
    /// KiB, MiB, GiB (powers of 1024), case-insensitive.
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| {
            format!("invalid size {s:?}: write it as \"64MiB\", \"512KiB\" or a number of bytes")
        })?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1_000,
            "mb" | "m" => 1_000_000,
            "gb" | "g" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            other => {
                return Err(format!(
                "invalid size {s:?}: unknown unit {other:?} (use B, KB, MB, GB, KiB, MiB or GiB)"
            ))
            }
        };
        Ok(ByteSize((n * mult as f64) as u64))
    }
}

impl fmt::Display for ByteSize {
    /// In the largest unit that divides it exactly, binary before decimal,
    /// as service.toml would write it ("64MiB", "1536KiB", "100MB", "100B").
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let n = self.0;
        const UNITS: [(&str, u64); 6] = [
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
            ("GB", 1_000_000_000),
            ("MB", 1_000_000),
            ("KB", 1_000),
        ];
        let unit = UNITS
            .iter()
            .filter(|(_, size)| n >= *size && n.is_multiple_of(*size))
            .max_by_key(|(_, size)| *size);
        match unit {
            Some((unit, size)) => write!(f, "{}{unit}", n / size),
            None => write!(f, "{n}B"),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"64MiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                ByteSize::parse(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A NATS subject; `*` and `>` wildcards are allowed where `wildcards` says so.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Subject(String);

impl Subject {
    /// The subject as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True when the subject has a `*` or `>` token.
    pub fn has_wildcards(&self) -> bool {
        self.0.split('.').any(|t| t == "*" || t == ">")
    }

    /// True when the literal subject `subject` is matched by this pattern.
    pub fn matches(&self, subject: &str) -> bool {
        subject_matches(&self.0, subject)
    }

    /// True when every subject `other` (a subject or a pattern) can match
    /// is also matched by this pattern.
    pub fn covers(&self, other: &str) -> bool {
        subject_covers(&self.0, other)
    }
}

/// Whether some subject matches both patterns `a` and `b`.
pub fn subjects_intersect(a: &str, b: &str) -> bool {
    let (mut x, mut y) = (a.split('.'), b.split('.'));
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some(p), Some(q)) if p == "*" || q == "*" || p == q => {}
            _ => return false,
        }
    }
}

/// Whether pattern `outer` matches every subject pattern `inner` matches.
pub fn subject_covers(outer: &str, inner: &str) -> bool {
    let mut inner_tokens = inner.split('.');
    let mut outer_tokens = outer.split('.').peekable();
    while let Some(o) = outer_tokens.next() {
        if o == ">" && outer_tokens.peek().is_none() {
            return inner_tokens.next().is_some();
        }
        match inner_tokens.next() {
            Some(">") | None => return false,
            Some(i) if o == "*" || o == i => {}
            Some(_) => return false,
        }
    }
    inner_tokens.next().is_none()
}

/// NATS subject matching: `*` matches one token, a final `>` one or more.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    let mut pattern_tokens = pattern.split('.').peekable();
    while let Some(p) = pattern_tokens.next() {
        if p == ">" && pattern_tokens.peek().is_none() {
            return subject_tokens.next().is_some();
        }
        match subject_tokens.next() {
            Some(s) if p == "*" || p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Checks a subject's syntax; the error says what is wrong with it.
pub fn check_subject(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("a subject cannot be empty".into());
    }
    if s.chars().any(|c| c.is_whitespace()) {
        return Err(format!("invalid subject {s:?}: it contains white space"));
    }
    let tokens: Vec<&str> = s.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return Err(format!(
                "invalid subject {s:?}: empty token (two dots, or a dot at an end)"
            ));
        }
        if *t == ">" && i != tokens.len() - 1 {
            return Err(format!(
                "invalid subject {s:?}: '>' may only be the last token"
            ));
        }
        if t.len() > 1 && (t.contains('*') || t.contains('>')) {
            return Err(format!(
                "invalid subject {s:?}: a wildcard must be a whole token"
            ));
        }
    }
    Ok(())
}

impl TryFrom<String> for Subject {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        check_subject(&s)?;
        Ok(Subject(s))
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A JetStream stream or consumer name: no white space, `.`, `*`, `>`, `/` or `\`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Name(String);

impl Name {
    /// The name as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Name {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() {
            return Err("a name cannot be empty".into());
        }
        if let Some(c) = s
            .chars()
            .find(|c| c.is_whitespace() || ".*>/\\".contains(*c))
        {
            return Err(format!(
                "invalid name {s:?}: {c:?} is not allowed in stream and consumer names"
            ));
        }
        Ok(Name(s))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_shown_as_a_file_would_write_them() {
        for written in ["64MiB", "1536KiB", "1GiB", "100MB", "1GB", "1500KB", "100B"] {
            let size = ByteSize::parse(written).unwrap();
            assert_eq!(size.to_string(), written);
            assert_eq!(ByteSize::parse(&size.to_string()).unwrap(), size);
        }
        assert_eq!(ByteSize(1_024_000).to_string(), "1000KiB");
    }

    #[test]
    fn durations() {
        assert_eq!(Dur::parse("30s").unwrap().0, Duration::from_secs(30));
        assert_eq!(Dur::parse("1m 30s").unwrap().0, Duration::from_secs(90));
        assert_eq!(Dur::parse("250ms").unwrap().0, Duration::from_millis(250));
        assert_eq!(Dur::parse("1.5").unwrap().0, Duration::from_millis(1500));
        assert!(Dur::parse("-1").unwrap_err().contains("zero or more"));
        assert!(Dur::parse("soon")
            .unwrap_err()
            .contains("invalid duration \"soon\""));
    }

    #[test]
    fn sizes() {
        assert_eq!(ByteSize::parse("64MiB").unwrap().0, 64 << 20);
        assert_eq!(ByteSize::parse("512 KiB").unwrap().0, 512 << 10);
        assert_eq!(ByteSize::parse("1GB").unwrap().0, 1_000_000_000);
        assert_eq!(ByteSize::parse("100").unwrap().0, 100);
        assert!(ByteSize::parse("3 parsecs")
            .unwrap_err()
            .contains("unknown unit"));
    }

    #[test]
    fn patterns_that_share_a_subject() {
        for (a, b) in [
            ("orders.*.x", "orders.a.*"),
            ("orders.>", "orders.a.b"),
            ("*", "x"),
            ("a.b", "a.b"),
        ] {
            assert!(subjects_intersect(a, b), "{a} and {b}");
            assert!(subjects_intersect(b, a), "{b} and {a}");
        }
        for (a, b) in [("orders.>", "orders"), ("a.*", "a.b.c"), ("a.b", "a.c")] {
            assert!(!subjects_intersect(a, b), "{a} and {b}");
            assert!(!subjects_intersect(b, a), "{b} and {a}");
        }
    }

    #[test]
    fn subjects() {
        for ok in ["a", "order.created", "order.*", "order.>", "*.x.>", ">"] {
            check_subject(ok).unwrap();
        }
        for (bad, why) in [
            ("", "empty"),
            ("a b", "white space"),
            ("a..b", "empty token"),
            ("a.>.b", "last token"),
            ("a.b*", "whole token"),
        ] {
            assert!(check_subject(bad).unwrap_err().contains(why), "{bad}");
        }
    }

    #[test]
    fn matching() {
        let table = [
            ("order.created", "order.created", true),
            ("order.created", "order.deleted", false),
            ("order.*", "order.created", true),
            ("order.*", "order.created.eu", false),
            ("order.>", "order.created.eu", true),
            ("order.>", "order", false),
            ("*.created", "order.created", true),
            (">", "anything.at.all", true),
            ("a.b", "a", false),
            ("a", "a.b", false),
        ];
        for (pattern, subject, want) in table {
            assert_eq!(
                subject_matches(pattern, subject),
                want,
                "{pattern} ~ {subject}"
            );
        }
    }

    #[test]
    fn covering() {
        let table = [
            ("inventory.>", "inventory.updates", true),
            ("inventory.>", "inventory.*", true),
            ("inventory.>", "inventory.>", true),
            ("inventory.*", "inventory.>", false),
            ("inventory.*", "inventory.eu.x", false),
            ("inventory.*", "inventory.*", true),
            ("inventory.updates", "inventory.*", false),
            ("*.updates", "inventory.updates", true),
            (">", "a.*.>", true),
            ("dlq.>", "dlq", false),
        ];
        for (outer, inner, want) in table {
            assert_eq!(subject_covers(outer, inner), want, "{outer} covers {inner}");
        }
    }

    #[test]
    fn names() {
        assert!(Name::try_from("ORDERS".to_string()).is_ok());
        assert!(Name::try_from("order.events".to_string())
            .unwrap_err()
            .contains("'.'"));
    }
}
