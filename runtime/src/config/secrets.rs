//! Configuration values marked secret (`config = { api_key = { secret =
//! "${PAYMENT_API_KEY}" } }`): handed to the guest like any other value,
//! but never shown by the runtime — `check` prints `(secret)`, and a guest
//! that writes one to its output, or into a retry or reject reason, has it
//! replaced by `[secret api_key]` in the log, the statistics and the
//! dead-letter headers.

/// The secret values of one subscriber, by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<(String, String)>);

impl Secrets {
    /// The values of `keys` in `config`.
    pub fn new<'a>(
        keys: impl IntoIterator<Item = &'a String>,
        config: &std::collections::BTreeMap<String, String>,
    ) -> Self {
        let mut pairs: Vec<(String, String)> = keys
            .into_iter()
            .filter_map(|k| Some((k.clone(), config.get(k)?.clone())))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        // Guest output is masked line by line: a multi-line secret (a PEM
        // key) is masked by its lines too.
        let lines: Vec<(String, String)> = pairs
            .iter()
            .filter(|(_, v)| v.contains('\n'))
            .flat_map(|(k, v)| {
                v.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| (k.clone(), l.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        pairs.extend(lines);
        // A value inside another is masked after it.
        pairs.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        Secrets(pairs)
    }

    /// `text` with every secret value replaced by `[secret KEY]`.
    pub fn mask(&self, text: &str) -> String {
        let mut masked = text.to_string();
        for (key, value) in &self.0 {
            if masked.contains(value.as_str()) {
                masked = masked.replace(value.as_str(), &format!("[secret {key}]"));
            }
        }
        masked
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Secrets;

    #[test]
    fn secret_values_are_masked_wherever_they_appear() {
        let config = [
            ("api_key".to_string(), "sk-live-123".to_string()),
            ("region".to_string(), "eu".to_string()),
            ("empty".to_string(), String::new()),
        ]
        .into_iter()
        .collect();
        let keys = ["api_key".to_string(), "empty".to_string()];
        let secrets = Secrets::new(&keys, &config);
        assert_eq!(
            secrets.mask("auth failed for sk-live-123 in eu (sk-live-123)"),
            "auth failed for [secret api_key] in eu ([secret api_key])"
        );
        assert_eq!(secrets.mask("nothing here"), "nothing here");

        let pem = [(
            "key".to_string(),
            "-----BEGIN-----\nAAAA\n-----END-----".to_string(),
        )]
        .into_iter()
        .collect();
        let secrets = Secrets::new(&["key".to_string()], &pem);
        assert_eq!(secrets.mask("line AAAA"), "line [secret key]");
    }
}
