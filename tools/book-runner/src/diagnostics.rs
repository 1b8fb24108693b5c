//! Reading cargo's `--message-format=json` output: the compiler's messages,
//! with their line numbers moved from the rebuilt file to the block as the
//! reader sees it, and the path of the program that was built.

use serde_json::Value;

/// One compiler message, ready for the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// `error`, `warning`, …
    pub level: String,
    /// The line of the block as shown where the message points, if it
    /// points at a shown line.
    pub line: Option<usize>,
    /// rustc's rendered message, with shown line numbers.
    pub text: String,
}

/// What one line of cargo's JSON output says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// A compiler message about the file `file`.
    Diagnostic(Diagnostic),
    /// A binary was built (or found fresh) at this path.
    Executable(String),
    /// Anything else.
    Other,
}

/// Rewrites rustc's rendered message: `--> src/main.rs:57:9` becomes
/// `--> line 12:9 as shown (src/main.rs:57:9)`, and the gutter's `57 |`
/// becomes `12 |`. `shown_line[n - 1]` is the shown line of line `n` of the
/// rebuilt `file`; lines without one (hidden lines) keep their number and
/// are named as hidden.
pub fn rewrite(rendered: &str, file: &str, shown_line: &[Option<usize>], name: &str) -> String {
    let map = |n: usize| shown_line.get(n.wrapping_sub(1)).copied().flatten();
    let mut out = String::new();
    for line in rendered.lines() {
        let trimmed = line.trim_start();
        if let Some(location) = trimmed.strip_prefix("--> ") {
            let indent = &line[..line.len() - trimmed.len()];
            let mut parts = location.rsplitn(3, ':');
            let column = parts.next();
            let number = parts.next().and_then(|n| n.parse::<usize>().ok());
            let path = parts.next();
            match (path, number, column) {
                (Some(path), Some(n), Some(column)) if path == file => match map(n) {
                    Some(shown) => out.push_str(&format!(
                        "{indent}--> line {shown}:{column} of {name} as shown ({location})"
                    )),
                    None => {
                        out.push_str(&format!("{indent}--> {location}, a hidden line of {name}"))
                    }
                },
                _ => out.push_str(line),
            }
        } else if let Some((gutter, rest)) = line.split_once(" |") {
            match gutter.trim().parse::<usize>().ok().and_then(map) {
                Some(shown) => {
                    let width = gutter.len();
                    out.push_str(&format!("{shown:<width$} |{rest}"));
                }
                _ => out.push_str(line),
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Reads one line of cargo's JSON output. `file` is the rebuilt file's path
/// as rustc names it (`src/main.rs`); `shown_line` maps its lines (empty for
/// an unedited build, whose messages are passed on as they are).
pub fn read(line: &str, file: &str, shown_line: &[Option<usize>], name: &str) -> Message {
    let Ok(value) = serde_json::from_str::<Value>(line) else {
        return Message::Other;
    };
    match value["reason"].as_str() {
        Some("compiler-message") => {
            let message = &value["message"];
            let level = message["level"].as_str().unwrap_or("error").to_string();
            let rendered = message["rendered"].as_str().unwrap_or_default();
            let primary = message["spans"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["is_primary"].as_bool() == Some(true));
            let line = primary
                .filter(|s| s["file_name"].as_str() == Some(file))
                .and_then(|s| s["line_start"].as_u64())
                .and_then(|n| {
                    shown_line
                        .get((n as usize).wrapping_sub(1))
                        .copied()
                        .flatten()
                });
            let text = if shown_line.is_empty() {
                rendered.to_string()
            } else {
                rewrite(rendered, file, shown_line, name)
            };
            Message::Diagnostic(Diagnostic { level, line, text })
        }
        Some("compiler-artifact") => match value["executable"].as_str() {
            Some(path) => Message::Executable(path.to_string()),
            None => Message::Other,
        },
        _ => Message::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    const RENDERED: &str = "error[E0425]: cannot find value `x` in this scope\n  --> src/main.rs:5:9\n   |\n5  |         x\n   |         ^ not found in this scope\n\n";

    #[test]
    fn line_numbers_become_the_lines_shown() {
        let _limit = TestLimit::seconds(5);
        let map = vec![None, None, Some(1), Some(2), Some(3)];
        let text = rewrite(RENDERED, "src/main.rs", &map, "Listing 3-1");
        assert!(
            text.contains("--> line 3:9 of Listing 3-1 as shown (src/main.rs:5:9)"),
            "{text}"
        );
        assert!(text.contains("3  |         x"), "{text}");
    }

    #[test]
    fn a_hidden_line_is_named_hidden() {
        let _limit = TestLimit::seconds(5);
        let text = rewrite(RENDERED, "src/main.rs", &[None; 6], "Listing 3-1");
        assert!(text.contains("src/main.rs:5:9, a hidden line of Listing 3-1"));
    }

    #[test]
    fn cargo_json_is_read() {
        let _limit = TestLimit::seconds(5);
        let message = serde_json::json!({
            "reason": "compiler-message",
            "message": {
                "level": "error",
                "rendered": RENDERED,
                "spans": [{"is_primary": true, "file_name": "src/main.rs", "line_start": 5}]
            }
        });
        let map = vec![None, None, Some(1), Some(2), Some(3)];
        match read(&message.to_string(), "src/main.rs", &map, "Listing 3-1") {
            Message::Diagnostic(d) => {
                assert_eq!(d.line, Some(3));
                assert_eq!(d.level, "error");
            }
            other => panic!("{other:?}"),
        }
        let artifact = r#"{"reason":"compiler-artifact","executable":"/t/debug/x"}"#;
        assert_eq!(
            read(artifact, "src/main.rs", &map, "x"),
            Message::Executable("/t/debug/x".into())
        );
    }
}
