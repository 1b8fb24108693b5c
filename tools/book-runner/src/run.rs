//! One run, from the lines a reader sent to the verdict: wait for a build
//! slot, rebuild the listing around the reader's lines (or build the
//! workspace's own listing when the lines are the book's), run the program
//! under its limits, and report every step as an [`Event`] as it happens.
//!
//! An unedited block is built as `cargo run -p <package>` would build it, in
//! the workspace with its target directory, so a listing the tests already
//! built starts at once. An edited block is written into a scratch copy of
//! its listing crate in the slot's directory (`target/book-runner/slot-N/`),
//! built there offline with the slot's own target directory, which keeps its
//! build state between runs: the next edit of the same listing rebuilds only
//! the listing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use book_tools::fences::Expectation;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::{mpsc, Notify};

use crate::catalog::{Block, Catalog, Source};
use crate::diagnostics::{self, Message};
use crate::limits::{self, Group, Limits};
use crate::queue::{Queue, Slot, Ticket};
use crate::verdict::{verdict, Outcome};

/// The limits of every run.
#[derive(Clone, Copy, Debug)]
pub struct RunLimits {
    /// How long the program may run (the build not included).
    pub wall: Duration,
    /// How long a build may take.
    pub build: Duration,
    /// How many bytes of output (stdout and stderr together) are passed on.
    pub output: usize,
    /// The largest code a request may carry, in bytes.
    pub code: usize,
}

impl Default for RunLimits {
    fn default() -> RunLimits {
        RunLimits {
            wall: Duration::from_secs(30),
            build: Duration::from_secs(300),
            output: 1 << 20,
            code: 60 * 1024,
        }
    }
}

/// What happens during a run, in the order it happens.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The run has an id (for Stop).
    Started { run: String },
    /// Waiting for a build slot: this many requests are ahead (1 = next).
    Queued { place: usize },
    /// A line of cargo's own progress.
    Building { line: String },
    /// A compiler message.
    Diagnostic(diagnostics::Diagnostic),
    /// The program starts.
    Running { command: String },
    /// Output of the program.
    Stdout { text: String },
    /// Error output of the program.
    Stderr { text: String },
    /// The output passed the limit: the rest is cut.
    Cut { text: String },
    /// The thread timeline of this run.
    Timeline { svg: String },
    /// The end, compared with the fence.
    Finished {
        outcome: Outcome,
        status: Option<i32>,
        verdict: String,
        as_promised: bool,
    },
}

impl Event {
    /// The event as one line of JSON (with its newline).
    pub fn to_line(&self) -> String {
        let value = match self {
            Event::Started { run } => json!({"event": "started", "run": run}),
            Event::Queued { place } => json!({"event": "queued", "place": place}),
            Event::Building { line } => json!({"event": "building", "line": line}),
            Event::Diagnostic(d) => json!({
                "event": "diagnostic", "level": d.level, "line": d.line, "text": d.text
            }),
            Event::Running { command } => json!({"event": "running", "command": command}),
            Event::Stdout { text } => json!({"event": "stdout", "text": text}),
            Event::Stderr { text } => json!({"event": "stderr", "text": text}),
            Event::Cut { text } => json!({"event": "cut", "text": text}),
            Event::Timeline { svg } => json!({"event": "timeline", "svg": svg}),
            Event::Finished {
                outcome,
                status,
                verdict,
                as_promised,
            } => json!({
                "event": "finished", "outcome": outcome.name(), "status": status,
                "verdict": verdict, "as_promised": as_promised
            }),
        };
        format!("{value}\n")
    }
}

/// A refusal: an HTTP status and why. Nothing has started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status.
    pub status: u16,
    /// What is wrong, for the reader.
    pub message: String,
}

impl Refusal {
    /// A refusal with `status` and `message`.
    pub fn new(status: u16, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            message: message.into(),
        }
    }
}

/// A checked request, holding its place in the queue.
pub struct Prepared {
    block: Block,
    code: String,
    args: Vec<String>,
    ticket: Ticket,
}

/// Where edited listings are built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetMode {
    /// Each slot has its own target directory (the default).
    PerSlot,
    /// Every build uses the workspace's target directory.
    Shared,
}

/// Runs the book's blocks.
pub struct Runner {
    /// The book's blocks.
    pub catalog: Catalog,
    /// The build queue.
    pub queue: Arc<Queue>,
    /// The runner's own directory (`target/book-runner`).
    pub work: PathBuf,
    /// The cargo to build with.
    pub cargo: PathBuf,
    /// The limits of each run.
    pub limits: RunLimits,
    /// Where edited listings are built.
    pub target_mode: TargetMode,
    stops: Mutex<HashMap<String, Arc<Notify>>>,
    next_run: AtomicU64,
}

/// The lines of `text`, without trailing blanks and trailing empty lines: two
/// texts equal under this are the same code to a reader.
fn normalised(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(0, |i| i + 1);
    lines[..end].join("\n")
}

impl Runner {
    /// A runner for the book `catalog` describes, with `slots` build slots.
    pub fn new(catalog: Catalog, slots: usize, limits: RunLimits) -> Runner {
        let work = catalog.root.join("target/book-runner");
        Runner {
            catalog,
            queue: Queue::new(slots, 32),
            work,
            cargo: std::env::var_os("CARGO")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("cargo")),
            limits,
            target_mode: TargetMode::PerSlot,
            stops: Mutex::new(HashMap::new()),
            next_run: AtomicU64::new(1),
        }
    }

    /// Checks a request and takes a place in the queue; refuses it (and
    /// starts nothing) when it names no block of the book, carries arguments
    /// the book does not show for it, or the queue is full.
    pub fn prepare(&self, block: &str, code: &str, args: &[String]) -> Result<Prepared, Refusal> {
        let block = self.catalog.blocks.get(block).ok_or_else(|| {
            Refusal::new(
                404,
                "no such block in this book: reload the page (the book may have changed)",
            )
        })?;
        if code.len() > self.limits.code {
            return Err(Refusal::new(413, "the code is too long to run"));
        }
        let args = args.to_vec();
        if !block.variants.contains(&args) {
            return Err(Refusal::new(
                400,
                format!(
                    "{} runs only with the arguments the book shows: {}",
                    block.name(),
                    block
                        .variants
                        .iter()
                        .map(|v| format!("[{}]", v.join(" ")))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if !block.editable() && normalised(code) != normalised(&block.shown().unwrap_or_default()) {
            return Err(Refusal::new(400, "this block cannot be edited"));
        }
        let ticket = self.queue.join().map_err(|full| {
            Refusal::new(
                503,
                format!(
                    "the runner is busy: {} runs are already waiting; try again in a moment",
                    full.waiting
                ),
            )
        })?;
        Ok(Prepared {
            block: block.clone(),
            code: code.to_string(),
            args,
            ticket,
        })
    }

    /// Asks the run `run` to stop; false when no such run is going.
    pub fn stop(&self, run: &str) -> bool {
        match self
            .stops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(run)
        {
            Some(stop) => {
                stop.notify_one();
                true
            }
            None => false,
        }
    }

    /// Performs a prepared run, sending its events to `events`. Ends early,
    /// killing whatever it started, when the run is stopped or `events` is
    /// closed (the page went away).
    pub async fn run(self: Arc<Runner>, prepared: Prepared, events: mpsc::Sender<Event>) {
        let id = format!("r{}", self.next_run.fetch_add(1, Ordering::Relaxed));
        let stop = Arc::new(Notify::new());
        self.stops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), Arc::clone(&stop));
        let _ = events.send(Event::Started { run: id.clone() }).await;
        let finished = self.run_steps(&id, prepared, &events, &stop).await;
        self.stops
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        let _ = events.send(finished).await;
    }

    async fn run_steps(
        &self,
        id: &str,
        prepared: Prepared,
        events: &mpsc::Sender<Event>,
        stop: &Notify,
    ) -> Event {
        let Prepared {
            block,
            code,
            args,
            ticket,
        } = prepared;
        let shown = block.shown().unwrap_or_default();
        let edited = normalised(&code) != normalised(&shown);
        let ended = |outcome: Outcome, status: Option<i32>| {
            let (verdict, as_promised) = verdict(outcome, block.expect, edited, status);
            Event::Finished {
                outcome,
                status,
                verdict,
                as_promised,
            }
        };
        // Wait for a slot.
        let places = events.clone();
        let slot = tokio::select! {
            slot = self.queue.wait(ticket, block.package.as_deref(), |place| {
                let _ = places.try_send(Event::Queued { place });
            }) => slot,
            _ = stop.notified() => return ended(Outcome::Stopped, None),
            _ = events.closed() => return ended(Outcome::Stopped, None),
        };
        // Build.
        let build = match self.prepare_build(&block, &code, edited, &slot) {
            Ok(build) => build,
            Err(why) => {
                let _ = events.send(Event::Stderr { text: why }).await;
                return ended(Outcome::Failed, None);
            }
        };
        let built = match self.build(&build, &block, events, stop).await {
            Ok(built) => built,
            Err(outcome) => return ended(outcome, None),
        };
        slot.built();
        let executable = match built {
            Built::Program(path) => path,
            Built::CompileError => return ended(Outcome::CompileError, None),
            Built::Failed(why) => {
                let _ = events.send(Event::Stderr { text: why }).await;
                return ended(Outcome::Failed, None);
            }
        };
        if block.expect == Expectation::CompilesOnly {
            return ended(Outcome::Compiled, None);
        }
        // Run.
        // Named for this run alone: run ids restart with each runner, and two
        // runners (two tests, say) may share a work directory.
        static TIMELINES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let unique = TIMELINES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let timeline = self
            .work
            .join("runs")
            .join(format!("{}-{unique}-{id}.tsv", std::process::id()));
        let _ = std::fs::create_dir_all(timeline.parent().expect("a directory"));
        let _ = std::fs::remove_file(&timeline);
        let command = std::iter::once(block.command.clone())
            .chain((!args.is_empty()).then(|| format!("-- {}", args.join(" "))))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = events.send(Event::Running { command }).await;
        let (outcome, status, stderr) = self
            .execute(&executable, &args, &timeline, events, stop)
            .await;
        if let Some(svg) = timeline_svg(&timeline, &stderr, &block, id) {
            let _ = events.send(Event::Timeline { svg }).await;
        }
        let _ = std::fs::remove_file(&timeline);
        drop(slot);
        ended(outcome, status)
    }

    /// Builds the dependencies of the book's listings into the first free
    /// slot (slot 0 when the runner is idle) if it never built them, at low
    /// priority, one build at a time, so that a reader's first edit of any
    /// listing rebuilds only that listing. One
    /// listing stands for all those whose manifests ask for the same
    /// dependencies (features decide what cargo builds). Each build waits
    /// in the queue as a reader's would; a finished one leaves a stamp.
    pub async fn warm_up(self: Arc<Runner>) {
        let mut seen = std::collections::HashSet::new();
        let mut representatives = Vec::new();
        for block in self.catalog.blocks.values() {
            let Source::Include(include) = &block.source else {
                continue;
            };
            let manifest =
                std::fs::read_to_string(include.crate_dir.join("Cargo.toml")).unwrap_or_default();
            let dependencies = manifest
                .split("[dependencies]")
                .nth(1)
                .unwrap_or_default()
                .to_string();
            if seen.insert(dependencies.clone()) {
                representatives.push((block.clone(), dependencies));
            }
        }
        for (block, dependencies) in &representatives {
            let Ok(shown) = block.shown() else {
                continue;
            };
            let Ok(ticket) = self.queue.join() else {
                return;
            };
            // The first free slot: slot 0 when the runner is idle, which a
            // reader's first edit of a listing also gets.
            let slot = self.queue.wait(ticket, None, |_| {}).await;
            let stamp = {
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                dependencies.hash(&mut hasher);
                self.work
                    .join(format!("slot-{}/warm-{:016x}", slot.index, hasher.finish()))
            };
            if stamp.exists() {
                continue;
            }
            let Ok(mut build) = self.prepare_build(block, &shown, true, &slot) else {
                continue;
            };
            build.low_priority = true;
            let (events, mut sink) = mpsc::channel(64);
            let drain = tokio::spawn(async move { while sink.recv().await.is_some() {} });
            let built = self.build(&build, block, &events, &Notify::new()).await;
            drop(events);
            let _ = drain.await;
            if matches!(built, Ok(Built::Program(_))) {
                let _ = std::fs::write(&stamp, "");
                slot.built();
            }
        }
    }

    /// Where and how to build: the workspace's own package, or a scratch
    /// copy rebuilt around the reader's code.
    fn prepare_build(
        &self,
        block: &Block,
        code: &str,
        edited: bool,
        slot: &Slot,
    ) -> Result<Build, String> {
        let root = &self.catalog.root;
        match (&block.source, &block.package) {
            (Source::Include(include), Some(package)) if !edited => Ok(Build {
                dir: root.clone(),
                package: Some(package.clone()),
                target: None,
                source_file: include.crate_dir.join(&include.file),
                file_in_messages: include.file.to_string_lossy().into_owned(),
                shown_line: Vec::new(),
                low_priority: false,
            }),
            (Source::Include(include), Some(package)) => {
                let slot_dir = self.work.join(format!("slot-{}", slot.index));
                let dir = slot_dir.join(package);
                let renamed = format!("edited-{package}");
                copy_crate(&include.crate_dir, &dir, root, &renamed)?;
                let original = std::fs::read_to_string(include.crate_dir.join(&include.file))
                    .map_err(|e| format!("cannot read the listing: {e}"))?;
                let spliced = include.splice(&original, code);
                let file = dir.join(&include.file);
                write_if_changed(&file, &spliced.text)?;
                Ok(Build {
                    dir,
                    package: None,
                    target: Some(self.target_dir(&slot_dir)),
                    source_file: file,
                    file_in_messages: include.file.to_string_lossy().into_owned(),
                    shown_line: spliced.shown_line,
                    low_priority: false,
                })
            }
            (Source::Inline { text }, _) => {
                let slot_dir = self.work.join(format!("slot-{}", slot.index));
                let name = format!("snippet-{}", block.id.replace(['/', '.'], "-"));
                let dir = slot_dir.join(&name);
                let awd = root.join("listings/awd");
                let manifest = format!(
                    "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
                     [dependencies]\nawd = {{ path = {:?} }}\nfutures = \"0.3.31\"\n\
                     tokio = {{ version = \"1.45\", features = [\"full\"] }}\n\n[workspace]\n",
                    awd.to_string_lossy()
                );
                std::fs::create_dir_all(dir.join("src")).map_err(|e| e.to_string())?;
                write_if_changed(&dir.join("Cargo.toml"), &manifest)?;
                copy_lock(root, &dir)?;
                let program = if block.editable() {
                    code.to_string()
                } else {
                    text.lines()
                        .map(|l| {
                            let rest = l.trim_start();
                            match rest.strip_prefix('#') {
                                Some("") => String::new(),
                                Some(r) if r.starts_with(' ') => r[1..].to_string(),
                                Some(r) if r.starts_with('#') => l.replacen("##", "#", 1),
                                _ => l.to_string(),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                let file = dir.join("src/main.rs");
                write_if_changed(&file, &format!("{program}\n"))?;
                let lines = program.lines().count();
                Ok(Build {
                    dir,
                    package: None,
                    target: Some(self.target_dir(&slot_dir)),
                    source_file: file,
                    file_in_messages: "src/main.rs".into(),
                    shown_line: (1..=lines).map(Some).collect(),
                    low_priority: false,
                })
            }
            (Source::Include(_), None) => Err("a listing block without a package".into()),
        }
    }

    fn target_dir(&self, slot_dir: &Path) -> PathBuf {
        match self.target_mode {
            TargetMode::PerSlot => slot_dir.join("target"),
            TargetMode::Shared => self.catalog.root.join("target"),
        }
    }

    /// Builds, streaming cargo's progress and the compiler's messages.
    async fn build(
        &self,
        build: &Build,
        block: &Block,
        events: &mpsc::Sender<Event>,
        stop: &Notify,
    ) -> Result<Built, Outcome> {
        let mut command = if build.low_priority {
            let mut nice = tokio::process::Command::new("nice");
            nice.args(["-n", "19"]).arg(&self.cargo);
            nice
        } else {
            tokio::process::Command::new(&self.cargo)
        };
        command
            .arg("build")
            .arg("--offline")
            .arg("--message-format=json")
            .current_dir(&build.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(package) = &build.package {
            command.args(["-p", package]);
        }
        if let Some(target) = &build.target {
            command.env("CARGO_TARGET_DIR", target);
        }
        limits::isolate(&mut command, None);
        let mut child = command.spawn().map_err(|_| Outcome::Failed)?;
        let group = Group::new(child.id().unwrap_or(0));
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (lines_tx, mut lines) = mpsc::channel::<(bool, String)>(256);
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send((false, line)).await.is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if lines_tx.send((true, line)).await.is_err() {
                    break;
                }
            }
        });
        let source = build.source_file.canonicalize().unwrap_or_default();
        let mut executable = None;
        let mut errors = 0;
        let mut cargo_said = String::new();
        let deadline = tokio::time::sleep(self.limits.build);
        tokio::pin!(deadline);
        let name = block.name();
        let status = loop {
            tokio::select! {
                line = lines.recv() => match line {
                    Some((true, line)) => {
                        if cargo_said.len() < 64 * 1024 {
                            cargo_said.push_str(&line);
                            cargo_said.push('\n');
                        }
                        let _ = events.send(Event::Building { line }).await;
                    }
                    Some((false, line)) => {
                        let ours = serde_json::from_str::<serde_json::Value>(&line)
                            .ok()
                            .and_then(|v| v["target"]["src_path"].as_str().map(PathBuf::from))
                            .is_some_and(|p| p == source);
                        match diagnostics::read(&line, &build.file_in_messages, &build.shown_line, &name) {
                            Message::Diagnostic(d) if ours => {
                                if d.level == "error" {
                                    errors += 1;
                                }
                                let _ = events.send(Event::Diagnostic(d)).await;
                            }
                            Message::Executable(path) if ours => executable = Some(path),
                            _ => {}
                        }
                    }
                    None => break child.wait().await.ok(),
                },
                _ = &mut deadline => {
                    group.kill();
                    return Err(Outcome::TimedOut);
                }
                _ = stop.notified() => {
                    group.kill();
                    return Err(Outcome::Stopped);
                }
                _ = events.closed() => {
                    group.kill();
                    return Err(Outcome::Stopped);
                }
            }
        };
        drop(group);
        match (status, executable) {
            (Some(s), Some(path)) if s.success() => Ok(Built::Program(PathBuf::from(path))),
            (Some(s), None) if s.success() => Ok(Built::Failed(
                "cargo built no program for this block".to_string(),
            )),
            _ if errors > 0 => Ok(Built::CompileError),
            _ => Ok(Built::Failed(format!("cargo build failed:\n{cargo_said}"))),
        }
    }

    /// Runs the program `executable` with `args` under the run's limits,
    /// streaming its output to `events`; returns how it ended, its exit
    /// status and its error output. Its process group is killed when it
    /// ends, times out, prints too much, is stopped or `events` closes.
    pub async fn execute(
        &self,
        executable: &Path,
        args: &[String],
        timeline: &Path,
        events: &mpsc::Sender<Event>,
        stop: &Notify,
    ) -> (Outcome, Option<i32>, String) {
        let mut command = tokio::process::Command::new(executable);
        command
            .args(args)
            .current_dir(&self.catalog.root)
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env("AWD_TIMELINE", timeline);
        for key in ["PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "TERM"] {
            if let Some(value) = std::env::var_os(key) {
                command.env(key, value);
            }
        }
        limits::isolate(&mut command, Some(Limits::for_a_run()));
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = events
                    .send(Event::Stderr {
                        text: format!("the program cannot start: {e}\n"),
                    })
                    .await;
                return (Outcome::Failed, None, String::new());
            }
        };
        let group = Group::new(child.id().unwrap_or(0));
        let (chunks_tx, mut chunks) = mpsc::channel::<(bool, String)>(64);
        spawn_reader(
            child.stdout.take().expect("piped"),
            false,
            chunks_tx.clone(),
        );
        spawn_reader(child.stderr.take().expect("piped"), true, chunks_tx);
        let mut passed = 0usize;
        let mut stderr_text = String::new();
        let mut status = None;
        let mut ended_by = None;
        let deadline = tokio::time::sleep(self.limits.wall);
        tokio::pin!(deadline);
        let mut pipes_open = true;
        while pipes_open || status.is_none() {
            tokio::select! {
                chunk = chunks.recv(), if pipes_open => match chunk {
                    Some((is_err, text)) => {
                        if is_err && stderr_text.len() < self.limits.output {
                            stderr_text.push_str(&text);
                        }
                        let room = self.limits.output.saturating_sub(passed);
                        let text = if text.len() > room {
                            let mut cut = room;
                            while !text.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            text[..cut].to_string()
                        } else {
                            text
                        };
                        passed += text.len();
                        if !text.is_empty() {
                            let event = if is_err { Event::Stderr { text } } else { Event::Stdout { text } };
                            let _ = events.send(event).await;
                        }
                        if passed >= self.limits.output {
                            let _ = events.send(Event::Cut {
                                text: format!(
                                    "[output cut at {} KiB: the program was stopped]",
                                    self.limits.output / 1024
                                ),
                            }).await;
                            ended_by = Some(Outcome::OutputCut);
                            break;
                        }
                    }
                    None => pipes_open = false,
                },
                exit = child.wait(), if status.is_none() => {
                    status = Some(exit.ok());
                    // Whatever the program left running goes with it, so
                    // that its pipes close.
                    group.kill();
                }
                _ = &mut deadline => { ended_by = Some(Outcome::TimedOut); break; }
                _ = stop.notified() => { ended_by = Some(Outcome::Stopped); break; }
                _ = events.closed() => { ended_by = Some(Outcome::Stopped); break; }
            }
        }
        group.kill();
        let exit = match status {
            Some(exit) => exit,
            None => child.wait().await.ok(),
        };
        drop(group);
        if let Some(outcome) = ended_by {
            return (outcome, None, stderr_text);
        }
        let code = exit.and_then(|s| s.code());
        (Outcome::of_status(code), code, stderr_text)
    }
}

/// How to build one run.
struct Build {
    dir: PathBuf,
    package: Option<String>,
    target: Option<PathBuf>,
    source_file: PathBuf,
    file_in_messages: String,
    shown_line: Vec<Option<usize>>,
    /// Built under `nice -n 19` (the warm-up).
    low_priority: bool,
}

enum Built {
    Program(PathBuf),
    CompileError,
    Failed(String),
}

/// Reads a pipe in chunks as they come, decoding UTF-8 across chunk ends.
fn spawn_reader<R>(mut pipe: R, is_err: bool, tx: mpsc::Sender<(bool, String)>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 8192];
        let mut pending: Vec<u8> = Vec::new();
        loop {
            let n = match pipe.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buffer[..n]);
            let valid = match std::str::from_utf8(&pending) {
                Ok(_) => pending.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => pending.len(),
            };
            let text = String::from_utf8_lossy(&pending[..valid]).into_owned();
            pending.drain(..valid);
            if tx.send((is_err, text)).await.is_err() {
                return;
            }
        }
        if !pending.is_empty() {
            let _ = tx
                .send((is_err, String::from_utf8_lossy(&pending).into_owned()))
                .await;
        }
    });
}

/// The run's timeline, drawn as the book's figures are, if the program
/// recorded any event.
fn timeline_svg(file: &Path, stderr: &str, block: &Block, id: &str) -> Option<String> {
    let tsv = std::fs::read_to_string(file).ok()?;
    let events = book_tools::timeline::parse(&tsv).ok()?;
    if events.is_empty() {
        return None;
    }
    let title = format!("{}, your run {id}: thread timeline", block.name());
    Some(book_tools::timeline::render(
        &events,
        &book_tools::timeline::verdict(stderr),
        &title,
    ))
}

fn write_if_changed(path: &Path, text: &str) -> Result<(), String> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

fn copy_lock(root: &Path, dir: &Path) -> Result<(), String> {
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let target = dir.join("Cargo.lock");
    // Cargo trims the copy to what the crate uses: write it only once, or
    // when the workspace's lock file changed since.
    let stamp = dir.join(".workspace-lock");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(lock.as_str()) {
        write_if_changed(&target, &lock)?;
        write_if_changed(&stamp, &lock)?;
    }
    Ok(())
}

/// Copies the listing crate at `from` to `to` as a crate that stands alone:
/// its own workspace, path dependencies made absolute, renamed `name`, the
/// workspace's lock file (so the same versions are used, offline).
fn copy_crate(from: &Path, to: &Path, root: &Path, name: &str) -> Result<(), String> {
    fn files(dir: &Path, base: &Path, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if file_name != "target" {
                    files(&path, base, found);
                }
            } else if !(file_name.starts_with("output") && file_name.ends_with(".txt")) {
                found.push(path.strip_prefix(base).expect("inside").to_path_buf());
            }
        }
    }
    let mut found = Vec::new();
    files(from, from, &mut found);
    for relative in found {
        let text = std::fs::read_to_string(from.join(&relative))
            .map_err(|e| format!("{}: {e}", relative.display()))?;
        let text = if relative == Path::new("Cargo.toml") {
            standalone_manifest(&text, from, name)
        } else {
            text
        };
        write_if_changed(&to.join(&relative), &text)?;
    }
    copy_lock(root, to)
}

/// A listing's manifest made to build outside the workspace.
pub fn standalone_manifest(manifest: &str, crate_dir: &Path, name: &str) -> String {
    let mut out = String::new();
    let mut renamed = false;
    for line in manifest.lines() {
        let mut line = line.to_string();
        if !renamed && line.trim_start().starts_with("name = ") {
            line = format!("name = \"{name}\"");
            renamed = true;
        }
        if let Some(at) = line.find("path = \"") {
            let start = at + "path = \"".len();
            if let Some(len) = line[start..].find('"') {
                let relative = &line[start..start + len];
                let absolute = crate_dir.join(relative);
                let absolute = absolute.canonicalize().unwrap_or(absolute);
                line = format!(
                    "{}{}{}",
                    &line[..start],
                    absolute.to_string_lossy(),
                    &line[start + len..]
                );
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    if !manifest.contains("[workspace]") {
        out.push_str("\n[workspace]\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn a_manifest_is_made_to_stand_alone() {
        let _limit = TestLimit::seconds(5);
        let manifest = "[package]\nname = \"listing-03-01\"\n\n[dependencies]\nawd = { path = \"../../awd\" }\n";
        let dir = Path::new("/book/listings/ch03/listing-03-01");
        let out = standalone_manifest(manifest, dir, "edited-listing-03-01");
        assert!(out.contains("name = \"edited-listing-03-01\""));
        assert!(out.contains("path = \"/book/listings/ch03/listing-03-01/../../awd\""));
        assert!(out.ends_with("[workspace]\n"));
    }

    #[test]
    fn trailing_blanks_do_not_make_an_edit() {
        let _limit = TestLimit::seconds(5);
        assert_eq!(normalised("a  \nb\n\n"), normalised("a\nb"));
        assert_ne!(normalised("a\nb"), normalised("a\nc"));
    }
}
