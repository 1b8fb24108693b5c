//! Runs what the book shows, bounded in time, and checks the promised outcome.
//!
//! - [`snippet`] receives each Rust block from skeptic's generated tests.
//!   skeptic compiles the block (its binary cache keeps what did not change)
//!   with a `main` added that, run by skeptic, only leaves the program in
//!   `OUT_DIR/snippet-bin/`; the harness then runs it there itself, one
//!   process, stops it when it outlives [`SNIPPET_LIMIT`], and passes it only
//!   when the block did what its fence promised: ran, panicked, or was
//!   stopped by its watchdog with a deadlock report.
//! - [`output`] runs a listing with the command its `output.txt` shows and
//!   compares the fresh output, normalised, with the stored one.
//!   `BOOK_BLESS=1` rewrites the stored output instead.
//! - Both run ahead of libtest, several at a time ([`ahead`]).

#![allow(dead_code)] // each test target uses one half

pub mod ahead;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use ahead::{Ahead, Outcome};
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

/// The exit status a block's run must end with (-1: any success) and the
/// word its output must hold.
fn required(text: &str) -> Result<(i32, &'static str), String> {
    let expect = expectation(text);
    let required = expect
        .required_end()
        .ok_or_else(|| format!("a `{}` block is not run", expect.name()))?;
    let status = match required {
        RequiredEnd::Success => -1,
        RequiredEnd::Panic => 101,
        RequiredEnd::WatchdogDeadlock => awd::watchdog::DEADLOCK_EXIT_CODE,
        RequiredEnd::WatchdogHang => awd::watchdog::HANG_EXIT_CODE,
    };
    Ok((status, required.word()))
}

/// The block with its `main` renamed and a `main` added that runs the block
/// when the harness asks (`BOOK_SNIPPET_CHILD`), and otherwise, when skeptic
/// runs the fresh program, leaves it at `link` for the harness to run.
pub fn supervised(text: &str, link: &Path) -> Result<String, String> {
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
    required(text)?;
    let renamed = format!(
        "{}fn {RENAMED_MAIN}({}",
        &text[..*at],
        &text[at + "fn main(".len()..]
    );
    Ok(format!(
        "{renamed}\n{}",
        PUBLISHER
            .replace("@LINK@", &link.to_string_lossy())
            .replace("@MAIN@", RENAMED_MAIN)
    ))
}

/// The `main` added to every block.
const PUBLISHER: &str = r#"
fn main() -> ::std::process::ExitCode {
    if ::std::env::var_os("BOOK_SNIPPET_CHILD").is_some() {
        return ::std::process::Termination::report(@MAIN@());
    }
    __book_leave_at(r"@LINK@")
}

/// Run by skeptic once compiled: leaves this program at `link` (a hard link
/// to skeptic's copy), where the book's harness runs it under its limit.
fn __book_leave_at(link: &str) -> ::std::process::ExitCode {
    let fresh = format!("{link}.{}", ::std::process::id());
    let left = ::std::env::current_exe().and_then(|exe| {
        let _ = ::std::fs::remove_file(&fresh);
        ::std::fs::hard_link(&exe, &fresh)
            .or_else(|_| ::std::fs::copy(&exe, &fresh).map(drop))?;
        ::std::fs::rename(&fresh, link)
    });
    match left {
        Ok(()) => ::std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("book harness: cannot leave the block's program at {link}: {e}");
            ::std::process::ExitCode::FAILURE
        }
    }
}
"#;

/// Where skeptic's build of a block is left for the harness to run.
fn program_path(out: &str, text: &str) -> PathBuf {
    Path::new(out).join("snippet-bin").join(ahead::id(text))
}

/// What every block of the binary is compiled with (skeptic's arguments).
static SKEPTIC_PLACE: OnceLock<(String, String, String)> = OnceLock::new();

thread_local! {
    /// Set while [`snippet`] collects the blocks instead of running them.
    static COLLECTED: std::cell::RefCell<Option<Vec<(&'static str, String)>>> =
        const { std::cell::RefCell::new(None) };
}

/// Called by skeptic's generated tests instead of `skeptic::rt::run_test`;
/// `all` is every such test of the binary, so that the first one can start
/// them all ahead.
pub fn snippet(
    all: &[(&'static str, fn())],
    name: &'static str,
    root: &str,
    out: &str,
    target: &str,
    text: &str,
) {
    let collecting = COLLECTED.with(|c| {
        c.borrow_mut()
            .as_mut()
            .map(|blocks| blocks.push((name, text.to_string())))
            .is_some()
    });
    if collecting {
        return;
    }
    SKEPTIC_PLACE.get_or_init(|| (root.to_string(), out.to_string(), target.to_string()));
    let pool = Ahead::start("snippets", || collect(all), run_block);
    report(pool.outcome(name, run_block));
}

/// Shows a check's outcome on the test's thread: what it printed, and a
/// failure as the test's panic.
fn report(outcome: Outcome) {
    match outcome {
        Outcome::Passed(printed) => print!("{printed}"),
        Outcome::Failed(why) => panic!("{why}"),
        Outcome::Skipped(why) => skipped(&why),
        Outcome::OnTestThread => unreachable!("the pool runs it on the test's thread"),
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

/// Every block of the binary: each test called with collecting on.
fn collect(all: &[(&'static str, fn())]) -> Vec<(&'static str, String)> {
    COLLECTED.with(|c| *c.borrow_mut() = Some(Vec::new()));
    for (_, test) in all {
        test();
    }
    COLLECTED
        .with(|c| c.borrow_mut().take())
        .unwrap_or_default()
}

/// Compiles one block through skeptic and runs it, bounded, where skeptic
/// left it. Off the test's thread, a failed build asks to be redone on the
/// test's thread, where the compiler's messages are shown with the test.
fn run_block(text: &str, on_test_thread: bool) -> Outcome {
    let (root, out, target) = SKEPTIC_PLACE.get().expect("set by the first block");
    let path = program_path(out, text);
    let program = match supervised(text, &path) {
        Ok(program) => program,
        Err(why) => return Outcome::Failed(why),
    };
    if text.contains("io_uring::") {
        if let Err(e) = io_uring::IoUring::new(2) {
            return Outcome::Skipped(format!("io_uring is unavailable here: {e}"));
        }
    }
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if on_test_thread {
        build(root, out, target, &program);
    } else if std::panic::catch_unwind(|| build(root, out, target, &program)).is_err() {
        return Outcome::OnTestThread;
    }
    run_built(text, &path)
}

/// skeptic's build (and its run, which leaves the program for the harness).
fn build(root: &str, out: &str, target: &str, program: &str) {
    // Linux refuses to start a program file that another process still has
    // open for writing ("Text file busy"); with tests compiling and starting
    // programs on parallel threads, a child forked by one test can briefly
    // hold the file another test just wrote. That is the only failure
    // retried, a few times; any other failure stands.
    for attempt in 1..=3 {
        let run = std::panic::catch_unwind(|| skeptic::rt::run_test(root, out, target, program));
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
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// Runs the program skeptic left at `path`, in a directory of its own, and
/// judges its end against the block's fence.
fn run_built(text: &str, path: &Path) -> Outcome {
    let (status, word) = match required(text) {
        Ok(required) => required,
        Err(why) => return Outcome::Failed(why),
    };
    let expect = expectation(text).name();
    let dir = std::env::temp_dir().join(format!(
        "book-snippet-{}-{}",
        ahead::id(text),
        std::process::id()
    ));
    let _ = std::fs::create_dir_all(&dir);
    let mut ended = Err(String::new());
    for _ in 0..3 {
        let mut command = Command::new(path);
        command.env("BOOK_SNIPPET_CHILD", "1").current_dir(&dir);
        ended = run_bounded_merged(&mut command, SNIPPET_LIMIT);
        match &ended {
            Err(why) if why.contains("os error 26") => {
                std::thread::sleep(Duration::from_millis(100))
            }
            _ => break,
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let limit = SNIPPET_LIMIT.as_secs();
    let (ended, text) = match ended {
        Ok((ended, text)) => (Some(ended), text),
        Err(why) if why.contains("still running") => (None, String::new()),
        Err(why) => return Outcome::Failed(why),
    };
    let verdict = match ended {
        None => Err(format!("still running after {limit} s: stopped")),
        Some(s) if status == -1 && s.success() => Ok(()),
        Some(s) if status != -1 && s.code() == Some(status) && text.contains(word) => Ok(()),
        Some(s) => Err(format!(
            "the fence promises `{expect}`, but the block ended with {s}"
        )),
    };
    match verdict {
        Ok(()) => Outcome::Passed(text),
        Err(why) => Outcome::Failed(format!("{text}\nbook harness: {why}")),
    }
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

/// Called by each generated output test; `all` is every output test of the
/// binary (test name, stored output), so that the first one can start them
/// all ahead.
pub fn output(all: &[(&'static str, &'static str)], name: &'static str) {
    let checks = || all.iter().map(|(n, p)| (*n, p.to_string())).collect();
    let pool = Ahead::start("outputs", checks, run_output);
    report(pool.outcome(name, run_output));
}

/// [`check_output`], its panic as the outcome.
fn run_output(relative: &str, _on_test_thread: bool) -> Outcome {
    match std::panic::catch_unwind(|| check_output(relative)) {
        Ok(None) => Outcome::Passed(String::new()),
        Ok(Some(why)) => Outcome::Skipped(why),
        Err(payload) => Outcome::Failed(
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| format!("{relative}: the check panicked")),
        ),
    }
}

/// Runs the listing whose stored output is `relative` (from the book root) and
/// compares. With `BOOK_BLESS=1` the fresh output is stored instead. Returns
/// why, when this machine cannot run the listing (the check is then skipped).
pub fn check_output(relative: &str) -> Option<String> {
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
        return Some(why.unwrap_or_default().to_string());
    }
    if std::env::var_os("BOOK_BLESS").is_some() {
        let note = match status.code() {
            Some(0) => String::new(),
            Some(code) => format!("  # exits with status {code}"),
            None => panic!("`{}` ended by a signal: {status}", stored.command),
        };
        std::fs::write(&path, format!("$ {}{note}\n{fresh}", stored.command))
            .unwrap_or_else(|e| panic!("cannot write {relative}: {e}"));
        return None;
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
    None
}
