//! A listing's stored output (`output.txt` beside its `Cargo.toml`) and the
//! comparison with a fresh run.
//!
//! The file starts with the command, as a reader types it, then holds what the
//! program printed (stdout and stderr, interleaved as a terminal shows them):
//!
//! ```text
//! $ cargo run -p listing-00-01
//! reading 1: 21.5 °C from sensor 7
//! ```
//!
//! A program that is meant to fail says so on the command line, where the reader
//! sees it too: `$ cargo run -p listing-03-02  # exits with status 3`; without
//! that note the program must exit successfully. Before comparing, both sides
//! are normalised: durations, thread ids and loopback port numbers vary from
//! run to run and machine to machine; nothing else does.

/// A parsed `output.txt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredOutput {
    /// The command after `$ `.
    pub command: String,
    /// The exit status the program must end with.
    pub status: i32,
    /// Everything after the command line.
    pub output: String,
}

const STATUS_NOTE: &str = "# exits with status ";

/// Parses an `output.txt`.
pub fn parse(text: &str) -> Result<StoredOutput, String> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let command = first
        .strip_prefix("$ ")
        .ok_or("the first line of output.txt must be the command, starting with \"$ \"")?;
    let (command, status) = match command.split_once(STATUS_NOTE) {
        Some((command, status)) => (
            command.trim_end(),
            status
                .trim()
                .parse()
                .map_err(|_| format!("`{STATUS_NOTE}` must be followed by a number"))?,
        ),
        None => (command, 0),
    };
    if !command.starts_with("cargo run -p ") && !command.starts_with("cargo test -p ") {
        return Err(format!(
            "the command must be `cargo run -p <listing>` (or `cargo test -p`), not `{command}`"
        ));
    }
    Ok(StoredOutput {
        command: command.to_string(),
        status,
        output: rest.to_string(),
    })
}

const UNITS: [&str; 6] = ["ns", "µs", "us", "ms", "s", "min"];

/// The text with what legitimately varies between runs replaced by a
/// placeholder: durations (`12.3ms`, `4 µs`) → `<duration>`, `ThreadId(7)` →
/// `ThreadId(<n>)`, `127.0.0.1:40312` → `127.0.0.1:<port>`. Trailing spaces
/// are dropped.
pub fn normalise(text: &str) -> String {
    text.lines()
        .map(|line| normalise_line(line.trim_end()))
        .collect::<Vec<_>>()
        .join("\n")
        .trim_end()
        .to_string()
}

fn normalise_line(line: &str) -> String {
    let line = replace_after(line, "ThreadId(", "<n>");
    let line = replace_after(&line, "127.0.0.1:", "<port>");
    durations(&line)
}

/// Replaces the digits that follow each `prefix` by `with`.
fn replace_after(line: &str, prefix: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find(prefix) {
        let after = at + prefix.len();
        out.push_str(&rest[..after]);
        let digits = rest[after..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len() - after);
        if digits > 0 {
            out.push_str(with);
        }
        rest = &rest[after + digits..];
    }
    out.push_str(rest);
    out
}

/// Replaces every number directly followed by a time unit.
fn durations(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let starts_number = chars[i].is_ascii_digit()
            && (i == 0 || !(chars[i - 1].is_alphanumeric() || chars[i - 1] == '_'));
        if starts_number {
            let mut j = i;
            while j < chars.len() && (chars[j].is_ascii_digit() || chars[j] == '.') {
                j += 1;
            }
            let mut k = j;
            if k < chars.len() && chars[k] == ' ' {
                k += 1;
            }
            let rest: String = chars[k..].iter().collect();
            let unit = UNITS.iter().find(|u| {
                rest.starts_with(**u)
                    && !rest[u.len()..]
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_alphanumeric())
            });
            if let Some(unit) = unit {
                out.push_str("<duration>");
                i = k + unit.chars().count();
                continue;
            }
            out.extend(&chars[i..j]);
            i = j;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// A line-by-line account of where two normalised outputs differ.
pub fn difference(expected: &str, actual: &str) -> Option<String> {
    let (expected, actual) = (normalise(expected), normalise(actual));
    if expected == actual {
        return None;
    }
    let mut report = String::new();
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    for i in 0..e.len().max(a.len()) {
        let (left, right) = (e.get(i).copied(), a.get(i).copied());
        if left != right {
            report.push_str(&format!(
                "line {}:\n  stored: {}\n  fresh:  {}\n",
                i + 2,
                left.unwrap_or("<none>"),
                right.unwrap_or("<none>")
            ));
        }
    }
    Some(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn what_varies_is_masked_and_nothing_else() {
        let _limit = TestLimit::seconds(5);
        assert_eq!(
            normalise("took 12.5ms on ThreadId(7) at 127.0.0.1:40312, 3 frames, 2 s"),
            "took <duration> on ThreadId(<n>) at 127.0.0.1:<port>, 3 frames, <duration>"
        );
        assert_eq!(
            normalise("sensor7 sent 5 readings"),
            "sensor7 sent 5 readings"
        );
        assert_eq!(normalise("after 300 µs"), "after <duration>");
    }

    #[test]
    fn one_changed_token_is_a_difference() {
        let _limit = TestLimit::seconds(5);
        assert!(difference("a 1ms\nb", "a 9ms\nb").is_none());
        let report = difference("reading 21.5\n", "reading 21.6\n").unwrap();
        assert!(report.contains("line 2"), "{report}");
    }

    #[test]
    fn the_command_line_is_required() {
        let _limit = TestLimit::seconds(5);
        assert!(parse("hello\n").is_err());
        let stored = parse("$ cargo run -p listing-00-01\nhi\n").unwrap();
        assert_eq!(stored.command, "cargo run -p listing-00-01");
        assert_eq!(stored.output, "hi\n");
        assert_eq!(stored.status, 0);
        let failing = parse("$ cargo run -p listing-03-02  # exits with status 3\n").unwrap();
        assert_eq!(
            (failing.command.as_str(), failing.status),
            ("cargo run -p listing-03-02", 3)
        );
    }
}
