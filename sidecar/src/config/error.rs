//! A configuration error, and where in the file it is.
//!
//! serde_yaml(_ng) reports a position for most errors, but not always the best one: a check that
//! runs after a value was read is placed at the enclosing container, a duplicate key at the
//! mapping, and an error found after parsing (a spool directory) has no position at all.
//! [`locate`] finds where a key path is written, for those cases.

use std::path::PathBuf;

/// A configuration error, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {key}: {message}")]
    Invalid {
        file: String,
        line: usize,
        column: usize,
        /// The dotted key path, e.g. `workloads[1].comm`.
        key: String,
        message: String,
    },
}

impl ConfigError {
    /// The error of a document that did not deserialize, placed as well as we can.
    pub(super) fn from_yaml(
        err: &serde_path_to_error::Error<serde_yaml_ng::Error>,
        text: &str,
        file: &str,
    ) -> ConfigError {
        let key = match err.path().to_string() {
            path if path == "." => "(top level)".to_owned(),
            path => path,
        };
        let inner = err.inner();
        let reported = inner
            .location()
            .map(|location| (location.line(), location.column()));
        // serde_yaml places errors raised after a value was read (a visitor's checks) at
        // an enclosing container: the key's own line is better when it comes after that.
        let message = inner.to_string();
        let located = duplicate_key(text, &key, &message)
            .or_else(|| second_document(text, &message))
            .or_else(|| locate(text, &key));
        let (line, column) = match (reported, located) {
            (Some(reported), Some(located)) if located.0 > reported.0 => located,
            (Some(reported), _) => reported,
            (None, located) => located.unwrap_or((1, 1)),
        };
        ConfigError::Invalid {
            file: file.to_owned(),
            line,
            column,
            message: bare_message(&message, &key),
            key,
        }
    }

    /// Flow nesting past [`MAX_NESTING`], refused before the YAML parser sees it.
    pub(super) fn too_deep(text: &str, file: &str) -> Option<ConfigError> {
        let (line, column) = too_deep(text)?;
        Some(ConfigError::Invalid {
            file: file.to_owned(),
            line,
            column,
            key: "(top level)".to_owned(),
            message: format!("nested deeper than {MAX_NESTING} levels"),
        })
    }
}

/// Where a key path (`export.banyandb.spool.dir`, `workloads[1].comm`) is written in
/// block-style YAML: the 1-based line and column of its value, or of the list item for an
/// index. `None` when it is not written (a default) or sits inside flow style. Used for
/// errors found after parsing, and where serde_yaml can only name an enclosing container.
pub fn locate(text: &str, path: &str) -> Option<(usize, usize)> {
    /// A meaningful line: its key column, its text from there, and its dash column when it
    /// starts a list item (`- key: value`).
    struct Line<'t> {
        number: usize,
        indent: usize,
        content: &'t str,
        dash: Option<usize>,
    }
    let lines: Vec<Line> = text
        .lines()
        .enumerate()
        .filter_map(|(number, raw)| {
            let content = raw.trim_start();
            if content.is_empty() || content.starts_with('#') || content.starts_with("---") {
                return None;
            }
            let indent = raw.len() - content.len();
            Some(match content.strip_prefix("- ") {
                Some(item) => {
                    let inner = item.trim_start();
                    Line {
                        number,
                        indent: indent + 2 + (item.len() - inner.len()),
                        content: inner,
                        dash: Some(indent),
                    }
                }
                None => Line {
                    number,
                    indent,
                    content,
                    dash: None,
                },
            })
        })
        .collect();
    let segments = path.split('.').flat_map(|part| {
        let (key, indexes) = part
            .split_once('[')
            .map_or((part, ""), |(k, rest)| (k, rest));
        let indexes = indexes
            .split('[')
            .filter_map(|i| i.trim_end_matches(']').parse::<usize>().ok())
            .map(Err);
        std::iter::once(Ok(key))
            .filter(|k| k != &Ok(""))
            .chain(indexes)
    });
    let (mut cursor, mut parent): (usize, Option<usize>) = (0, None);
    let mut found = None;
    // Whether `line` (not the cursor's own line) leaves the block under `parent`.
    let leaves = |line: &Line, parent: Option<usize>| {
        parent.is_some_and(|p| line.indent <= p || line.dash.is_some_and(|d| d <= p))
    };
    for segment in segments {
        match segment {
            Ok(key) => {
                let at = (cursor..lines.len())
                    .take_while(|&i| i == cursor || !leaves(&lines[i], parent))
                    .find(|&i| {
                        let line = &lines[i];
                        let name = line.content.split(':').next().unwrap_or("");
                        parent.is_none_or(|p| line.indent > p)
                            && name.trim().trim_matches(['"', '\'']) == key
                            && line.content[name.len()..].starts_with(':')
                    })?;
                let line = &lines[at];
                let after = line.content.find(':')? + 1;
                let value = &line.content[after..];
                let column = line.indent + after + (value.len() - value.trim_start().len());
                found = Some((line.number + 1, column + 1));
                (cursor, parent) = (at + 1, Some(line.indent));
            }
            Err(index) => {
                let mut items = (cursor..lines.len())
                    .take_while(|&i| !leaves(&lines[i], parent))
                    .filter(|&i| lines[i].dash.is_some());
                let first = items.next()?;
                let dash = lines[first].dash?;
                let at = std::iter::once(first)
                    .chain(items.filter(|&i| lines[i].dash == Some(dash)))
                    .nth(index)?;
                found = Some((lines[at].number + 1, dash + 1));
                (cursor, parent) = (at, Some(dash));
            }
        }
    }
    found
}

/// How deep a configuration may nest flow collections (`[`, `{`). Ours needs three; the
/// parser's time grows with depth (100,000 levels took 55 s).
pub const MAX_NESTING: usize = 64;

/// Where flow nesting first passes [`MAX_NESTING`], if it does (quotes and comments aside).
fn too_deep(text: &str) -> Option<(usize, usize)> {
    let mut depth = 0usize;
    for (number, line) in text.lines().enumerate() {
        let mut quote = None;
        for (column, c) in line.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), _) => {}
                (None, '"' | '\'') => quote = Some(c),
                (None, '#') if column == 0 || line[..column].ends_with([' ', '\t']) => break,
                (None, '[' | '{') => {
                    depth += 1;
                    if depth > MAX_NESTING {
                        return Some((number + 1, column + 1));
                    }
                }
                (None, ']' | '}') => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    None
}

/// For "duplicate field `x`": where the second `x` of that mapping is written.
fn duplicate_key(text: &str, key: &str, message: &str) -> Option<(usize, usize)> {
    let field = message
        .split("duplicate field `")
        .nth(1)?
        .split('`')
        .next()?;
    let parent = key.trim_start_matches("(top level)");
    let path = |p: &str| {
        if p.is_empty() {
            field.to_owned()
        } else {
            format!("{p}.{field}")
        }
    };
    let (first_line, first_column) = locate(text, &path(parent))?;
    // The same key at the same column further down, before the mapping ends.
    let lines: Vec<&str> = text.lines().collect();
    let indent = lines.get(first_line - 1)?.find(field)?;
    for (number, line) in lines.iter().enumerate().skip(first_line) {
        let content = line.trim_start();
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let at = line.len() - content.len();
        if at < indent {
            break;
        }
        if at == indent
            && content.starts_with(field)
            && content[field.len()..].trim_start().starts_with(':')
        {
            let value = line[at + field.len()..].find(':')? + at + field.len() + 1;
            let rest = &line[value..];
            return Some((
                number + 1,
                value + (rest.len() - rest.trim_start().len()) + 1,
            ));
        }
    }
    let _ = first_column;
    None
}

/// For a file of several YAML documents: where the second one starts.
fn second_document(text: &str, message: &str) -> Option<(usize, usize)> {
    if !message.contains("more than one document") {
        return None;
    }
    let mut seen_content = false;
    for (number, line) in text.lines().enumerate() {
        if line.starts_with("---") && seen_content {
            return Some((number + 1, 1));
        }
        seen_content |= !line.trim().is_empty()
            && !line.trim_start().starts_with('#')
            && !line.starts_with("---");
    }
    None
}

/// serde_yaml's message without the key prefix and location suffix we print ourselves.
fn bare_message(message: &str, key: &str) -> String {
    // serde_yaml prefixes the path of the mapping it was in, a prefix of our key path.
    let message = match message.split_once(": ") {
        Some((path, rest)) if !path.is_empty() && key.starts_with(path) => rest,
        _ => message,
    };
    let message = match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => &message[..at],
        _ => message,
    };
    message.replace('\n', " ")
}
