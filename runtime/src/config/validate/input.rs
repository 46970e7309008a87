//! What a subscriber reads: `stream` and `subject`, or `watch` — a
//! key-value bucket's changes, read from the bucket's own stream.

use super::super::raw::{RawSubscriber, RawWatch};
use super::super::values::{Name, Subject};
use super::super::{kv_stream, kv_subject, Watch, WatchStart};
use super::capabilities::check_bucket_name;
use super::Validator;

impl<E: Fn(&str) -> Option<String>> Validator<'_, E> {
    /// The stream and filter subject `s` consumes, and its watch when it
    /// has one; `None` (with the problem recorded) when they cannot be told.
    pub(super) fn input(
        &mut self,
        key: &str,
        s: &RawSubscriber,
    ) -> Option<(Name, Subject, Option<Watch>)> {
        match (&s.watch, &s.stream, &s.subject) {
            (None, Some(stream), Some(subject)) => Some((stream.clone(), subject.clone(), None)),
            (Some(watch), None, None) => self.watch(key, watch, s),
            (Some(_), _, _) => {
                let given = if s.stream.is_some() {
                    "stream"
                } else {
                    "subject"
                };
                self.problem(
                    format!("{key}.{given}"),
                    "a subscriber with `watch` reads the bucket's own stream: give `watch` or `stream` and `subject`, not both",
                );
                None
            }
            (None, stream, _) => {
                let missing = if stream.is_none() {
                    "stream"
                } else {
                    "subject"
                };
                self.problem(
                    format!("{key}.{missing}"),
                    "missing: a subscriber reads a `stream` and `subject`, or a bucket's changes with `watch = { kv = \"BUCKET\" }`",
                );
                None
            }
        }
    }

    fn watch(
        &mut self,
        key: &str,
        watch: &RawWatch,
        s: &RawSubscriber,
    ) -> Option<(Name, Subject, Option<Watch>)> {
        let before = self.problems.len();
        let bucket = watch.kv.as_str();
        if let Err(e) = check_bucket_name(bucket) {
            self.problem(format!("{key}.watch.kv"), e);
        } else if !s.kv.contains_key(bucket) {
            self.problem(
                format!("{key}.watch.kv"),
                format!(
                    "watching bucket {bucket:?} needs it granted: kv = {{ {bucket} = \"ro\" }}"
                ),
            );
        }
        let keys = watch.keys.clone().unwrap_or_else(|| ">".into());
        let subject = match Subject::try_from(kv_subject(bucket, &keys)) {
            Ok(subject) if !keys.is_empty() => Some(subject),
            Ok(_) | Err(_) => {
                self.problem(
                    format!("{key}.watch.keys"),
                    format!("{keys:?} is not a key pattern: dot-separated tokens, `*` and `>` wildcards"),
                );
                None
            }
        };
        let stream = Name::try_from(kv_stream(bucket)).ok();
        if self.problems.len() > before {
            return None;
        }
        let watch = Watch {
            bucket: bucket.to_string(),
            keys,
            start: watch.start.unwrap_or(WatchStart::New),
        };
        Some((stream?, subject?, Some(watch)))
    }
}
