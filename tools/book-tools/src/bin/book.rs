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
    eprintln!("       book figures [listing-NN-MM…] redraws the thread timelines in src/figures/");
    ExitCode::from(2)
}

/// The loom checks build everything with `--cfg loom`, in a target directory of
/// their own so the ordinary build stays cached.
fn loom() -> ExitCode {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let args = [
        "test",
        "-p",
        "awd",
        "--release",
        "--test",
        "loom_completion_source",
        "--target-dir",
        "target/loom",
        "--",
        "--nocapture",
        "--test-threads=1",
    ];
    eprintln!("$ RUSTFLAGS=\"--cfg loom\" cargo {}", args.join(" "));
    let ok = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root)
        .env("RUSTFLAGS", "--cfg loom")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
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
    let dir = root.join("src/figures");
    let mut packages = packages.to_vec();
    if packages.is_empty() {
        packages = book_tools::timeline::figure_packages(&dir);
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
                    Ok(()) => eprintln!("drew {}", path.display()),
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
