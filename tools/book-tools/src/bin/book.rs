//! `book`: the repository's tasks, in one documented command, in the manner of
//! an `xtask`. `cargo test-book`, `cargo chapter N` and `cargo loom` are
//! aliases for three of them (`.cargo/config.toml`); the others run as
//! `cargo run -p book-tools --bin book -- <task>`. `book help` lists them and
//! `book <task> --help` explains one.
//!
//! Every task finds the repository through `book_tools::repo`, and every
//! program it starts that could hang runs through
//! `book_tools::process::run_bounded`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use book_tools::{process, repo};

/// The tasks.
#[derive(Debug, PartialEq, Eq)]
enum Task {
    /// Runs every test of the workspace, several test binaries at once
    /// (`book_tools::all_tests`), passing these arguments to each.
    Test(Vec<String>),
    /// Runs every test of chapter N: its prose blocks and checked outputs
    /// (the harness's tests named `chNN_…`) and its listing crates' tests.
    Chapter(u32),
    /// Runs the loom model checks (`--cfg loom`, in `target/loom`): the
    /// support crate's completion source, Listing 10-2's lock-free one, and
    /// the bugs `mutants.json` plants in copies of Listing 10-2, each of which
    /// loom must catch with the report the file names.
    Loom,
    /// Checks every internal link and `#anchor` of the built book in DIR.
    CheckLinks(PathBuf),
    /// Draws the thread timelines of the listings named (or of every listing
    /// with a figure) from fresh runs, into `target/figures/`; with
    /// `--into-book`, into the book's own `src/figures/`.
    Figures {
        into_book: bool,
        packages: Vec<String>,
    },
    /// Checks that every listing writes the workspace's versions of tokio,
    /// futures and loom; with `--write`, rewrites the listings to agree.
    Versions { write: bool },
    /// Builds the local runner (`tools/book-runner`) and starts it, with
    /// `mdbook serve` beside it, passing it these arguments.
    Runner(Vec<String>),
    /// Lists the tasks.
    Help,
    /// Explains one task (`book <task> --help`).
    HelpOn(String),
}

/// One line per task, for `book help`, and the details for `--help`.
const TASKS: &[(&str, &str, &str)] = &[
    (
        "test",
        "test [-- <args>]       every test, binaries side by side (alias: cargo test-book)",
        "Builds every test binary (cargo test --workspace --no-run) and runs them as cargo \
         test would (in the package's directory, with its environment), but several at \
         once: BOOK_TEST_BINARIES=N of them (default: twice the CPUs, at most 8), the \
         slowest first by the previous run's times. Each binary's output is printed whole \
         when it ends, a failed one's again at the end; then the doc tests run (cargo test \
         --workspace --doc). The last line sums libtest's results: `N passed, N failed` \
         (then `N skipped` for checks this machine cannot run, and `N ignored`); the \
         status is non-zero when a test failed or a binary could not run or finish. \
         Arguments after `--` go to every binary and to the doc tests, as with cargo test \
         (`cargo test-book -- ch03`). The same tests as `cargo test --workspace`, which \
         runs one binary after another.",
    ),
    (
        "chapter",
        "chapter <N>            every test of chapter N (alias: cargo chapter N)",
        "Runs chapter N's prose blocks and checked outputs (the harness's tests named \
         chNN_…) and the tests of its listing crates (listings/chNN-*/*).",
    ),
    (
        "loom",
        "loom                   the loom model checks (alias: cargo loom)",
        "Builds with RUSTFLAGS=\"--cfg loom\" in target/loom (the first run builds for \
         about a minute) and runs the support crate's loom models, Listing 10-2's, and \
         each bug listings/ch10-…/listing-10-02/mutants.json plants in a copy of \
         Listing 10-2: loom must report each with the words the file gives.",
    ),
    (
        "check-links",
        "check-links <book/>    every internal link and #anchor of the built book",
        "Reads every HTML page under the directory mdbook build wrote (book/) and checks \
         that every internal link leads to a page and every #anchor to an id on it.",
    ),
    (
        "figures",
        "figures [--into-book] [listing-NN-MM…]  thread timelines from fresh runs",
        "Runs each listing with AWD_TIMELINE set and draws its thread timeline. By \
         default the figures go to target/figures/ and nothing tracked changes; \
         --into-book redraws the book's own src/figures/ (a maintainer's step, after a \
         listing's story changed). With no listing named, every listing that has a \
         figure in src/figures/ is drawn.",
    ),
    (
        "runner",
        "runner [--open] [--no-book] [--port N]…  the book with Run on every block",
        "Builds tools/book-runner and starts it: the local server behind the book's Run \
         buttons, loopback only, with a secret made at each start, and `mdbook serve` \
         beside it (unless --no-book). --open opens the book in the browser with Run \
         enabled; --port and --book-port choose the two ports. The same as the README's \
         `cargo run -p book-runner -- --open`.",
    ),
    (
        "versions",
        "versions [--write]     listings' tokio, futures and loom = the workspace's",
        "Compares the version of tokio, futures and loom in every listing's Cargo.toml \
         (and the support crate's) with [workspace.dependencies] in the root Cargo.toml. \
         --write rewrites the listings to agree: bumping tokio is changing the root's \
         line and running `book versions --write` (MAINTAINING.md).",
    ),
];

fn parse(args: &[String]) -> Result<Task, String> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    if let [name, rest @ ..] = words.as_slice() {
        if rest.contains(&"--help") || rest.contains(&"-h") {
            let details = TASKS
                .iter()
                .find(|(task, _, _)| task == name)
                .ok_or_else(|| format!("no task `{name}`"))?;
            return Ok(Task::HelpOn(format!("book {}\n\n{}", details.1, details.2)));
        }
    }
    match words.as_slice() {
        ["chapter", n] => n
            .parse()
            .map(Task::Chapter)
            .map_err(|_| format!("`{n}` is not a chapter number")),
        ["test", rest @ ..] => {
            let rest = match rest {
                ["--", after @ ..] => after,
                _ => rest,
            };
            Ok(Task::Test(rest.iter().map(|a| a.to_string()).collect()))
        }
        ["loom"] => Ok(Task::Loom),
        ["check-links", dir] => Ok(Task::CheckLinks(PathBuf::from(dir))),
        ["figures", rest @ ..] => Ok(Task::Figures {
            into_book: rest.contains(&"--into-book"),
            packages: rest
                .iter()
                .filter(|p| **p != "--into-book")
                .map(|p| p.to_string())
                .collect(),
        }),
        ["runner", rest @ ..] => Ok(Task::Runner(rest.iter().map(|a| a.to_string()).collect())),
        ["versions"] => Ok(Task::Versions { write: false }),
        ["versions", "--write"] => Ok(Task::Versions { write: true }),
        [] | ["help"] | ["--help"] | ["-h"] => Ok(Task::Help),
        _ => Err(format!("unknown task or arguments: {}", words.join(" "))),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = repo::root();
    match parse(&args) {
        Ok(Task::Chapter(n)) => test_chapter(&root, n),
        Ok(Task::Test(args)) => {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            if book_tools::all_tests::run_all(Path::new(&cargo), &root, &args) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Task::Loom) => loom(&root),
        Ok(Task::CheckLinks(dir)) => check_links(&dir),
        Ok(Task::Figures {
            into_book,
            packages,
        }) => figures(&root, into_book, packages),
        Ok(Task::Versions { write }) => versions(&root, write),
        Ok(Task::Runner(arguments)) => {
            let mut args = vec![
                "run".to_string(),
                "-p".into(),
                "book-runner".into(),
                "--".into(),
            ];
            args.extend(arguments);
            if run_cargo(&root, &args) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(Task::Help) => {
            println!("usage: book <task> [arguments]   (book <task> --help explains one)\n");
            for (_, line, _) in TASKS {
                println!("  book {line}");
            }
            ExitCode::SUCCESS
        }
        Ok(Task::HelpOn(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{message}\n(book help lists the tasks)");
            ExitCode::from(2)
        }
    }
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Runs cargo with `args` in the repository, its output going to the
/// terminal; true when it succeeded. (Test runs bound themselves: every test
/// starts with a time limit.)
fn run_cargo(root: &Path, args: &[String]) -> bool {
    eprintln!("$ cargo {}", args.join(" "));
    cargo()
        .current_dir(root)
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

fn test_chapter(root: &Path, n: u32) -> ExitCode {
    let prefix = format!("ch{n:02}");
    let mut ok = run_cargo(
        root,
        &[
            "test",
            "-p",
            "await-without-deadlock",
            "--test",
            "snippets",
            "--test",
            "outputs",
            "--",
            &format!("{prefix}_"),
        ]
        .map(String::from),
    );
    let listings: Vec<String> = repo::listing_crates(root)
        .into_iter()
        .filter(|listing| listing.chapter == n)
        .flat_map(|listing| ["-p".to_string(), listing.package])
        .collect();
    if !listings.is_empty() {
        let mut args = vec!["test".to_string()];
        args.extend(listings);
        ok &= run_cargo(root, &args);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The loom checks build everything with `--cfg loom`, in a target directory of
/// their own so the ordinary build stays cached: the support crate's completion
/// source, then Listing 10-2's lock-free one, then the planted bugs.
fn loom(root: &Path) -> ExitCode {
    let support = ["-p", "awd", "--test", "loom_completion_source"];
    let lock_free = ["-p", "listing-10-02", "--bin", "listing-10-02"];
    for selection in [&support[..], &lock_free[..]] {
        let mut args = vec!["test", "--release", "--target-dir", "target/loom"];
        args.extend_from_slice(selection);
        args.extend_from_slice(&["--", "--nocapture", "--test-threads=1"]);
        eprintln!("$ RUSTFLAGS=\"--cfg loom\" cargo {}", args.join(" "));
        let ok = cargo()
            .current_dir(root)
            .env("RUSTFLAGS", "--cfg loom")
            .args(&args)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return ExitCode::FAILURE;
        }
    }
    let listing = root.join(MUTATED_LISTING);
    let mutants = match Mutant::all(&listing) {
        Ok(mutants) => mutants,
        Err(why) => {
            eprintln!("{why}");
            return ExitCode::FAILURE;
        }
    };
    for mutant in mutants {
        if let Err(why) = mutant.is_caught(root, &listing) {
            eprintln!("mutant `{}`: {why}", mutant.name);
            return ExitCode::FAILURE;
        }
        eprintln!("mutant `{}`: caught by loom", mutant.name);
    }
    ExitCode::SUCCESS
}

/// The listing whose `mutants.json` plants bugs for `cargo loom`.
const MUTATED_LISTING: &str = "listings/ch10-what-the-fixes-cost/listing-10-02";

/// A one-line bug planted in a copy of Listing 10-2, and what loom must say
/// about it (read from the listing's `mutants.json`).
struct Mutant {
    name: String,
    /// The copy's package name, its own: copies that shared one would share
    /// one build in `target/loom`, and all but the first would go untested.
    package: String,
    original: String,
    broken: String,
    /// What loom may report: a failed model must say one of these, so that
    /// a mutant that merely fails to compile is not counted as caught.
    caught_by: Vec<String>,
}

impl Mutant {
    fn all(listing: &Path) -> Result<Vec<Mutant>, String> {
        let path = listing.join("mutants.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let field = |m: &serde_json::Value, key: &str| -> Result<String, String> {
            m[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{}: a mutant without `{key}`", path.display()))
        };
        json["mutants"]
            .as_array()
            .ok_or_else(|| format!("{}: no `mutants` list", path.display()))?
            .iter()
            .map(|m| {
                Ok(Mutant {
                    name: field(m, "name")?,
                    package: field(m, "package")?,
                    original: field(m, "original")?,
                    broken: field(m, "broken")?,
                    caught_by: m["caught_by"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.as_str().map(str::to_string))
                        .collect(),
                })
            })
            .collect()
    }

    /// Builds the broken copy as a package of its own under `target/loom`,
    /// from the listing's own manifest, runs its loom models, and checks that
    /// they fail with `caught_by`.
    fn is_caught(&self, root: &Path, listing: &Path) -> Result<(), String> {
        let read = |file: &str| {
            std::fs::read_to_string(listing.join(file))
                .map_err(|e| format!("cannot read {file} of Listing 10-2: {e}"))
        };
        let source = read("src/main.rs")?;
        if source.matches(&self.original).count() != 1 {
            return Err(format!(
                "Listing 10-2 no longer has the line this mutant breaks; edit \
                 {MUTATED_LISTING}/mutants.json"
            ));
        }
        let manifest = read("Cargo.toml")?;
        let awd = root.join("listings/awd");
        let manifest = manifest
            // The package and its program both take the mutant's name.
            .replace(
                "name = \"listing-10-02\"",
                &format!("name = {:?}", self.package),
            )
            .replace(
                "path = \"../../awd\"",
                &format!("path = {:?}", awd.display().to_string()),
            )
            // Only the program: the listing's benchmark is not copied.
            .split("\n[[bench]]")
            .next()
            .unwrap_or_default()
            .to_string()
            + "\n[workspace]\n";
        let dir = root.join("target/loom/mutants").join(&self.package);
        let write = |path: &Path, text: &str| {
            std::fs::create_dir_all(path.parent().unwrap_or(&dir))
                .and_then(|()| std::fs::write(path, text))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        write(&dir.join("Cargo.toml"), &manifest)?;
        write(
            &dir.join("src/main.rs"),
            &source.replace(&self.original, &self.broken),
        )?;
        if let Ok(lock) = std::fs::read_to_string(root.join("Cargo.lock")) {
            write(&dir.join("Cargo.lock"), &lock)?; // the same versions as the book's
        }
        let mut command = cargo();
        command
            .env("RUSTFLAGS", "--cfg loom")
            .args(["test", "--release", "--bin", &self.package, "--target-dir"])
            .arg(root.join("target/loom"))
            .arg("--manifest-path")
            .arg(dir.join("Cargo.toml"))
            .args(["--", "--test-threads=1"]);
        let done = process::run_bounded(&mut command, Duration::from_secs(900))?;
        let said = done.stdout + &done.stderr;
        if done.status.success() {
            Err("its loom models passed: the bug went unnoticed".into())
        } else if !self.caught_by.iter().any(|report| said.contains(report)) {
            Err(format!(
                "the models failed, but not with {:?}:\n{said}",
                self.caught_by
            ))
        } else {
            Ok(())
        }
    }
}

fn check_links(dir: &Path) -> ExitCode {
    let report = book_tools::links::check(dir);
    println!(
        "checked {} internal links on {} pages ({} external links not followed)",
        report.links, report.pages, report.external
    );
    if report.pages == 0 {
        eprintln!(
            "no HTML pages under {}: build the book first",
            dir.display()
        );
        return ExitCode::FAILURE;
    }
    for broken in &report.broken {
        eprintln!("broken link: {broken}");
    }
    if report.broken.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Draws the thread timelines of `packages` (or of every listing with a
/// figure) from fresh runs, into `target/figures/` or, with `into_book`, into
/// `src/figures/`.
fn figures(root: &Path, into_book: bool, mut packages: Vec<String>) -> ExitCode {
    let dir = book_tools::timeline::figures_dir(root, into_book);
    if packages.is_empty() {
        packages = repo::figures(root);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut ok = true;
    for package in &packages {
        let drawn = book_tools::timeline::draw_from_a_fresh_run(
            Path::new(&cargo),
            root,
            package,
            Duration::from_secs(300),
        )
        .and_then(|svg| {
            let path = dir.join(format!("{package}.svg"));
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(&path, svg))
                .map(|()| path.clone())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        });
        match drawn {
            Ok(path) => eprintln!(
                "drew {}",
                path.strip_prefix(root).unwrap_or(&path).display()
            ),
            Err(why) => {
                eprintln!("{why}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn versions(root: &Path, write: bool) -> ExitCode {
    let result = if write {
        book_tools::versions::write(root).map(|changed| {
            for manifest in &changed {
                eprintln!("rewrote {manifest}");
            }
            Vec::new()
        })
    } else {
        book_tools::versions::check(root)
    };
    match result {
        Ok(differ) if differ.is_empty() => {
            eprintln!("every listing writes the workspace's tokio, futures and loom versions");
            ExitCode::SUCCESS
        }
        Ok(differ) => {
            for line in differ {
                eprintln!("{line}");
            }
            eprintln!("run `cargo run -p book-tools --bin book -- versions --write`");
            ExitCode::FAILURE
        }
        Err(why) => {
            eprintln!("{why}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn every_task_parses_and_has_help() {
        let _limit = TestLimit::seconds(5);
        assert_eq!(parse(&args(&["chapter", "3"])), Ok(Task::Chapter(3)));
        assert_eq!(parse(&args(&["loom"])), Ok(Task::Loom));
        assert_eq!(parse(&args(&["test"])), Ok(Task::Test(vec![])));
        assert_eq!(
            parse(&args(&["test", "--", "ch03", "--exact"])),
            Ok(Task::Test(args(&["ch03", "--exact"])))
        );
        assert_eq!(
            parse(&args(&["figures", "--into-book", "listing-04-01"])),
            Ok(Task::Figures {
                into_book: true,
                packages: args(&["listing-04-01"])
            })
        );
        assert_eq!(
            parse(&args(&["versions", "--write"])),
            Ok(Task::Versions { write: true })
        );
        assert_eq!(
            parse(&args(&["runner", "--open"])),
            Ok(Task::Runner(args(&["--open"])))
        );
        assert_eq!(parse(&args(&[])), Ok(Task::Help));
        assert!(parse(&args(&["chapter", "x"])).is_err());
        for (task, _, details) in TASKS {
            let Ok(Task::HelpOn(help)) = parse(&args(&[task, "--help"])) else {
                panic!("{task} --help");
            };
            assert!(help.contains(details), "{task}: {help}");
        }
    }
}
