//! What is wrong with a configuration, as the user reads it: the file,
//! the line and column of a syntax error, or every problem with its key.

use super::interpolate::InterpolateError;
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration that cannot be used. Its `Display` is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A syntax, type or value error found while parsing.
    #[error("{}:{line}:{column}: {message}\n{snippet}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// The line with a caret under the column.
        snippet: String,
    },
    /// Problems found by validation, each naming its key.
    #[error("{}: {}", path.display(), Problems(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, one entry per problem.
        problems: Vec<Problem>,
    },
}

/// One validation problem: the key it is about and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key path, e.g. `subscribers[0] ("process-order").consumer.max_deliver`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

pub(super) struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if let [one] = self.0 {
            return write!(f, "{}: {}", one.key, one.message);
        }
        write!(f, "{} problems:", self.0.len())?;
        for p in self.0 {
            write!(f, "\n  {}: {}", p.key, p.message)?;
        }
        Ok(())
    }
}

fn line_snippet(text: &str, line: usize, column: usize) -> String {
    let src = text.lines().nth(line.saturating_sub(1)).unwrap_or("");
    let gutter = line.to_string();
    format!(
        "{gutter} | {src}\n{pad} | {caret:>column$}",
        pad = " ".repeat(gutter.len()),
        caret = "^",
    )
}

/// A parse error with its position and, when known, the key path it is about.
pub(super) fn syntax_error(path: &Path, text: &str, key: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            (line, column)
        }
        None => (1, 1),
    };
    ConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message: match key {
            "" | "." => e.message().trim().to_string(),
            key => format!("{key}: {}", e.message().trim()),
        },
        snippet: line_snippet(text, line, column),
    }
}

pub(super) fn interpolation_error(path: &Path, text: &str, e: InterpolateError) -> ConfigError {
    let (line, column, message) = match e {
        InterpolateError::Unset(u) => (
            u.line,
            u.column,
            format!(
                "environment variable {} is not set (give a default with ${{{}:-value}})",
                u.name, u.name
            ),
        ),
        InterpolateError::Malformed { line, column, text } => (
            line,
            column,
            format!("malformed interpolation {text:?}: write ${{NAME}} or ${{NAME:-default}}"),
        ),
    };
    ConfigError::Syntax {
        path: path.to_path_buf(),
        line,
        column,
        message,
        snippet: line_snippet(text, line, column),
    }
}
