//! Every fenced code block of a chapter, what its fence promises, and the rules
//! a block must follow so that no code a reader sees goes unchecked.
//!
//! The fence of a Rust block says what the block is expected to do, and the same
//! words give both the test (through [`skeptic_copy`]) and the marker a reader
//! sees (the theme styles the classes mdBook derives from the fence):
//!
//! | fence | the test | the marker |
//! |---|---|---|
//! | `rust` | compiled and run; must exit successfully | none |
//! | `rust,should_panic` | compiled and run; must panic | "panics" |
//! | `rust,deadlocks` | compiled and run; the watchdog must report a deadlock | "deadlocks" |
//! | `rust,hangs` | compiled and run; the watchdog must report a hang that is not a deadlock (a lost completion, a busy loop) | "hangs" |
//! | `rust,compile_fail` | must fail to compile | "does not compile" |
//! | `rust,no_run` | compiled only; the listing says why (`not-run`) | "compiled, not run" |
//!
//! `ignore` is refused: every Rust block in the book is at least compiled.

use std::fmt;

/// What a Rust block is expected to do when the tests compile and run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// Compiles, runs, exits successfully.
    Runs,
    /// Compiles, runs, panics.
    Panics,
    /// Compiles, runs, and its watchdog reports a deadlock.
    Deadlocks,
    /// Compiles, runs, and its watchdog reports a hang that is no deadlock.
    Hangs,
    /// Does not compile.
    CompileFails,
    /// Compiles; not run (the listing's `not-run` attribute says why).
    CompilesOnly,
}

impl Expectation {
    /// Every expectation, once: each list below is derived from this one.
    pub const ALL: [Expectation; 6] = [
        Expectation::Runs,
        Expectation::Panics,
        Expectation::Deadlocks,
        Expectation::Hangs,
        Expectation::CompileFails,
        Expectation::CompilesOnly,
    ];

    /// The fence word that asks for this expectation (`None` for a plain block).
    pub fn fence_word(self) -> Option<&'static str> {
        match self {
            Expectation::Runs => None,
            Expectation::Panics => Some("should_panic"),
            Expectation::Deadlocks => Some("deadlocks"),
            Expectation::Hangs => Some("hangs"),
            Expectation::CompileFails => Some("compile_fail"),
            Expectation::CompilesOnly => Some("no_run"),
        }
    }

    /// The name used in the marker line the tested copy carries (see
    /// [`EXPECT_MARKER`]).
    pub fn name(self) -> &'static str {
        match self {
            Expectation::Runs => "runs",
            Expectation::Panics => "panics",
            Expectation::Deadlocks => "deadlocks",
            Expectation::Hangs => "hangs",
            Expectation::CompileFails => "compile_fail",
            Expectation::CompilesOnly => "no_run",
        }
    }

    /// The inverse of [`Expectation::name`].
    pub fn from_name(name: &str) -> Option<Expectation> {
        Expectation::ALL.into_iter().find(|e| e.name() == name)
    }

    /// The inverse of [`Expectation::fence_word`].
    pub fn from_fence_word(word: &str) -> Option<Expectation> {
        Expectation::ALL
            .into_iter()
            .find(|e| e.fence_word() == Some(word))
    }

    /// How a run that keeps this promise must end, for the expectations that
    /// are run (`None` for those that are only compiled).
    pub fn required_end(self) -> Option<RequiredEnd> {
        match self {
            Expectation::Runs => Some(RequiredEnd::Success),
            Expectation::Panics => Some(RequiredEnd::Panic),
            Expectation::Deadlocks => Some(RequiredEnd::WatchdogDeadlock),
            Expectation::Hangs => Some(RequiredEnd::WatchdogHang),
            Expectation::CompileFails | Expectation::CompilesOnly => None,
        }
    }
}

/// How a block's run must end to keep its fence's promise. The exit statuses
/// of the watchdog are the support crate's (`awd::watchdog`); this crate
/// names them without depending on it, and the test harness maps them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequiredEnd {
    /// Any successful exit.
    Success,
    /// Exit status 101, the status of a panic, with "panicked" in the output.
    Panic,
    /// `awd::watchdog::DEADLOCK_EXIT_CODE`, with "deadlock" in the output.
    WatchdogDeadlock,
    /// `awd::watchdog::HANG_EXIT_CODE`, with "hang" in the output.
    WatchdogHang,
}

impl RequiredEnd {
    /// The word the run's output must contain ("" for a success).
    pub fn word(self) -> &'static str {
        match self {
            RequiredEnd::Success => "",
            RequiredEnd::Panic => "panicked",
            RequiredEnd::WatchdogDeadlock => "deadlock",
            RequiredEnd::WatchdogHang => "hang",
        }
    }
}

/// The fence words that promise an outcome: one per expectation but the
/// plain `rust` block.
pub fn outcome_words() -> impl Iterator<Item = &'static str> {
    Expectation::ALL
        .into_iter()
        .filter_map(Expectation::fence_word)
}

/// The fence words that change nothing about the test.
pub const OTHER_FENCE_WORDS: &[&str] = &["noplayground"];

/// The words a Rust fence may carry after `rust`.
pub fn rust_fence_words() -> Vec<&'static str> {
    outcome_words()
        .chain(OTHER_FENCE_WORDS.iter().copied())
        .collect()
}

/// The line the tested copy of a block ends with, naming its expectation; the
/// harness reads it back to decide what a run must look like.
pub const EXPECT_MARKER: &str = "// book-expect: ";

/// One fenced code block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fence {
    /// 1-based line of the opening fence.
    pub line: usize,
    /// 1-based line of the closing fence, if the block is closed.
    pub close_line: Option<usize>,
    /// The info string, trimmed.
    pub info: String,
    /// True when the block sits inside an ```` ```admonish ```` block.
    pub in_admonish: bool,
}

impl Fence {
    /// The words of the info string (split on commas and spaces).
    pub fn words(&self) -> Vec<&str> {
        self.info
            .split([',', ' ', '\t'])
            .filter(|w| !w.is_empty())
            .collect()
    }

    /// The block's language: the first word of its info string.
    pub fn language(&self) -> Option<&str> {
        self.words().first().copied()
    }

    /// True for a block a reader takes for Rust.
    pub fn is_rust(&self) -> bool {
        self.language() == Some("rust")
    }

    /// What the fence promises; `None` when it is not a Rust block.
    pub fn expectation(&self) -> Option<Expectation> {
        if !self.is_rust() {
            return None;
        }
        // The rules allow one outcome word per fence; with several, the first
        // in `Expectation::ALL` wins.
        let words = self.words();
        Some(
            Expectation::ALL
                .into_iter()
                .find(|e| e.fence_word().is_some_and(|w| words.contains(&w)))
                .unwrap_or(Expectation::Runs),
        )
    }
}

/// A broken rule, with where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleError {
    /// The chapter file, as given by the caller.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

struct Open {
    marker: char,
    len: usize,
    admonish: bool,
    fence: Option<usize>,
}

/// A line that opens or closes a fence: its marker, run length and info.
fn fence_line(line: &str) -> Option<(char, usize, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let marker = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = rest.chars().take_while(|c| *c == marker).count();
    if len < 3 {
        return None;
    }
    Some((marker, len, rest[len..].trim()))
}

/// Every fenced code block of `markdown`, in order. Blocks inside an
/// ```` ```admonish ```` container are found too (mdbook-admonish renders the
/// container's body as Markdown, so they are real code blocks to a reader).
pub fn scan(markdown: &str) -> Vec<Fence> {
    let mut fences: Vec<Fence> = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    for (index, line) in markdown.lines().enumerate() {
        let number = index + 1;
        let Some((marker, len, info)) = fence_line(line) else {
            continue;
        };
        match stack.last() {
            Some(top) if !top.admonish => {
                if marker == top.marker && len >= top.len && info.is_empty() {
                    let top = stack.pop().expect("checked above");
                    if let Some(i) = top.fence {
                        fences[i].close_line = Some(number);
                    }
                }
            }
            top => {
                let closes_container = top.is_some_and(|t| {
                    t.admonish && marker == t.marker && len >= t.len && info.is_empty()
                });
                if closes_container {
                    stack.pop();
                } else if info.starts_with("admonish") {
                    stack.push(Open {
                        marker,
                        len,
                        admonish: true,
                        fence: None,
                    });
                } else {
                    fences.push(Fence {
                        line: number,
                        close_line: None,
                        info: info.to_string(),
                        in_admonish: stack.iter().any(|o| o.admonish),
                    });
                    stack.push(Open {
                        marker,
                        len,
                        admonish: false,
                        fence: Some(fences.len() - 1),
                    });
                }
            }
        }
    }
    fences
}

/// The 1-based lines that open and close admonish containers.
fn admonish_lines(markdown: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    let mut stack: Vec<(char, usize, bool)> = Vec::new();
    for (index, line) in markdown.lines().enumerate() {
        let Some((marker, len, info)) = fence_line(line) else {
            continue;
        };
        match stack.last() {
            Some(&(m, l, false)) => {
                if marker == m && len >= l && info.is_empty() {
                    stack.pop();
                }
            }
            top => {
                if top.is_some_and(|&(m, l, a)| a && marker == m && len >= l && info.is_empty()) {
                    stack.pop();
                    lines.push(index + 1);
                } else if info.starts_with("admonish") {
                    stack.push((marker, len, true));
                    lines.push(index + 1);
                } else {
                    stack.push((marker, len, false));
                }
            }
        }
    }
    lines
}

/// The copy of an expanded chapter that skeptic reads. Line for line the same
/// as the chapter (so test names point at the right line), except that
/// admonish containers are opened up, so the blocks inside them are tested, and
/// each Rust fence is rewritten to the skeptic words for its expectation:
/// expected runs, panics and deadlocks go through a template (see
/// [`skeptic_templates`]) that names the expectation for the harness; expected
/// compile failures become `no_run,should_panic`.
pub fn skeptic_copy(markdown: &str) -> String {
    let fences = scan(markdown);
    let admonish = admonish_lines(markdown);
    let mut out = String::with_capacity(markdown.len());
    for (index, line) in markdown.lines().enumerate() {
        let number = index + 1;
        if admonish.contains(&number) {
            out.push('\n');
            continue;
        }
        let opening = fences.iter().find(|f| f.line == number);
        match opening.and_then(Fence::expectation) {
            Some(expect) => {
                let (marker, len, _) = fence_line(line).expect("a fence line");
                let run: String = std::iter::repeat_n(marker, len).collect();
                let words = match expect {
                    Expectation::CompileFails => "rust,no_run,should_panic".to_string(),
                    Expectation::CompilesOnly => "rust,no_run".to_string(),
                    other => format!("rust,skt-{}", other.name()),
                };
                out.push_str(&run);
                out.push_str(&words);
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The skeptic template file (`<chapter>.md.skt.md`) that goes beside every
/// copy: each template appends the line naming the block's expectation.
pub fn skeptic_templates() -> String {
    let mut out = String::from("# Templates: each names what the block must do\n\n");
    let run = Expectation::ALL
        .into_iter()
        .filter(|e| e.required_end().is_some());
    for expect in run {
        out.push_str(&format!(
            "```rust,skt-{name}\n{{}}\n{EXPECT_MARKER}{name}\n```\n\n",
            name = expect.name()
        ));
    }
    out
}

/// Checks the fences of one chapter (`markdown` as written, before includes are
/// expanded; `file` is used in messages). `not_run_lines` are the 1-based lines
/// that sit inside a listing carrying a `not-run` reason.
pub fn check(file: &str, markdown: &str, not_run_lines: &[usize]) -> Vec<RuleError> {
    let mut errors = Vec::new();
    let mut error = |line: usize, message: String| {
        errors.push(RuleError {
            file: file.to_string(),
            line,
            message,
        })
    };
    for fence in scan(markdown) {
        if fence.close_line.is_none() {
            error(fence.line, "code block is never closed".into());
        }
        let Some(language) = fence.language() else {
            error(
                fence.line,
                "code block has no language: a reader takes it for Rust, yet it would go \
                 untested; write ```rust (tested), or ```text / ```console"
                    .into(),
            );
            continue;
        };
        if matches!(language, "rs" | "Rust" | "rust2021" | "rust2018") {
            error(
                fence.line,
                format!("write the language as `rust`, not `{language}`"),
            );
        }
        if !fence.is_rust() {
            continue;
        }
        let words = fence.words();
        for word in &words[1..] {
            if *word == "ignore" {
                error(
                    fence.line,
                    "`ignore` leaves code unchecked: every Rust block is at least compiled \
                     (use `no_run` inside a listing that says why with `not-run=\"…\"`)"
                        .into(),
                );
            } else if !rust_fence_words().contains(word) {
                error(
                    fence.line,
                    format!(
                        "unknown fence word `{word}` (known: {})",
                        rust_fence_words().join(", ")
                    ),
                );
            }
        }
        let outcomes = words[1..]
            .iter()
            .filter(|w| Expectation::from_fence_word(w).is_some())
            .count();
        if outcomes > 1 {
            error(
                fence.line,
                format!(
                    "a block promises one outcome: use at most one of {}",
                    outcome_words().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        if fence.expectation() == Some(Expectation::CompilesOnly)
            && !not_run_lines.contains(&fence.line)
        {
            error(
                fence.line,
                "a `no_run` block must sit in a <Listing> whose `not-run=\"…\"` tells the \
                 reader why it is not run"
                    .into(),
            );
        }
    }
    errors
}

/// Crates a block may use and still run on the Rust Playground, which
/// offers the most used crates of crates.io but not this book's own.
const LOCAL_ONLY: [&str; 3] = ["awd::", "use awd", "loom::"];

/// True when the program in `code` (a block as expanded, hidden lines
/// included) needs a crate the Rust Playground does not have, so its play
/// button would lead to a compile error. Test modules (`#[cfg(test)]`, last
/// in every listing) are not compiled by a normal run and do not count.
pub fn needs_local_crates(code: &str) -> bool {
    let program = code
        .lines()
        .take_while(|line| line.trim_start_matches('#').trim() != "#[cfg(test)]")
        .collect::<Vec<_>>()
        .join("\n");
    LOCAL_ONLY.iter().any(|name| {
        program.match_indices(name).any(|(at, _)| {
            // A whole word: `awd::`, not `xawd::`.
            at == 0 || !program[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_')
        })
    })
}

/// The playground rule for one chapter (as expanded): a Rust block that
/// needs the book's local crates must say `noplayground` (its caption gives
/// the local command), and one that does not must keep its play button.
pub fn check_playground(file: &str, expanded: &str) -> Vec<RuleError> {
    let lines: Vec<&str> = expanded.lines().collect();
    let mut errors = Vec::new();
    for fence in scan(expanded) {
        if !fence.is_rust() {
            continue;
        }
        let end = fence.close_line.unwrap_or(lines.len() + 1) - 1;
        let code = lines[fence.line..end.max(fence.line)].join("\n");
        let local = needs_local_crates(&code);
        let marked = fence.words().contains(&"noplayground");
        let message = match (local, marked) {
            (true, false) => {
                "this block uses the book's own crates (awd, loom), which the Rust \
                              Playground does not have: add `noplayground` to its fence"
            }
            (false, true) => {
                "this block needs only Playground crates: drop `noplayground` so \
                              readers keep the play button"
            }
            _ => continue,
        };
        errors.push(RuleError {
            file: file.to_string(),
            line: fence.line,
            message: message.to_string(),
        });
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    const CHAPTER: &str = "\
# Title

```rust
fn main() {}
```

````admonish warning title=\"rust inside\"
```rust,deadlocks
fn main() {}
```
````

```
untagged
```
";

    #[test]
    fn finds_blocks_inside_admonitions() {
        let _limit = TestLimit::seconds(5);
        let fences = scan(CHAPTER);
        assert_eq!(fences.len(), 3);
        assert_eq!(fences[0].expectation(), Some(Expectation::Runs));
        assert!(fences[1].in_admonish);
        assert_eq!(fences[1].expectation(), Some(Expectation::Deadlocks));
        assert_eq!(fences[2].language(), None);
    }

    #[test]
    fn the_copy_keeps_lines_and_opens_admonitions() {
        let _limit = TestLimit::seconds(5);
        let copy = skeptic_copy(CHAPTER);
        assert_eq!(copy.lines().count(), CHAPTER.lines().count());
        let lines: Vec<&str> = copy.lines().collect();
        assert_eq!(lines[2], "```rust,skt-runs");
        assert_eq!(lines[6], "");
        assert_eq!(lines[7], "```rust,skt-deadlocks");
        assert_eq!(lines[10], "");
    }

    #[test]
    fn untagged_ignored_and_unexplained_blocks_are_refused() {
        let _limit = TestLimit::seconds(5);
        let errors = check("ch.md", CHAPTER, &[]);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].message.contains("no language"));
        let ignored = check("ch.md", "```rust,ignore\nfn main() {}\n```\n", &[]);
        assert!(ignored[0].message.contains("`ignore`"));
        let no_run = "```rust,no_run\nfn main() {}\n```\n";
        assert_eq!(check("ch.md", no_run, &[]).len(), 1);
        assert!(check("ch.md", no_run, &[1]).is_empty());
    }

    #[test]
    fn only_programs_that_need_local_crates_lose_the_play_button() {
        let _limit = TestLimit::seconds(5);
        assert!(needs_local_crates(
            "use awd::socket::IoThread;\nfn main() {}"
        ));
        assert!(needs_local_crates("fn main() { loom::model(|| {}); }"));
        assert!(!needs_local_crates(
            "fn main() {}\n# #[cfg(test)]\n# mod tests { use awd::x; }"
        ));
        assert!(!needs_local_crates("fn main() { let rawd::x = 1; }"));
        let wrong = "```rust\nuse awd::frame;\nfn main() {}\n```\n";
        assert_eq!(check_playground("ch.md", wrong).len(), 1);
        let right = "```rust,noplayground\nuse awd::frame;\nfn main() {}\n```\n";
        assert!(check_playground("ch.md", right).is_empty());
        let needless = "```rust,noplayground\nfn main() {}\n```\n";
        assert_eq!(check_playground("ch.md", needless).len(), 1);
    }

    #[test]
    fn expectations_round_trip_through_their_names_and_fence_words() {
        let _limit = TestLimit::seconds(5);
        for e in Expectation::ALL {
            assert_eq!(Expectation::from_name(e.name()), Some(e));
            if let Some(word) = e.fence_word() {
                assert_eq!(Expectation::from_fence_word(word), Some(e));
                let fence = Fence {
                    line: 1,
                    close_line: Some(2),
                    info: format!("rust,{word},noplayground"),
                    in_admonish: false,
                };
                assert_eq!(fence.expectation(), Some(e));
            }
        }
    }
}
