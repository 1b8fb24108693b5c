//! Runs what the book shows, bounded in time, and checks the promised outcome.
//!
//! - [`run_snippet`] receives each Rust block from skeptic's generated tests.
//!   It renames the block's `main` and adds a supervising `main` that runs the
//!   block in a child process (the same binary), kills it when it outlives
//!   [`SNIPPET_LIMIT`], and exits successfully only when the block did what
//!   its fence promised: ran, panicked, or was stopped by its watchdog with a
//!   deadlock report. skeptic then compiles and runs that program as usual.
//! - [`check_output`] runs a listing with the command its `output.txt` shows
//!   and compares the fresh output, normalised, with the stored one.
//!   `BOOK_BLESS=1` rewrites the stored output instead.

#![allow(dead_code)] // each test target uses one half

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use book_tools::process::run_bounded_merged;

use book_tools::fences::{Expectation, RequiredEnd, EXPECT_MARKER};

/// How long one block may run before it is stopped and its test fails.
pub const SNIPPET_LIMIT: Duration = Duration::from_secs(20);

/// How long `cargo run` of one listing may take, building included.
pub const OUTPUT_LIMIT: Duration = Duration::from_secs(300);

const RENAMED_MAIN: &str = "__book_snippet_main";

/// The block's expectation, read from the marker line its template appended.
fn expectation(text: &str) -> Expectation {
    text.lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix(EXPECT_MARKER))
        .and_then(|name| Expectation::from_name(name.trim()))
        .unwrap_or(Expectation::Runs)
}

/// The block with its `main` renamed and a supervising `main` added.
pub fn supervised(text: &str) -> Result<String, String> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("fn main(") {
        let before = text[..at].chars().last();
        if before.is_none_or(|c| c.is_whitespace()) {
            found.push(at);
        }
    }
    let [at] = found.as_slice() else {
        return Err(format!(
            "a Rust block must be a complete program with exactly one `fn main` \
             (hide the lines a reader does not need with `# `); found {}",
            found.len()
        ));
    };
    let expect = expectation(text);
    let required = expect
        .required_end()
        .ok_or_else(|| format!("a `{}` block is not run", expect.name()))?;
    // The status the run must end with; -1 stands for any success.
    let status = match required {
        RequiredEnd::Success => -1,
        RequiredEnd::Panic => 101,
        RequiredEnd::WatchdogDeadlock => awd::watchdog::DEADLOCK_EXIT_CODE,
        RequiredEnd::WatchdogHang => awd::watchdog::HANG_EXIT_CODE,
    };
    let renamed = format!(
        "{}fn {RENAMED_MAIN}({}",
        &text[..*at],
        &text[at + "fn main(".len()..]
    );
    Ok(format!(
        "{renamed}\n{}",
        SUPERVISOR
            .replace("@EXPECT@", expect.name())
            .replace("@LIMIT@", &SNIPPET_LIMIT.as_secs().to_string())
            .replace("@STATUS@", &status.to_string())
            .replace("@WORD@", required.word())
            .replace("@MAIN@", RENAMED_MAIN)
    ))
}

/// The `main` added to every block: the process runs itself as a child with a
/// deadline and judges the child's end against the promise.
const SUPERVISOR: &str = r#"
fn main() -> ::std::process::ExitCode {
    if ::std::env::var_os("BOOK_SNIPPET_CHILD").is_some() {
        return ::std::process::Termination::report(@MAIN@());
    }
    __book_supervise("@EXPECT@", @LIMIT@, @STATUS@, "@WORD@")
}

/// Runs the block as a child and checks that it ended as its fence
/// promises: with `status` (-1: any success), and `word` in its output.
fn __book_supervise(
    expect: &str,
    limit: u64,
    status: i32,
    word: &str,
) -> ::std::process::ExitCode {
    use ::std::io::Write;
    let exe = ::std::env::current_exe().expect("the block's own path");
    let mut command = ::std::process::Command::new(exe);
    command.env("BOOK_SNIPPET_CHILD", "1");
    let limit_time = ::std::time::Duration::from_secs(limit);
    let (ended, text) = match ::book_tools::process::run_bounded_merged(&mut command, limit_time) {
        Ok((ended, text)) => (Some(ended), text),
        Err(_) => (None, String::new()),
    };
    print!("{text}");
    let _ = ::std::io::stdout().flush();
    let verdict = match ended {
        None => Err(format!("still running after {limit} s: stopped")),
        Some(s) if status == -1 && s.success() => Ok(()),
        Some(s) if status != -1 && s.code() == Some(status) && text.contains(word) => Ok(()),
        Some(s) => Err(format!("the fence promises `{expect}`, but the block ended with {s}")),
    };
    match verdict {
        Ok(()) => ::std::process::ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("book harness: {why}");
            ::std::process::ExitCode::FAILURE
        }
    }
}
"#;

/// Called by skeptic's generated tests instead of `skeptic::rt::run_test`.
pub fn run_snippet(root: &str, out: &str, target: &str, text: &str) {
    let program = supervised(text).unwrap_or_else(|why| panic!("{why}"));
    if text.contains("io_uring::") {
        if let Err(e) = io_uring::IoUring::new(2) {
            return skipped(&format!("io_uring is unavailable here: {e}"));
        }
    }
    // Linux refuses to start a program file that another process still has
    // open for writing ("Text file busy"); with tests compiling and starting
    // programs on parallel threads, a child forked by one test can briefly
    // hold the file another test just wrote. That is the only failure
    // retried, a few times; any other failure stands.
    for attempt in 1..=3 {
        let run = std::panic::catch_unwind(|| skeptic::rt::run_test(root, out, target, &program));
        match run {
            Ok(()) => return,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| payload.downcast_ref::<&str>().copied())
                    .unwrap_or_default();
                if attempt == 3 || !message.contains("os error 26") {
                    std::panic::resume_unwind(payload);
                }
                eprintln!("book harness: the block's program was busy (attempt {attempt}); again");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// A check this machine cannot run (io_uring refused by the kernel or by
/// seccomp, Chapter 13): says so with the test's name, past libtest's
/// capture. With `CI=true` it fails instead: CI machines can run everything.
fn skipped(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let line = format!("skipped: {test}: {why}");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{line} (with CI=true a skip is a failure)"
    );
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn book_root() -> PathBuf {
    book_tools::repo::root()
}

/// Where cargo puts this workspace's binaries: beside the test's own `deps/`.
fn binary_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.ancestors()
        .nth(2)
        .expect("target/<profile>/deps/<test>")
        .to_path_buf()
}

/// Builds every binary of the workspace once per test run, so each output
/// check runs the program directly, as `cargo run` would after building it.
/// A compiler warning fails the build: it would end up in a reader's output.
fn built_once() {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let mut build = Command::new(env!("CARGO"));
        build
            .current_dir(book_root())
            .args(["build", "--quiet", "--workspace", "--bins"]);
        match run_bounded_merged(&mut build, OUTPUT_LIMIT)? {
            (status, text) if status.success() && !text.contains("warning") => Ok(()),
            (status, text) => Err(format!(
                "`cargo build --workspace --bins` ({status}):\n{text}"
            )),
        }
    });
    if let Err(why) = built {
        panic!("the listings do not build cleanly: {why}");
    }
}

/// Runs the listing whose stored output is `relative` (from the book root) and
/// compares. With `BOOK_BLESS=1` the fresh output is stored instead.
pub fn check_output(relative: &str) {
    let _limit = awd::watchdog::TestLimit::new(OUTPUT_LIMIT + Duration::from_secs(30));
    let path = book_root().join(relative);
    let stored_text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {relative}: {e}"));
    let stored =
        book_tools::output::parse(&stored_text).unwrap_or_else(|why| panic!("{relative}: {why}"));
    let mut words = stored.command.split_whitespace();
    let (Some("cargo"), Some(subcommand)) = (words.next(), words.next()) else {
        panic!("{relative}: the command must start with `cargo`");
    };
    let mut command = match (subcommand, words.next(), words.next()) {
        // `cargo run -p X -- args`: the binary cargo would run, built once
        // for all outputs (running cargo fifty times costs more than the
        // programs themselves).
        ("run", Some("-p"), Some(package)) => {
            built_once();
            let mut command = Command::new(binary_dir().join(package));
            command.args(words.skip_while(|w| *w == "--"));
            command
        }
        (subcommand, first, second) => {
            let mut command = Command::new(env!("CARGO"));
            command
                .arg(subcommand)
                .arg("--quiet")
                .args(first)
                .args(second)
                .args(words);
            command
        }
    };
    command.current_dir(book_root());
    let (status, fresh) = run_bounded_merged(&mut command, OUTPUT_LIMIT)
        .unwrap_or_else(|why| panic!("`{}`: {why}", stored.command));
    if let Some(line) = fresh.lines().find(|l| l.starts_with("warning: ")) {
        panic!(
            "`{}` printed a compiler warning, which would end up in the book: {line}",
            stored.command
        );
    }
    // Chapter 13's listings say this, with status 77, where io_uring is refused.
    if status.code() == Some(77) && fresh.contains("io_uring is unavailable here") {
        let why = fresh
            .lines()
            .find(|l| l.contains("io_uring is unavailable here"));
        return skipped(why.unwrap_or_default());
    }
    if std::env::var_os("BOOK_BLESS").is_some() {
        let note = match status.code() {
            Some(0) => String::new(),
            Some(code) => format!("  # exits with status {code}"),
            None => panic!("`{}` ended by a signal: {status}", stored.command),
        };
        std::fs::write(&path, format!("$ {}{note}\n{fresh}", stored.command))
            .unwrap_or_else(|e| panic!("cannot write {relative}: {e}"));
        return;
    }
    assert_eq!(
        status.code(),
        Some(stored.status),
        "`{}` must exit with status {} (as {relative} says); it ended with {status}. Output:\n{fresh}",
        stored.command,
        stored.status
    );
    if let Some(report) = book_tools::output::difference(&stored.output, &fresh) {
        panic!(
            "the output of `{}` no longer matches {relative} (after normalising times, \
             thread ids and ports):\n{report}\nFresh output:\n{fresh}\n\
             If the change is intended, store it with: BOOK_BLESS=1 cargo test --test outputs",
            stored.command
        );
    }
}
