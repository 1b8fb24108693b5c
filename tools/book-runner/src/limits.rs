//! Every process the runner starts (a build, a reader's program, `mdbook
//! serve`) leads a process group of its own, so that it can be ended with
//! everything it started: [`Group`] kills the whole group when it is
//! dropped, and [`kill_all`] kills every group still alive when the runner
//! exits. A reader's program also runs under resource limits ([`Limits`]),
//! set in the child between `fork` and `exec`.

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// The resource limits of a reader's program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Address space, in bytes (`RLIMIT_AS`).
    pub address_space: u64,
    /// Processes and threads of the reader's user, counting those already
    /// running (`RLIMIT_NPROC` counts per user, not per process tree).
    pub processes: u64,
    /// CPU seconds (`RLIMIT_CPU`), a backstop behind the wall-time limit.
    pub cpu_seconds: u64,
    /// Largest file the program may write, in bytes (`RLIMIT_FSIZE`).
    pub file_size: u64,
}

/// How many more threads and processes a reader's program may start, on
/// top of those the user already runs.
pub const EXTRA_PROCESSES: u64 = 256;

impl Limits {
    /// The limits of a run: 2 GiB of address space, [`EXTRA_PROCESSES`] more
    /// threads or processes than the user runs now, 60 CPU seconds, 64 MiB
    /// files.
    pub fn for_a_run() -> Limits {
        Limits {
            address_space: 2 << 30,
            processes: tasks_of_this_user() + EXTRA_PROCESSES,
            cpu_seconds: 60,
            file_size: 64 << 20,
        }
    }
}

/// The threads (tasks) that belong to this process's real user, counted in
/// `/proc`: what `RLIMIT_NPROC` compares its limit with.
pub fn tasks_of_this_user() -> u64 {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut count = 0;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
        };
        if field("Uid:") == Some(u64::from(uid)) {
            count += field("Threads:").unwrap_or(1);
        }
    }
    count
}

/// Prepares `command` to start as the leader of a new session and process
/// group, killed if the runner dies first, and, with `limits`, under those
/// resource limits.
pub fn isolate(command: &mut tokio::process::Command, limits: Option<Limits>) {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: `pre_exec` runs the closure in the forked child before `exec`,
    // where only async-signal-safe functions may be called. It calls only
    // `setsid`, `prctl`, `getppid` and `setrlimit` (all async-signal-safe
    // system calls), on values computed before the fork (`limits` is `Copy`,
    // `parent` a plain integer); it allocates nothing, takes no lock and
    // touches no memory shared with other threads.
    unsafe {
        command.pre_exec(move || {
            // A new session: the child leads its own process group, so
            // `killpg` reaches it and everything it starts.
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // Killed when the runner's thread that started it ends (the
            // runner's runtime threads live as long as the runner), so a
            // runner killed with SIGKILL leaves no program running.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // The runner died before prctl took effect.
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            if let Some(limits) = limits {
                for (resource, value) in [
                    (libc::RLIMIT_AS, limits.address_space),
                    (libc::RLIMIT_NPROC, limits.processes),
                    (libc::RLIMIT_CPU, limits.cpu_seconds),
                    (libc::RLIMIT_FSIZE, limits.file_size),
                    (libc::RLIMIT_CORE, 0),
                ] {
                    let limit = libc::rlimit {
                        rlim_cur: value as libc::rlim_t,
                        rlim_max: value as libc::rlim_t,
                    };
                    if libc::setrlimit(resource, &limit) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
}

fn live() -> &'static Mutex<HashSet<i32>> {
    static LIVE: OnceLock<Mutex<HashSet<i32>>> = OnceLock::new();
    LIVE.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Sends SIGKILL to the process group `pgid` (an error, such as the group
/// having ended already, is ignored).
pub fn kill_group(pgid: i32) {
    if pgid > 1 {
        // SAFETY: killpg takes plain integers; a group that no longer exists
        // gives ESRCH, which is harmless.
        unsafe {
            libc::killpg(pgid, libc::SIGKILL);
        }
    }
}

/// A started process group: killed, whole, when dropped.
#[derive(Debug)]
pub struct Group {
    pgid: i32,
}

impl Group {
    /// Registers the group led by the process `pid` (started through
    /// [`isolate`], so its group id is its pid).
    pub fn new(pid: u32) -> Group {
        let pgid = pid as i32;
        live()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pgid);
        Group { pgid }
    }

    /// The group's id.
    pub fn id(&self) -> i32 {
        self.pgid
    }

    /// Kills every process of the group now.
    pub fn kill(&self) {
        kill_group(self.pgid);
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        kill_group(self.pgid);
        live()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.pgid);
    }
}

/// Kills every group the runner started that is still registered: called
/// when the runner exits.
pub fn kill_all() {
    let groups: Vec<i32> = live()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    for pgid in groups {
        kill_group(pgid);
    }
}

/// The ids of the groups still registered (for tests and the status line).
pub fn live_groups() -> Vec<i32> {
    live()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect()
}
