//! `cargo chapter N` (an alias in `.cargo/config.toml`): runs every test of one
//! chapter, which are the chapter's prose snippets (skeptic), its checked
//! outputs, and the tests of its listing crates.

use std::path::Path;
use std::process::{Command, ExitCode};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [command, chapter] if command == "chapter" => match chapter.parse::<u32>() {
            Ok(n) => test_chapter(n),
            Err(_) => usage(),
        },
        [command, dir] if command == "check-links" => check_links(Path::new(dir)),
        [command] if command == "loom" => loom(),
        [command, packages @ ..] if command == "figures" => figures(packages),
        _ => usage(),
    }
}

fn usage() -> ExitCode {
    eprintln!("usage: cargo chapter <N>          runs every test of chapter N");
    eprintln!("       cargo loom                 runs the loom model checks (--cfg loom)");
    eprintln!("       book check-links <book/>   checks the built book's internal links");
    eprintln!("       book figures [listing-NN-MM…] draws thread timelines in target/figures/");
    eprintln!("       book figures --into-book   redraws the book's own, in src/figures/");
    ExitCode::from(2)
}

/// The loom checks build everything with `--cfg loom`, in a target directory of
/// their own so the ordinary build stays cached: the support crate's completion
/// source, then Listing 10-2's lock-free one.
fn loom() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let support = ["-p", "awd", "--test", "loom_completion_source"];
    let lock_free = ["-p", "listing-10-02", "--bin", "listing-10-02"];
    for selection in [&support[..], &lock_free[..]] {
        let mut args = vec!["test", "--release", "--target-dir", "target/loom"];
        args.extend_from_slice(selection);
        args.extend_from_slice(&["--", "--nocapture", "--test-threads=1"]);
        eprintln!("$ RUSTFLAGS=\"--cfg loom\" cargo {}", args.join(" "));
        let ok = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .env("RUSTFLAGS", "--cfg loom")
            .args(&args)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            return ExitCode::FAILURE;
        }
    }
    for mutant in LOCK_FREE_MUTANTS {
        if let Err(why) = mutant.is_caught(&root) {
            eprintln!("mutant `{}`: {why}", mutant.name);
            return ExitCode::FAILURE;
        }
        eprintln!("mutant `{}`: caught by loom", mutant.name);
    }
    ExitCode::SUCCESS
}

/// A one-line bug planted in a copy of Listing 10-2, and what loom must say
/// about it: chapter 10 claims each, so `cargo loom` checks each.
struct Mutant {
    name: &'static str,
    /// The copy's package name, its own: copies that shared one would share
    /// one build in `target/loom`, and all but the first would go untested.
    package: &'static str,
    original: &'static str,
    broken: &'static str,
    /// What loom may report: a failed model must say one of these, so that
    /// a mutant that merely fails to compile is not counted as caught.
    caught_by: &'static [&'static str],
}

const LOCK_FREE_MUTANTS: [Mutant; 3] = [
    Mutant {
        name: "the completer's AcqRel weakened to Acquire",
        package: "mutant-weak-completer",
        original: "let before = shared.state.fetch_or(COMPLETE, AcqRel);",
        broken: "let before = shared.state.fetch_or(COMPLETE, Acquire);",
        caught_by: &["Causality violation: Concurrent write accesses"],
    },
    Mutant {
        name: "no second look at COMPLETE after leaving the waker",
        package: "mutant-no-second-look",
        original: "state = shared.state.fetch_or(WAKER_SET, AcqRel);\n                if state & COMPLETE == 0 {",
        broken: "shared.state.fetch_or(WAKER_SET, AcqRel);\n                {",
        caught_by: &["deadlock; threads = "], // the lost wake-up

    },
    Mutant {
        name: "a replaced waker written without clearing WAKER_SET first",
        package: "mutant-unguarded-waker",
        original: "state = shared.state.fetch_and(!WAKER_SET, AcqRel);",
        broken: "state &= !WAKER_SET;",
        caught_by: &["Causality violation: Concurrent read and write accesses"],
    },
];

impl Mutant {
    /// Builds the broken copy as a package of its own under `target/loom`,
    /// runs its loom models, and checks that they fail with `caught_by`.
    fn is_caught(&self, root: &Path) -> Result<(), String> {
        let listing = root.join("listings/ch10-what-the-fixes-cost/listing-10-02");
        let source = std::fs::read_to_string(listing.join("src/main.rs"))
            .map_err(|e| format!("cannot read Listing 10-2: {e}"))?;
        if source.matches(self.original).count() != 1 {
            return Err("Listing 10-2 no longer has the line this mutant breaks".into());
        }
        let dir = root.join("target/loom/mutants").join(self.package);
        let write = |path: &Path, text: &str| {
            std::fs::create_dir_all(path.parent().unwrap_or(&dir))
                .and_then(|()| std::fs::write(path, text))
                .map_err(|e| format!("cannot write {}: {e}", path.display()))
        };
        let awd = root.join("listings/awd");
        write(
            &dir.join("Cargo.toml"),
            &format!(
                "[package]\nname = {:?}\nversion = \"0.0.0\"\nedition = \"2021\"\n\
                 publish = false\n\n[dependencies]\nawd = {{ path = {awd:?} }}\n\
                 tokio = {{ version = \"1.45\", features = [\"full\"] }}\n\n\
                 [target.'cfg(loom)'.dependencies]\n\
                 loom = {{ version = \"0.7\", features = [\"futures\"] }}\n\n[workspace]\n",
                self.package
            ),
        )?;
        write(
            &dir.join("src/main.rs"),
            &source.replace(self.original, self.broken),
        )?;
        if let Ok(lock) = std::fs::read_to_string(root.join("Cargo.lock")) {
            write(&dir.join("Cargo.lock"), &lock)?; // the same versions as the book's
        }
        let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .env("RUSTFLAGS", "--cfg loom")
            .args(["test", "--release", "--target-dir"])
            .arg(root.join("target/loom"))
            .arg("--manifest-path")
            .arg(dir.join("Cargo.toml"))
            .args(["--", "--test-threads=1"])
            .output()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        let said =
            String::from_utf8_lossy(&output.stdout) + String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
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

fn cargo(args: &[String]) -> bool {
    eprintln!("$ cargo {}", args.join(" "));
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

fn test_chapter(n: u32) -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let prefix = format!("ch{n:02}");
    let listing_dirs: Vec<String> = std::fs::read_dir(root.join("listings"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{prefix}-"))
        })
        .flat_map(|chapter| {
            std::fs::read_dir(chapter.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    let mut ok = true;
    // The chapter's prose snippets and checked outputs: tests named after the
    // chapter file, `chNN_…`.
    let harness: Vec<String> = [
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
    .map(String::from)
    .to_vec();
    ok &= cargo(&harness);
    if !listing_dirs.is_empty() {
        let mut listings = vec!["test".to_string()];
        for name in &listing_dirs {
            listings.push("-p".into());
            listings.push(name.clone());
        }
        ok &= cargo(&listings);
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
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

/// Redraws `src/figures/<package>.svg` from a fresh run of each listing
/// named, or of every listing that already has a figure.
fn figures(packages: &[String]) -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let into_book = packages.iter().any(|p| p == "--into-book");
    let dir = book_tools::timeline::figures_dir(&root, into_book);
    let mut packages: Vec<String> = packages
        .iter()
        .filter(|p| *p != "--into-book")
        .cloned()
        .collect();
    if packages.is_empty() {
        packages = book_tools::timeline::figure_packages(&root.join("src/figures"));
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut ok = true;
    for package in &packages {
        match book_tools::timeline::draw_from_a_fresh_run(
            Path::new(&cargo),
            &root,
            package,
            std::time::Duration::from_secs(300),
        ) {
            Ok(svg) => {
                let path = dir.join(format!("{package}.svg"));
                let _ = std::fs::create_dir_all(&dir);
                match std::fs::write(&path, svg) {
                    Ok(()) => eprintln!(
                        "drew {}",
                        path.strip_prefix(&root).unwrap_or(&path).display()
                    ),
                    Err(e) => {
                        eprintln!("cannot write {}: {e}", path.display());
                        ok = false;
                    }
                }
            }
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
