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

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

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
    use ::std::io::{Read, Write};
    let exe = ::std::env::current_exe().expect("the block's own path");
    let (mut output, writer) = ::std::io::pipe().expect("a pipe");
    let mut child = {
        let mut command = ::std::process::Command::new(exe);
        command.env("BOOK_SNIPPET_CHILD", "1");
        command.stdout(writer.try_clone().expect("a pipe")).stderr(writer);
        command.spawn().expect("the block starts")
    };
    let reader = ::std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = output.read_to_end(&mut text);
        text
    });
    let deadline = ::std::time::Instant::now() + ::std::time::Duration::from_secs(limit);
    let ended = loop {
        if let Some(ended) = child.try_wait().expect("waiting for the block") {
            break Some(ended);
        }
        if ::std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        ::std::thread::sleep(::std::time::Duration::from_millis(5));
    };
    let text = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
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

fn book_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Waits for `child` at most `limit`; kills it when the limit passes.
fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
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
        let (mut reader, writer) = std::io::pipe().map_err(|e| e.to_string())?;
        let mut child = Command::new(env!("CARGO"))
            .current_dir(book_root())
            .args(["build", "--quiet", "--workspace", "--bins"])
            .stdin(Stdio::null())
            .stdout(writer.try_clone().map_err(|e| e.to_string())?)
            .stderr(writer)
            .spawn()
            .map_err(|e| format!("cargo build cannot start: {e}"))?;
        let collector = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = reader.read_to_string(&mut text);
            text
        });
        let status = wait_bounded(&mut child, OUTPUT_LIMIT);
        let text = collector.join().unwrap_or_default();
        match status {
            Some(status) if status.success() && !text.contains("warning") => Ok(()),
            Some(status) => Err(format!(
                "`cargo build --workspace --bins` ({status}):\n{text}"
            )),
            None => Err(format!(
                "`cargo build` still running after {OUTPUT_LIMIT:?}"
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
    let (mut reader, writer) = std::io::pipe().expect("a pipe");
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
    let mut child = command
        .current_dir(book_root())
        .stdin(Stdio::null())
        .stdout(writer.try_clone().expect("a pipe"))
        .stderr(writer)
        .spawn()
        .unwrap_or_else(|e| panic!("`{}` cannot start: {e}", stored.command));
    // The command holds the pipe's writing end: drop it, or the collector
    // below never sees the end of the output.
    drop(command);
    let collector = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = reader.read_to_end(&mut text);
        text
    });
    let status = wait_bounded(&mut child, OUTPUT_LIMIT);
    let fresh = String::from_utf8_lossy(&collector.join().unwrap_or_default()).into_owned();
    let Some(status) = status else {
        panic!(
            "`{}` was still running after {OUTPUT_LIMIT:?}: stopped. Output so far:\n{fresh}",
            stored.command
        );
    };
    if let Some(line) = fresh.lines().find(|l| l.starts_with("warning: ")) {
        panic!(
            "`{}` printed a compiler warning, which would end up in the book: {line}",
            stored.command
        );
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
