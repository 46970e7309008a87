//! `${VAR}` and `${VAR:-default}` in service.toml, replaced before parsing so
//! they work in any value (numbers too). `$${` writes a literal `${`.
//! Comment lines are copied untouched.

/// An unset variable without a default, with where it stands.
#[derive(Debug, PartialEq, Eq)]
pub struct Unset {
    /// 1-based line.
    pub line: usize,
    /// 1-based column of the `$`.
    pub column: usize,
    /// The variable's name.
    pub name: String,
}

/// An interpolation that is not closed or has no name.
#[derive(Debug, PartialEq, Eq)]
pub enum InterpolateError {
    /// `${NAME}` with NAME unset and no `:-default`.
    Unset(Unset),
    /// `${` without a closing `}` or with an empty or invalid name.
    Malformed {
        line: usize,
        column: usize,
        text: String,
    },
}

/// Replaces every `${…}` in `text`, looking variables up with `lookup`.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        let mut column = 1;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            column += rest[..pos].chars().count();
            let after = &rest[pos..];
            if let Some(escaped) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = escaped;
                column += 3;
            } else if let Some(body) = after.strip_prefix("${") {
                let Some(end) = body.find('}') else {
                    return Err(InterpolateError::Malformed {
                        line: i + 1,
                        column,
                        text: after.trim_end().to_string(),
                    });
                };
                let inner = &body[..end];
                let (name, default) = match inner.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (inner, None),
                };
                let valid = !name.is_empty()
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    && !name.starts_with(|c: char| c.is_ascii_digit());
                if !valid {
                    return Err(InterpolateError::Malformed {
                        line: i + 1,
                        column,
                        text: format!("${{{inner}}}"),
                    });
                }
                match lookup(name).or_else(|| default.map(str::to_string)) {
                    Some(value) => out.push_str(&value),
                    None => {
                        return Err(InterpolateError::Unset(Unset {
                            line: i + 1,
                            column,
                            name: name.to_string(),
                        }))
                    }
                }
                let consumed = 2 + end + 1;
                column += after[..consumed].chars().count();
                rest = &after[consumed..];
            } else {
                out.push('$');
                rest = &after[1..];
                column += 1;
            }
        }
        out.push_str(rest);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "STREAM" => Some("ORDERS".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_set_variables_and_defaults() {
        let text = "a = \"${STREAM}\"\nb = ${N:-4}\nc = \"x${EMPTY:-y}z\"\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "a = \"ORDERS\"\nb = 4\nc = \"xz\"\n"
        );
    }

    #[test]
    fn escapes_and_lone_dollars_pass_through() {
        assert_eq!(
            interpolate("a = \"$${X} costs $5\"", env).unwrap(),
            "a = \"${X} costs $5\""
        );
    }

    #[test]
    fn comments_are_left_alone() {
        assert_eq!(
            interpolate("# uses ${MISSING}\n", env).unwrap(),
            "# uses ${MISSING}\n"
        );
    }

    #[test]
    fn unset_variable_names_line_and_column() {
        let err = interpolate("a = 1\nsubject = \"${INPUT_SUBJECT}\"\n", env).unwrap_err();
        assert_eq!(
            err,
            InterpolateError::Unset(Unset {
                line: 2,
                column: 12,
                name: "INPUT_SUBJECT".into()
            })
        );
    }

    #[test]
    fn malformed() {
        assert!(matches!(
            interpolate("a = \"${OOPS\"", env).unwrap_err(),
            InterpolateError::Malformed {
                line: 1,
                column: 6,
                ..
            }
        ));
        assert!(matches!(
            interpolate("a = \"${1X}\"", env).unwrap_err(),
            InterpolateError::Malformed { .. }
        ));
    }
}
