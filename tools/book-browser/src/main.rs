//! `book-browser`: tests the built book in headless Chromium, the way a
//! reader sees it. It serves the book directory on 127.0.0.1, starts
//! ChromeDriver on a free port, drives one Chromium session through the
//! checks in [`checks`], saves screenshots, and ends everything it started
//! even when checks fail. It prints one line per failed or skipped check and
//! a summary, and exits with 0 when every check passed, 1 otherwise.
//!
//! Usage: `cargo run -p book-browser -- <book dir> [--screenshots <dir>]`
//! (`--verbose` prints every check with its time; `--time-limit <seconds>`
//! changes the overall limit of 300 s).

mod checks;
mod colour;
mod http;
mod png;
mod report;
mod scripts;
mod server;
mod styles;
mod webdriver;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::checks::{BookCheck, VIEWPORT};
use crate::report::Report;
use crate::server::BookServer;
use crate::webdriver::{ChromeDriver, Session};

/// The longest the whole run may take, unless `--time-limit` says otherwise.
const OVERALL_LIMIT: Duration = Duration::from_secs(300);

const USAGE: &str =
    "usage: book-browser <book dir> [--screenshots <dir>] [--verbose] [--time-limit <seconds>]";

/// The command line, parsed.
#[derive(Debug, PartialEq, Eq)]
struct Arguments {
    /// The built book (`mdbook build` writes it to `book/`).
    book: PathBuf,
    /// Where the screenshots go.
    screenshots: PathBuf,
    /// Print every check as it ends, with its time.
    verbose: bool,
    /// The longest the whole run may take.
    time_limit: Duration,
}

/// Parses the arguments after the program name.
fn parse_arguments(arguments: impl IntoIterator<Item = String>) -> Result<Arguments, String> {
    let mut book = None;
    let mut screenshots = PathBuf::from("screenshots");
    let mut verbose = false;
    let mut time_limit = OVERALL_LIMIT;
    let mut arguments = arguments.into_iter();
    while let Some(argument) = arguments.next() {
        match argument.as_str() {
            "--screenshots" => {
                screenshots = arguments
                    .next()
                    .map(PathBuf::from)
                    .ok_or("--screenshots needs a directory")?;
            }
            "--verbose" | "-v" => verbose = true,
            "--time-limit" => {
                time_limit = arguments
                    .next()
                    .and_then(|seconds| seconds.parse().ok())
                    .map(Duration::from_secs)
                    .ok_or("--time-limit needs a number of seconds")?;
            }
            "-h" | "--help" => return Err(String::new()),
            other if other.starts_with('-') => return Err(format!("unknown option {other}")),
            other if book.is_none() => book = Some(PathBuf::from(other)),
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    Ok(Arguments {
        book: book.ok_or("the book directory is missing")?,
        screenshots,
        verbose,
        time_limit,
    })
}

fn main() -> ExitCode {
    let started = Instant::now();
    let arguments = match parse_arguments(std::env::args().skip(1)) {
        Ok(arguments) => arguments,
        Err(why) => {
            if !why.is_empty() {
                eprintln!("book-browser: {why}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(1);
        }
    };
    let mut report = if arguments.verbose {
        Report::verbose(started)
    } else {
        Report::default()
    };
    // Everything started is ended when `check_book` returns, before the report.
    let pages = check_book(&arguments, started + arguments.time_limit, &mut report);
    if arguments.verbose {
        eprintln!(
            "[{:6.2} s] everything started has ended",
            started.elapsed().as_secs_f64()
        );
    }
    print!("{}", report.render(pages, started.elapsed()));
    println!("screenshots in {}", arguments.screenshots.display());
    if report.failures() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Starts the server, ChromeDriver and Chromium, runs the checks, and ends
/// them all (in reverse order, through their guards) before returning the
/// number of pages.
fn check_book(arguments: &Arguments, deadline: Instant, report: &mut Report) -> usize {
    let setup = |what: &str, result: Result<(), String>, report: &mut Report| {
        let failed = result.is_err();
        if failed {
            report.record("(setup)", what, result);
        }
        !failed
    };
    for required in ["index.html", "print.html"] {
        if !setup(
            "the book is built",
            exists(&arguments.book.join(required)),
            report,
        ) {
            return 0;
        }
    }
    let programs = find_program(&["chromedriver"]).and_then(|driver| {
        find_program(&["chromium", "chromium-browser", "google-chrome"])
            .map(|browser| (driver, browser))
    });
    let (chromedriver, chromium) = match programs {
        Ok(found) => found,
        Err(why) => {
            setup("find Chromium and ChromeDriver", Err(why), report);
            return 0;
        }
    };
    let scratch = match ScratchDir::create() {
        Ok(scratch) => scratch,
        Err(why) => {
            setup("create a temporary directory", Err(why), report);
            return 0;
        }
    };
    let server = match BookServer::start(&arguments.book) {
        Ok(server) => server,
        Err(why) => {
            setup("serve the book", Err(why), report);
            return 0;
        }
    };
    let driver = match ChromeDriver::start(&chromedriver, &scratch.path, deadline) {
        Ok(driver) => driver,
        Err(why) => {
            setup("start ChromeDriver", Err(why), report);
            return 0;
        }
    };
    let capabilities = capabilities(&chromium, &scratch.path.join("profile"));
    let session = match Session::open(&driver, capabilities, deadline) {
        Ok(session) => session,
        Err(why) => {
            setup("start Chromium", Err(why), report);
            return 0;
        }
    };
    BookCheck::new(&session, &server, report, &arguments.screenshots).run()
}

/// `Ok` if `path` is a file.
fn exists(path: &Path) -> Result<(), String> {
    if path.is_file() {
        Ok(())
    } else {
        Err(format!(
            "{} is missing: run `mdbook build` first",
            path.display()
        ))
    }
}

/// The first of `names` found on `PATH`.
fn find_program(names: &[&str]) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    names
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |dir| dir.join(name)))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "none of {} is on PATH (on Debian: apt-get install chromium chromium-driver)",
                names.join(", ")
            )
        })
}

/// The session's capabilities: headless Chromium with a fresh profile, no
/// network beyond 127.0.0.1, the browser log kept, bounded timeouts.
fn capabilities(chromium: &Path, profile: &Path) -> Value {
    json!({
        "browserName": "chrome",
        "pageLoadStrategy": "normal",
        "timeouts": { "pageLoad": 30_000, "script": 15_000, "implicit": 0 },
        "goog:loggingPrefs": { "browser": "ALL" },
        "goog:chromeOptions": {
            "binary": chromium,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                format!("--window-size={},{}", VIEWPORT.0, VIEWPORT.1),
                format!("--user-data-dir={}", profile.display()),
                // Any other host fails at once, the same with or without a
                // network: the book must not need one.
                "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            ],
        },
    })
}

/// A fresh temporary directory (ChromeDriver's log, Chromium's profile),
/// removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn create() -> Result<ScratchDir, String> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| since.subsec_nanos())
            .unwrap_or_default();
        let path =
            std::env::temp_dir().join(format!("book-browser-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        Ok(ScratchDir { path })
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    fn parse(line: &str) -> Result<Arguments, String> {
        parse_arguments(line.split_whitespace().map(str::to_string))
    }

    #[test]
    fn the_book_is_required_and_screenshots_default() {
        let _limit = TestLimit::seconds(5);
        assert_eq!(
            parse("book"),
            Ok(Arguments {
                book: PathBuf::from("book"),
                screenshots: PathBuf::from("screenshots"),
                verbose: false,
                time_limit: OVERALL_LIMIT,
            })
        );
        assert_eq!(
            parse("--screenshots /tmp/s book").unwrap().screenshots,
            PathBuf::from("/tmp/s")
        );
        assert!(parse("").is_err());
        assert!(parse("book --screenshots").is_err());
        assert!(parse("book other").is_err());
        assert!(parse("book --colour").is_err());
        assert_eq!(
            parse("book --time-limit 60").unwrap().time_limit,
            Duration::from_secs(60)
        );
        assert!(parse("book --time-limit soon").is_err());
    }
}
