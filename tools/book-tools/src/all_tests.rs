//! Every test of the workspace, several test binaries at once: what
//! `cargo test --workspace` runs, in the same binaries, with the same working
//! directory and environment, but side by side instead of one after another.
//!
//! cargo builds every test binary (`cargo test --workspace --no-run`) and
//! names each in its JSON messages; this runs them at most [`jobs`] at a time,
//! the slowest first by the times the previous run left in the target
//! directory, each bounded in time by [`crate::process::run_bounded_merged`].
//! A binary's output is printed whole when it finishes, a failed one's again
//! at the end; then the doc tests run (`cargo test --workspace --doc`). The
//! counts are summed from libtest's own `test result:` lines.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::process;

/// The variable that sets how many test binaries run at once. (The harness's
/// `BOOK_TEST_JOBS` sets how many checks its `snippets` and `outputs`
/// binaries run at once, inside each.)
pub const JOBS_VARIABLE: &str = "BOOK_TEST_BINARIES";

/// How long one test binary may run. Every test bounds itself far tighter (a
/// `TestLimit`); this only keeps a binary that never ends from hanging the
/// run. The stored outputs' binary builds the listings it runs, so on a cold
/// machine it is the longest.
pub const BINARY_LIMIT: Duration = Duration::from_secs(30 * 60);

/// How long building every test binary, or the doc tests, may take.
pub const BUILD_LIMIT: Duration = Duration::from_secs(60 * 60);

/// How many test binaries run at once: [`JOBS_VARIABLE`], else twice the
/// CPUs, at most 8 (most binaries mostly wait: watchdogs, timers, child
/// processes).
pub fn jobs() -> usize {
    std::env::var(JOBS_VARIABLE)
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| {
            let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
            (2 * cpus).min(8)
        })
}

/// One test binary cargo built, and what `cargo test` would give it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binary {
    /// Its package's name.
    pub package: String,
    /// Its target's kind and name, as cargo names them (`lib awd`,
    /// `test snippets`, `bin listing-03-01`).
    pub target: String,
    /// The program.
    pub executable: PathBuf,
    /// Its package's directory: its working directory.
    pub manifest_dir: PathBuf,
    /// The environment `cargo test` adds for it.
    pub env: Vec<(String, String)>,
}

/// What libtest's `test result:` lines of one run said, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub ignored: usize,
    /// Tests libtest counts as passed that said, past its capture, that this
    /// machine cannot run them (the harness's `skipped: <test>: <why>`).
    pub skipped: usize,
    /// How many `test result:` lines there were.
    pub results: usize,
}

impl Counts {
    /// Sums the `test result:` lines and the harness's skip lines of `text`.
    pub fn of(text: &str) -> Counts {
        let mut counts = Counts::default();
        for line in text.lines() {
            if line.starts_with("skipped: ") {
                counts.skipped += 1;
            }
            let Some(rest) = line.strip_prefix("test result: ") else {
                continue;
            };
            counts.results += 1;
            for part in rest.split(';') {
                let words: Vec<&str> = part.split_whitespace().collect();
                let number = |at: usize| words.get(at).and_then(|n| n.parse::<usize>().ok());
                // "ok. 3 passed" / "FAILED. 3 passed" / " 1 failed" / …
                let (count, word) = match words.as_slice() {
                    [_, _, _] => (number(1), words[2]),
                    [_, _] => (number(0), words[1]),
                    _ => continue,
                };
                let count = count.unwrap_or(0);
                match word {
                    "passed" => counts.passed += count,
                    "failed" => counts.failed += count,
                    "ignored" => counts.ignored += count,
                    _ => {}
                }
            }
        }
        counts
    }

    fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
        self.skipped += other.skipped;
        self.results += other.results;
    }

    /// The summary line: `N passed, N failed`, then `, N skipped` and
    /// `, N ignored` when there are any. Skipped tests are not counted as
    /// passed.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} passed, {} failed",
            self.passed.saturating_sub(self.skipped),
            self.failed
        );
        if self.skipped > 0 {
            line += &format!(", {} skipped", self.skipped);
        }
        if self.ignored > 0 {
            line += &format!(", {} ignored", self.ignored);
        }
        line
    }
}

/// What `cargo metadata` says of one package, for its `CARGO_PKG_*`.
fn package_env(package: &Value) -> Vec<(String, String)> {
    let text = |key: &str| package[key].as_str().unwrap_or_default().to_string();
    let version = text("version");
    let (core, pre) = version.split_once('-').unwrap_or((&version, ""));
    let mut parts = core.split('.').map(str::to_string);
    let authors: Vec<&str> = package["authors"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let manifest = PathBuf::from(text("manifest_path"));
    let dir = manifest.parent().unwrap_or(Path::new("")).to_path_buf();
    let mut env = vec![
        ("CARGO_MANIFEST_DIR", dir.display().to_string()),
        ("CARGO_MANIFEST_PATH", manifest.display().to_string()),
        ("CARGO_PKG_NAME", text("name")),
        ("CARGO_PKG_VERSION", version.clone()),
        ("CARGO_PKG_VERSION_MAJOR", parts.next().unwrap_or_default()),
        ("CARGO_PKG_VERSION_MINOR", parts.next().unwrap_or_default()),
        ("CARGO_PKG_VERSION_PATCH", parts.next().unwrap_or_default()),
        ("CARGO_PKG_VERSION_PRE", pre.to_string()),
        ("CARGO_PKG_AUTHORS", authors.join(":")),
        ("CARGO_PKG_DESCRIPTION", text("description")),
        ("CARGO_PKG_HOMEPAGE", text("homepage")),
        ("CARGO_PKG_REPOSITORY", text("repository")),
        ("CARGO_PKG_LICENSE", text("license")),
        ("CARGO_PKG_LICENSE_FILE", text("license_file")),
        ("CARGO_PKG_RUST_VERSION", text("rust_version")),
        ("CARGO_PKG_README", text("readme")),
    ];
    env.sort();
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// The workspace's packages (`cargo metadata --no-deps`), by id, and its
/// target directory.
fn metadata(cargo: &Path, root: &Path) -> Result<(HashMap<String, Value>, PathBuf), String> {
    let mut command = Command::new(cargo);
    command
        .current_dir(root)
        .args(["metadata", "--no-deps", "--format-version", "1"]);
    let done = process::run_bounded(&mut command, Duration::from_secs(120))?;
    if !done.status.success() {
        return Err(format!("cargo metadata failed:\n{}", done.stderr));
    }
    let json: Value =
        serde_json::from_str(&done.stdout).map_err(|e| format!("cargo metadata: {e}"))?;
    let packages = json["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?.to_string(), p.clone())))
        .collect();
    let target = PathBuf::from(json["target_directory"].as_str().unwrap_or("target"));
    Ok((packages, target))
}

/// The test binaries named in cargo's JSON messages (`messages`, one per
/// line), each with the environment `cargo test` gives it: its package's
/// `CARGO_PKG_*` and manifest paths (`packages`, from `cargo metadata`), its
/// build script's `OUT_DIR` and `cargo:rustc-env` values, and the library
/// path with the build scripts' native directories inside `target`.
pub fn binaries(
    messages: &[Value],
    packages: &HashMap<String, Value>,
    target: &Path,
) -> Vec<Binary> {
    let mut scripts: HashMap<&str, &Value> = HashMap::new();
    let mut native = Vec::new();
    for message in messages {
        if message["reason"] == "build-script-executed" {
            if let Some(id) = message["package_id"].as_str() {
                scripts.insert(id, message);
            }
            for path in message["linked_paths"].as_array().into_iter().flatten() {
                let path = path.as_str().unwrap_or_default();
                let path = path.split_once('=').map_or(path, |(_, p)| p);
                if Path::new(path).starts_with(target) && !native.contains(&path.to_string()) {
                    native.push(path.to_string());
                }
            }
        }
    }
    let profile_dir = target.join("debug");
    let mut library_path: Vec<String> = native;
    library_path.push(profile_dir.display().to_string());
    library_path.push(profile_dir.join("deps").display().to_string());
    if let Ok(inherited) = std::env::var("LD_LIBRARY_PATH") {
        library_path.extend(inherited.split(':').map(str::to_string));
    }
    let library_path = library_path.join(":");
    messages
        .iter()
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| {
            let executable = PathBuf::from(m["executable"].as_str()?);
            let id = m["package_id"].as_str()?;
            let package = packages.get(id)?;
            let mut env = package_env(package);
            if let Some(script) = scripts.get(id) {
                if let Some(out) = script["out_dir"].as_str() {
                    env.push(("OUT_DIR".into(), out.into()));
                }
                for pair in script["env"].as_array().into_iter().flatten() {
                    if let (Some(k), Some(v)) = (pair[0].as_str(), pair[1].as_str()) {
                        env.push((k.into(), v.into()));
                    }
                }
            }
            env.push(("LD_LIBRARY_PATH".into(), library_path.clone()));
            let kind = m["target"]["kind"][0].as_str().unwrap_or("?");
            let name = m["target"]["name"].as_str().unwrap_or("?");
            Some(Binary {
                package: package["name"].as_str().unwrap_or("?").to_string(),
                target: format!("{kind} {name}"),
                manifest_dir: PathBuf::from(package["manifest_path"].as_str()?)
                    .parent()?
                    .to_path_buf(),
                executable,
                env,
            })
        })
        .collect()
}

/// Builds every test binary with `cargo test --workspace --no-run`, its
/// progress and diagnostics on standard error, and returns cargo's JSON
/// messages.
fn build(cargo: &Path, root: &Path) -> Result<Vec<Value>, String> {
    eprintln!("$ cargo test --workspace --no-run --message-format=json");
    let mut child = Command::new(cargo)
        .current_dir(root)
        .args(["test", "--workspace", "--no-run", "--message-format=json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    // Bounded like every program the tools start: past the limit, the
    // build's process group is killed, which ends the reading below.
    let done = Arc::new(AtomicBool::new(false));
    let id = child.id();
    let watch = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let deadline = Instant::now() + BUILD_LIMIT;
            while !done.load(Ordering::Relaxed) {
                if Instant::now() > deadline {
                    process::kill_group(id);
                    return true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            false
        })
    };
    let mut messages = Vec::new();
    let stdout = child.stdout.take().expect("piped");
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if let Some(rendered) = message["message"]["rendered"].as_str() {
            eprint!("{rendered}");
        }
        messages.push(message);
    }
    let status = child.wait().map_err(|e| format!("cargo: {e}"))?;
    done.store(true, Ordering::Relaxed);
    if watch.join().unwrap_or(false) {
        return Err(format!(
            "the build was still running after {BUILD_LIMIT:?}: stopped"
        ));
    }
    let finished = messages
        .iter()
        .any(|m| m["reason"] == "build-finished" && m["success"] == true);
    if status.success() && finished {
        Ok(messages)
    } else {
        Err(format!("the build failed ({status}): no test ran"))
    }
}

/// How one binary's run ended.
struct Run {
    binary: Binary,
    took: Duration,
    /// Its output, or why it could not run or finish.
    text: String,
    /// It exited successfully.
    ok: bool,
    counts: Counts,
}

/// The file where a run leaves how long each binary took, for the next run
/// to start the slowest first.
fn times_file(target: &Path) -> PathBuf {
    target.join("debug").join("book-test-times.tsv")
}

fn read_times(target: &Path) -> HashMap<String, f64> {
    std::fs::read_to_string(times_file(target))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let (secs, exe) = line.split_once('\t')?;
            Some((exe.to_string(), secs.parse().ok()?))
        })
        .collect()
}

fn write_times(target: &Path, runs: &[Run]) {
    let text: String = runs
        .iter()
        .map(|run| {
            format!(
                "{:.3}\t{}\n",
                run.took.as_secs_f64(),
                run.binary.executable.display()
            )
        })
        .collect();
    let _ = std::fs::write(times_file(target), text);
}

/// Runs one binary as `cargo test` would: in its package's directory, with
/// its environment and `cargo`'s path as `CARGO`, passing it `args`.
fn run_one(binary: Binary, cargo: &Path, args: &[String]) -> Run {
    let started = Instant::now();
    let mut command = Command::new(&binary.executable);
    command
        .current_dir(&binary.manifest_dir)
        .args(args)
        .env("CARGO", cargo)
        .env_remove("OUT_DIR")
        .envs(binary.env.iter().map(|(k, v)| (k, v)));
    let (ok, text) = match process::run_bounded_merged(&mut command, BINARY_LIMIT) {
        Ok((status, text)) => {
            let ok = status.success();
            let text = if ok {
                text
            } else {
                format!("{text}\n{} ended with {status}\n", binary.target)
            };
            (ok, text)
        }
        Err(why) => (false, format!("could not run: {why}\n")),
    };
    Run {
        counts: Counts::of(&text),
        binary,
        took: started.elapsed(),
        text,
        ok,
    }
}

fn header(run: &Run, root: &Path) -> String {
    let exe = &run.binary.executable;
    format!(
        "     Running {} {} ({}) in {:.1} s",
        run.binary.package,
        run.binary.target,
        exe.strip_prefix(root).unwrap_or(exe).display(),
        run.took.as_secs_f64()
    )
}

/// Builds and runs every test of the workspace, passing `args` to every test
/// binary and to the doc tests; true when every test passed and every binary
/// ran to a successful end.
pub fn run_all(cargo: &Path, root: &Path, args: &[String]) -> bool {
    let started = Instant::now();
    let prepared = metadata(cargo, root).and_then(|(packages, target)| {
        let messages = build(cargo, root)?;
        Ok((binaries(&messages, &packages, &target), target))
    });
    let (mut queue, target) = match prepared {
        Ok(found) => found,
        Err(why) => {
            eprintln!("{why}");
            return false;
        }
    };
    if queue.is_empty() {
        eprintln!("cargo named no test binary");
        return false;
    }
    // Slowest last in the queue, which is taken from its end; binaries with
    // no recorded time (new ones) first of all.
    let times = read_times(&target);
    let time = |b: &Binary| {
        times
            .get(&b.executable.display().to_string())
            .copied()
            .unwrap_or(f64::INFINITY)
    };
    queue.sort_by(|a, b| time(a).total_cmp(&time(b)));
    let jobs = jobs().min(queue.len());
    eprintln!(
        "running {} test binaries, {jobs} at a time ({JOBS_VARIABLE}=N sets it)",
        queue.len()
    );
    let queue = Mutex::new(queue);
    let finished = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                let Some(binary) = queue.lock().unwrap().pop() else {
                    return;
                };
                let run = run_one(binary, cargo, args);
                let mut finished = finished.lock().unwrap();
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{}\n{}", header(&run, root), run.text);
                finished.push(run);
            });
        }
    });
    let runs = finished.into_inner().unwrap();
    write_times(&target, &runs);
    let binaries_took = started.elapsed();

    let mut doc_args: Vec<String> = ["test", "--workspace", "--doc"].map(String::from).into();
    if !args.is_empty() {
        doc_args.push("--".into());
        doc_args.extend(args.iter().cloned());
    }
    eprintln!("$ cargo {}", doc_args.join(" "));
    let doc = process::run_bounded_merged(
        Command::new(cargo).current_dir(root).args(&doc_args),
        BUILD_LIMIT,
    );
    let (doc_ok, doc_text) = match doc {
        Ok((status, text)) => (status.success(), text),
        Err(why) => (false, format!("could not run the doc tests: {why}\n")),
    };
    println!("{doc_text}");

    let mut total = Counts::of(&doc_text);
    let mut ok = doc_ok;
    let mut failed = Vec::new();
    for run in &runs {
        total.add(run.counts);
        if !run.ok || run.counts.failed > 0 || run.counts.results == 0 {
            ok = false;
            failed.push(run);
        }
    }
    if !failed.is_empty() || !doc_ok {
        println!("\n==== failed ====");
        for run in &failed {
            println!("{}\n{}", header(run, root), run.text);
        }
        if !doc_ok {
            println!("the doc tests failed (above)");
        }
        // A binary that ended badly without a failed test (killed, stopped
        // at its limit, crashed) counts as one failure.
        total.failed += failed.iter().filter(|run| run.counts.failed == 0).count();
        if !doc_ok && Counts::of(&doc_text).failed == 0 {
            total.failed += 1;
        }
    }
    eprintln!(
        "{} test binaries in {:.1} s, {jobs} at a time; doc tests; {:.1} s in all",
        runs.len(),
        binaries_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!("{}", total.summary());
    ok && total.failed == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;
    use serde_json::json;

    #[test]
    fn libtest_result_lines_and_skips_are_summed() {
        let _limit = TestLimit::seconds(5);
        let text = "running 3 tests\n\
            skipped: ch13_a: io_uring is unavailable here\n\
            test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s\n\
            test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 4 filtered out; finished in 1.20s\n";
        let counts = Counts::of(text);
        assert_eq!(
            counts,
            Counts {
                passed: 5,
                failed: 1,
                ignored: 1,
                skipped: 1,
                results: 2
            }
        );
        assert_eq!(counts.summary(), "4 passed, 1 failed, 1 skipped, 1 ignored");
        assert_eq!(Counts::default().summary(), "0 passed, 0 failed");
    }

    #[test]
    fn a_test_binary_gets_what_cargo_test_gives_it() {
        let _limit = TestLimit::seconds(5);
        let target = Path::new("/w/target");
        let id = "path+file:///w/a#0.2.1";
        let packages = HashMap::from([(
            id.to_string(),
            json!({"id": id, "name": "a", "version": "0.2.1", "authors": [],
                   "manifest_path": "/w/a/Cargo.toml"}),
        )]);
        let messages = [
            json!({"reason": "build-script-executed", "package_id": id,
                   "out_dir": "/w/target/debug/build/a-1/out",
                   "env": [["FROM_SCRIPT", "1"]],
                   "linked_paths": ["native=/w/target/debug/build/a-1/out", "/usr/lib"]}),
            json!({"reason": "compiler-artifact", "package_id": id,
                   "profile": {"test": true}, "executable": "/w/target/debug/deps/a-9",
                   "target": {"kind": ["lib"], "name": "a"}}),
            // Built, not a test: `cargo test` does not run it.
            json!({"reason": "compiler-artifact", "package_id": id,
                   "profile": {"test": false}, "executable": "/w/target/debug/a",
                   "target": {"kind": ["bin"], "name": "a"}}),
        ];
        let found = binaries(&messages, &packages, target);
        assert_eq!(found.len(), 1);
        let binary = &found[0];
        assert_eq!(binary.target, "lib a");
        assert_eq!(binary.manifest_dir, Path::new("/w/a"));
        let env: HashMap<&str, &str> = binary
            .env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(env["CARGO_MANIFEST_DIR"], "/w/a");
        assert_eq!(env["CARGO_PKG_NAME"], "a");
        assert_eq!(env["CARGO_PKG_VERSION_MINOR"], "2");
        assert_eq!(env["OUT_DIR"], "/w/target/debug/build/a-1/out");
        assert_eq!(env["FROM_SCRIPT"], "1");
        assert!(env["LD_LIBRARY_PATH"]
            .starts_with("/w/target/debug/build/a-1/out:/w/target/debug:/w/target/debug/deps"));
    }
}
