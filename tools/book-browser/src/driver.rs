//! The ChromeDriver process and everything it starts, owned by one guard so
//! that none of it outlives the run.
//!
//! ChromeDriver starts in a process group of its own; the Chromium it
//! launches joins that group. Chromium's crash handlers leave the group
//! (they start sessions of their own) but end by themselves once the
//! browser they watch has gone. The run makes itself a *child subreaper*
//! ([`adopt_orphans`]) before it starts anything, so every process it
//! starts, however deep, is re-parented to it rather than to `init` when
//! its parent exits. That lets cleanup reap them all and tell, from the
//! kernel's own answer (`ECHILD`), that no process it started is left.
//!
//! Cleanup is bounded: a group's leader is asked to end (`SIGTERM`), the
//! group gets a few seconds to go, then `SIGKILL`; at the very end the run
//! waits a few seconds more for every process it started, the crash
//! handlers included ([`every_process_has_ended`]). A signal that ends the
//! run early (`SIGINT`, `SIGTERM`, `SIGHUP`) ends every group the same way
//! before the run exits ([`kill_on_signal`]).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// How long ChromeDriver gets to start listening.
const STARTUP_LIMIT: Duration = Duration::from_secs(20);

/// How long each cleanup step may take.
const CLEANUP_LIMIT: Duration = Duration::from_secs(5);

/// The process groups to kill if a signal ends the run.
static GROUPS_TO_KILL: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// The groups to kill if a signal ends the run, locked.
fn groups_to_kill() -> std::sync::MutexGuard<'static, Vec<i32>> {
    GROUPS_TO_KILL
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Makes this process the one that adopts every orphan among its
/// descendants, so that [`ProcessGroup`] can reap them and know when all
/// are gone. Call it before starting anything.
pub fn adopt_orphans() -> Result<(), String> {
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("become a child subreaper: {e}"))
}

/// Ends the running process groups (if any) when the run receives
/// `SIGINT`, `SIGTERM` or `SIGHUP`, as [`ProcessGroup::end`] does, waits a
/// moment for every process to be gone, and exits with 128 + the signal's
/// number. Needs a running Tokio runtime.
pub fn kill_on_signal(runtime: &tokio::runtime::Handle) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let kinds = [
        (SignalKind::interrupt(), 2),
        (SignalKind::terminate(), 15),
        (SignalKind::hangup(), 1),
    ];
    let _entered = runtime.enter();
    for (kind, number) in kinds {
        let mut stream = signal(kind).map_err(|e| format!("listen for signal {number}: {e}"))?;
        runtime.spawn(async move {
            if stream.recv().await.is_some() {
                // As at the end of a run: each leader is asked first (the
                // runner ends its runs, which have groups of their own),
                // then what is left of each group is killed.
                let groups: Vec<Pid> = groups_to_kill().iter().map(|g| Pid::from_raw(*g)).collect();
                for group in &groups {
                    let _ = kill(*group, Signal::SIGTERM);
                }
                let give_up_at = Instant::now() + CLEANUP_LIMIT;
                for group in &groups {
                    if !wait_for_group_to_go(*group, give_up_at) {
                        let _ = killpg(*group, Signal::SIGKILL);
                    }
                }
                reap_until_none_left(Instant::now() + CLEANUP_LIMIT);
                eprintln!("book-browser: stopped by signal {number}; what it started has ended");
                std::process::exit(128 + number);
            }
        });
    }
    Ok(())
}

/// A program started in a process group of its own, which it leads; the
/// whole group (and every orphan it leaves) is ended on drop.
pub struct ProcessGroup {
    child: Child,
    name: String,
    ended: bool,
}

impl ProcessGroup {
    /// Starts `command` as the leader of a new process group.
    pub fn spawn(mut command: Command, name: &str) -> Result<ProcessGroup, String> {
        let child = command
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start {name}: {e}"))?;
        groups_to_kill().push(child.id() as i32);
        Ok(ProcessGroup {
            child,
            name: name.to_string(),
            ended: false,
        })
    }

    fn group(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// The leader's standard output, if it was piped and not yet taken.
    pub fn take_stdout(&mut self) -> Option<std::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// True while the leader has not exited.
    pub fn leader_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Asks the leader to end, gives the group a bounded time to go, and
    /// kills what is left of it. `Err` says what had to be killed.
    pub fn end(&mut self) -> Result<(), String> {
        if std::mem::replace(&mut self.ended, true) {
            return Ok(());
        }
        let leader_was_running = self.leader_running();
        if leader_was_running {
            let _ = kill(self.group(), Signal::SIGTERM);
        }
        let went = wait_for_group_to_go(self.group(), Instant::now() + CLEANUP_LIMIT);
        if !went {
            let _ = killpg(self.group(), Signal::SIGKILL);
            // Killed processes stay (as zombies) until reaped.
            wait_for_group_to_go(self.group(), Instant::now() + CLEANUP_LIMIT);
        }
        let _ = self.child.wait();
        groups_to_kill().retain(|group| *group != self.group().as_raw());
        match (went, leader_was_running) {
            (true, _) => Ok(()),
            (false, true) => Err(format!(
                "had to kill {} and its group: they had not ended {CLEANUP_LIMIT:?} after SIGTERM",
                self.name
            )),
            (false, false) => Err(format!(
                "had to kill what {} left running in its group",
                self.name
            )),
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if !self.ended {
            if let Err(why) = self.end() {
                eprintln!("book-browser: {why}");
            }
        }
    }
}

/// Reaps exited descendants until the group `group` has no process left,
/// or `give_up_at`; true if it emptied.
fn wait_for_group_to_go(group: Pid, give_up_at: Instant) -> bool {
    loop {
        reap_exited();
        if killpg(group, None) == Err(Errno::ESRCH) {
            return true;
        }
        if Instant::now() >= give_up_at {
            return false;
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// Waits a bounded time for every process the run started (through any
/// group, and any orphan of theirs) to have ended; call it after every
/// group has ended.
pub fn every_process_has_ended() -> Result<(), String> {
    if reap_until_none_left(Instant::now() + CLEANUP_LIMIT) {
        Ok(())
    } else {
        Err(format!(
            "a process started by the run was still running {CLEANUP_LIMIT:?} after its group ended"
        ))
    }
}

/// Reaps every descendant that has exited, without waiting.
fn reap_exited() {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Reaps descendants until the kernel says this process has none left
/// (its own and the orphans it adopted), or `give_up_at`; true if none is
/// left.
fn reap_until_none_left(give_up_at: Instant) -> bool {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Err(Errno::ECHILD) => return true,
            Ok(WaitStatus::StillAlive) if Instant::now() >= give_up_at => return false,
            Ok(WaitStatus::StillAlive) => thread::sleep(Duration::from_millis(25)),
            Ok(_) | Err(_) => {}
        }
    }
}

/// A running ChromeDriver: its address, and the guard of its process group.
pub struct ChromeDriver {
    pub processes: ProcessGroup,
    address: SocketAddr,
}

impl ChromeDriver {
    /// Starts `binary` on a free port of 127.0.0.1, with its log and the
    /// browser's configuration in `scratch`, and waits until it listens.
    pub fn start(binary: &Path, scratch: &Path, deadline: Instant) -> Result<ChromeDriver, String> {
        let log = scratch.join("chromedriver.log");
        let mut last_error = String::new();
        // A free port can be taken between finding it and ChromeDriver
        // binding it: try a few.
        for _attempt in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map_err(|e| format!("find a free port: {e}"))?
                .port();
            let output = std::fs::File::create(&log)
                .map_err(|e| format!("create {}: {e}", log.display()))?;
            let errors = output.try_clone().map_err(|e| e.to_string())?;
            let mut command = Command::new(binary);
            command
                .arg(format!("--port={port}"))
                .env("XDG_CONFIG_HOME", scratch.join("config"))
                .stdin(Stdio::null())
                .stdout(output)
                .stderr(errors);
            let mut driver = ChromeDriver {
                processes: ProcessGroup::spawn(command, "chromedriver")?,
                address: SocketAddr::from(([127, 0, 0, 1], port)),
            };
            match driver.wait_until_listening(deadline) {
                Ok(()) => return Ok(driver),
                Err(e) => last_error = e,
            }
            let _ = driver.processes.end();
        }
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = output.lines().rev().take(5).collect();
        Err(format!(
            "{last_error}; its last output: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    }

    /// The URL WebDriver clients connect to.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Waits until ChromeDriver accepts connections on its port.
    fn wait_until_listening(&mut self, deadline: Instant) -> Result<(), String> {
        let give_up_at = deadline.min(Instant::now() + STARTUP_LIMIT);
        loop {
            if !self.processes.leader_running() {
                return Err("chromedriver exited at start".to_string());
            }
            if TcpStream::connect_timeout(&self.address, Duration::from_millis(500)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= give_up_at {
                return Err(format!(
                    "chromedriver did not listen within {STARTUP_LIMIT:?}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;
    use std::sync::{Mutex, PoisonError};

    /// The tests reap every child of the test process: one at a time.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

    /// A leader that, asked to end, ends its own group (as ChromeDriver
    /// closes its browser), with one process that has left for a session of
    /// its own (as Chromium's crash handler does) and ends soon after:
    /// nothing is forced and nothing is left.
    #[test]
    fn a_group_that_ends_when_asked_leaves_nothing_behind() {
        let _limit = TestLimit::seconds(30);
        let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        adopt_orphans().unwrap();
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("sleep 60 & a=$!; trap 'kill $a; exit 0' TERM; setsid sleep 1 & wait")
            .stdin(Stdio::null());
        let mut group = ProcessGroup::spawn(command, "a test shell").unwrap();
        thread::sleep(Duration::from_millis(200));
        let leader = group.group();
        assert!(group.leader_running());
        assert_eq!(group.end(), Ok(()));
        assert_eq!(killpg(leader, None), Err(Errno::ESRCH));
        every_process_has_ended().unwrap();
        assert_eq!(
            waitpid(None, Some(WaitPidFlag::WNOHANG)),
            Err(Errno::ECHILD)
        );
    }

    /// A leader that ignores SIGTERM is killed with its group, and the
    /// report says so.
    #[test]
    fn a_group_that_ignores_the_request_is_killed() {
        let _limit = TestLimit::seconds(30);
        let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        adopt_orphans().unwrap();
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("trap '' TERM; sleep 60 & wait")
            .stdin(Stdio::null());
        let mut group = ProcessGroup::spawn(command, "a test shell").unwrap();
        thread::sleep(Duration::from_millis(200));
        let leader = group.group();
        let ended = group.end();
        assert!(ended.is_err_and(|why| why.starts_with("had to kill a test shell and its group")));
        assert_eq!(killpg(leader, None), Err(Errno::ESRCH));
        every_process_has_ended().unwrap();
    }

    /// The group is gone even when the leader has already left its members
    /// behind, and the report says they had to be killed.
    #[test]
    fn members_left_by_a_leader_that_exited_are_killed() {
        let _limit = TestLimit::seconds(30);
        let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        adopt_orphans().unwrap();
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("sleep 60 & exit 0")
            .stdin(Stdio::null());
        let mut group = ProcessGroup::spawn(command, "a test shell").unwrap();
        let leader = group.group();
        thread::sleep(Duration::from_millis(200));
        let ended = group.end();
        assert!(ended.is_err_and(|why| why.contains("had to kill what a test shell left")));
        assert_eq!(killpg(leader, None), Err(Errno::ESRCH));
        every_process_has_ended().unwrap();
    }
}
