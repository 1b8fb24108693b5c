//! `book-browser`: tests the built book in headless Chromium, the way a
//! reader sees it. It serves the book directory on 127.0.0.1, starts
//! ChromeDriver on a free port, drives one Chromium session (through
//! `fantoccini`) through the checks in [`checks`], saves screenshots, and
//! ends everything it started even when checks fail or a signal stops it
//! ([`driver`]). It prints one line per failed or skipped check and a
//! summary, and exits with 0 when every check passed, 1 otherwise.
//!
//! Usage: `cargo run -p book-browser -- <book dir> [--screenshots <dir>]`
//! (`--verbose` prints every check with its time; `--time-limit <seconds>`
//! changes the overall limit of 600 s).

mod accessibility;
mod browser;
mod checks;
mod colour;
mod driver;
mod keyboard;
mod report;
mod runner;
mod scripts;
mod server;
mod styles;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::accessibility::Audit;
use crate::browser::Session;
use crate::checks::{BookCheck, VIEWPORT};
use crate::driver::ChromeDriver;
use crate::report::Report;
use crate::runner::Runner;
use crate::server::BookServer;

/// The longest the whole run may take, unless `--time-limit` says otherwise.
const OVERALL_LIMIT: Duration = Duration::from_secs(600);

const USAGE: &str = "usage: book-browser <book dir> [--screenshots <dir>] [--axe <axe.min.js>] \
     [--runner <book-runner>] [--runner-only] [--verbose] [--time-limit <seconds>]";

/// The command line, parsed.
#[derive(Debug, PartialEq, Eq)]
struct Arguments {
    /// The built book (`mdbook build` writes it to `book/`).
    book: PathBuf,
    /// Where the screenshots go.
    screenshots: PathBuf,
    /// axe-core's script, when given: then the audits are required.
    axe: Option<PathBuf>,
    /// The book's runner, when given: then its checks are required.
    runner: Option<PathBuf>,
    /// Only the runner's checks (quicker while working on the runner).
    runner_only: bool,
    /// Print every check as it ends, with its time.
    verbose: bool,
    /// The longest the whole run may take.
    time_limit: Duration,
}

/// Parses the arguments after the program name.
fn parse_arguments(arguments: impl IntoIterator<Item = String>) -> Result<Arguments, String> {
    let mut book = None;
    let mut screenshots = PathBuf::from("screenshots");
    let mut axe = None;
    let mut runner = None;
    let mut runner_only = false;
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
            "--axe" => {
                axe = Some(
                    arguments
                        .next()
                        .map(PathBuf::from)
                        .ok_or("--axe needs axe-core's axe.min.js")?,
                );
            }
            "--runner" => {
                runner = Some(
                    arguments
                        .next()
                        .map(PathBuf::from)
                        .ok_or("--runner needs the book-runner program")?,
                );
            }
            "--runner-only" => runner_only = true,
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
        axe,
        runner,
        runner_only,
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(why) => {
            eprintln!("book-browser: start the Tokio runtime: {why}");
            return ExitCode::from(1);
        }
    };
    // Everything started is ended when `check_book` returns, before the report.
    let pages = check_book(
        runtime.handle(),
        &arguments,
        started + arguments.time_limit,
        &mut report,
    );
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
fn check_book(
    runtime: &tokio::runtime::Handle,
    arguments: &Arguments,
    deadline: Instant,
    report: &mut Report,
) -> usize {
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
    let adopted = driver::adopt_orphans().and_then(|()| driver::kill_on_signal(runtime));
    if !setup("watch over the processes it starts", adopted, report) {
        return 0;
    }
    let scratch = match ScratchDir::create() {
        Ok(scratch) => scratch,
        Err(why) => {
            setup("create a temporary directory", Err(why), report);
            return 0;
        }
    };
    let server = match BookServer::start(runtime, &arguments.book) {
        Ok(server) => server,
        Err(why) => {
            setup("serve the book", Err(why), report);
            return 0;
        }
    };
    let mut driver = match ChromeDriver::start(&chromedriver, &scratch.path, deadline) {
        Ok(driver) => driver,
        Err(why) => {
            setup("start ChromeDriver", Err(why), report);
            return 0;
        }
    };
    let capabilities = capabilities(&chromium, &scratch.path.join("profile"));
    let mut session = match Session::open(runtime.clone(), &driver, capabilities, deadline) {
        Ok(session) => session,
        Err(why) => {
            setup("start Chromium", Err(why), report);
            end_everything(&mut driver, report);
            return 0;
        }
    };
    let audit = load_axe(arguments.axe.as_deref(), report);
    let second_server = BookServer::start(runtime, &arguments.book);
    let mut runner = start_runner(
        arguments.runner.as_deref(),
        &server.root_url(),
        &scratch.path,
        report,
    );
    let runner_checks = match (&runner, &second_server) {
        (Some(runner), Ok(second)) => Some((runner, second.root_url())),
        (Some(_), Err(why)) => {
            report.fail(
                "(setup)",
                "serve the book from a second origin",
                why.clone(),
            );
            None
        }
        (None, _) => None,
    };
    let pages = BookCheck::new(&session, &server, report, &arguments.screenshots)
        .with_audit(audit)
        .with_runner(runner_checks, arguments.runner_only)
        .run();
    session.end();
    if let Some(runner) = &mut runner {
        let ended = runner.end();
        report.record("(cleanup)", "the runner and its runs end", ended);
    }
    end_everything(&mut driver, report);
    pages
}

/// Starts the book's runner from `--runner` (its checks required then) or
/// from beside this program, where `cargo build -p book-runner` puts it
/// (skipped, with that command, when it is not there).
fn start_runner(
    given: Option<&Path>,
    root_url: &str,
    scratch: &Path,
    report: &mut Report,
) -> Option<Runner> {
    let what = "start the book's runner";
    let program = match given {
        Some(path) => path.to_path_buf(),
        None => {
            let beside = std::env::current_exe()
                .ok()
                .and_then(|me| me.parent().map(|dir| dir.join("book-runner")))
                .filter(|path| path.is_file());
            match beside {
                Some(path) => path,
                None => {
                    report.skip(
                        "(setup)",
                        what,
                        "the runner is not built; build it with `cargo build -p book-runner`",
                    );
                    return None;
                }
            }
        }
    };
    let origin = root_url.trim_end_matches('/');
    match Runner::start(&program, origin, &scratch.join("book-runner.log")) {
        Ok(runner) => {
            report.record("(setup)", what, Ok(()));
            Some(runner)
        }
        Err(why) => {
            report.fail("(setup)", what, why);
            None
        }
    }
}

/// Ends ChromeDriver's group, then checks that every process the run
/// started has ended.
fn end_everything(driver: &mut ChromeDriver, report: &mut Report) {
    let ended = driver.processes.end();
    report.record("(cleanup)", "ChromeDriver and Chromium end", ended);
    report.record(
        "(cleanup)",
        "every process the run started has ended",
        driver::every_process_has_ended(),
    );
}

/// axe-core, from `--axe` (required then) or from where the install
/// command puts it (skipped, with that command, when it is not there).
fn load_axe(given: Option<&Path>, report: &mut Report) -> Option<Audit> {
    let what = "accessibility audits with axe-core";
    match given {
        Some(path) => match Audit::load(path) {
            Ok(audit) => Some(audit),
            Err(why) => {
                report.fail("(setup)", what, why);
                None
            }
        },
        None => {
            let path = accessibility::default_script();
            if path.is_file() {
                Audit::load(&path)
                    .map_err(|why| report.fail("(setup)", what, why))
                    .ok()
            } else {
                report.skip(
                    "(setup)",
                    what,
                    &format!(
                        "axe-core is not installed; install it with `{}`",
                        accessibility::install_command()
                    ),
                );
                None
            }
        }
    }
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
        "timeouts": { "pageLoad": 30_000, "script": 60_000, "implicit": 0 },
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
                axe: None,
                runner: None,
                runner_only: false,
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
        assert_eq!(
            parse("book --axe a/axe.min.js").unwrap().axe,
            Some(PathBuf::from("a/axe.min.js"))
        );
        assert!(parse("book --axe").is_err());
        assert_eq!(
            parse("book --runner target/debug/book-runner")
                .unwrap()
                .runner,
            Some(PathBuf::from("target/debug/book-runner"))
        );
    }
}
