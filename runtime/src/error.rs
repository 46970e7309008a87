//! Bottom of every layer: how an error and its causes are shown. Nothing
//! here imports the rest of the crate.

/// Displays an error with its causes, `outer: cause: root`. A cause whose
/// text its parent already ends with (async-nats' errors print their
/// source as part of their own message) is shown once.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut source = self.0.source();
        while let Some(e) = source {
            let text = e.to_string();
            if !shown.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            shown = text;
            source = e.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorChain;

    #[derive(Debug, thiserror::Error)]
    #[error("{what}")]
    struct E {
        what: &'static str,
        #[source]
        source: Option<Box<E>>,
    }

    fn e(what: &'static str, source: Option<E>) -> E {
        E {
            what,
            source: source.map(Box::new),
        }
    }

    #[test]
    fn shows_every_cause_once() {
        let chain = e("outer", Some(e("middle", Some(e("root", None)))));
        assert_eq!(ErrorChain(&chain).to_string(), "outer: middle: root");
        let repeats = e("publish failed: timed out", Some(e("timed out", None)));
        assert_eq!(
            ErrorChain(&repeats).to_string(),
            "publish failed: timed out"
        );
    }
}
