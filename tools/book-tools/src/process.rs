//! One bounded subprocess: start a command, collect what it prints, and stop
//! it (its whole process group) if it outlives its limit. Every tool that runs
//! a program the book depends on (a listing, cargo, a browser) runs it here,
//! so that nothing the tools start can hang them.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What a bounded run printed, and how it ended.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// Runs `command` with no standard input, capturing both output streams, in
/// a process group of its own; kills the group when it outlives `limit`.
/// An error says what could not be done: start it, or finish in time.
pub fn run_bounded(command: &mut Command, limit: Duration) -> Result<Finished, String> {
    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stdout.read_to_end(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr.read_to_end(&mut text);
        text
    });
    let status = wait_or_stop(&mut child, limit, &shown)?;
    let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
    Ok(Finished {
        status,
        stdout: text(out.join().unwrap_or_default()),
        stderr: text(err.join().unwrap_or_default()),
    })
}

/// Like [`run_bounded`], but with standard output and standard error in one
/// text, in the order the program wrote them (as a terminal shows them): the
/// book's stored outputs are that text.
pub fn run_bounded_merged(
    command: &mut Command,
    limit: Duration,
) -> Result<(ExitStatus, String), String> {
    let shown = format!("{command:?}");
    let (mut reader, writer) = std::io::pipe().map_err(|e| format!("no pipe: {e}"))?;
    let copy = writer.try_clone().map_err(|e| format!("no pipe: {e}"))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(copy)
        .stderr(writer)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {shown}: {e}"))?;
    // The command still holds the pipe's writing ends: replace them, or the
    // reader below never sees the end of the output.
    command.stdout(Stdio::null()).stderr(Stdio::null());
    let collector = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = reader.read_to_end(&mut text);
        text
    });
    let status = wait_or_stop(&mut child, limit, &shown)?;
    let text = String::from_utf8_lossy(&collector.join().unwrap_or_default()).into_owned();
    Ok((status, text))
}

/// Waits for `child` at most `limit`; past it, kills its process group and
/// says so.
fn wait_or_stop(child: &mut Child, limit: Duration, shown: &str) -> Result<ExitStatus, String> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(None) | Err(_) => {
                kill_group(child.id());
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{shown} was still running after {limit:?}: stopped"
                ));
            }
        }
    }
}

/// Sends SIGKILL to the process group `id` leads (the group `run_bounded`
/// made for it), with the `kill` command, so that children it started die
/// with it.
pub fn kill_group(id: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{id}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn a_quick_command_is_collected() {
        let _limit = TestLimit::seconds(10);
        let done = run_bounded(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.stdout, "out\n");
        assert_eq!(done.stderr, "err\n");
    }

    #[test]
    fn merged_output_keeps_the_order_it_was_written_in() {
        let _limit = TestLimit::seconds(10);
        let (status, text) = run_bounded_merged(
            Command::new("sh").args(["-c", "echo one; echo two >&2; echo three"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(status.success());
        assert_eq!(text, "one\ntwo\nthree\n");
    }

    #[test]
    fn a_command_that_outlives_its_limit_is_stopped_with_its_children() {
        let _limit = TestLimit::seconds(10);
        let started = Instant::now();
        let pid_file = std::env::temp_dir().join(format!("run-bounded-{}", std::process::id()));
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let outcome = run_bounded(
            Command::new("sh").args(["-c", &script]),
            Duration::from_millis(1_000),
        );
        assert!(outcome.unwrap_err().contains("still running"));
        assert!(started.elapsed() < Duration::from_secs(5));
        let grandchild =
            std::fs::read_to_string(&pid_file).expect("the shell wrote its child's pid");
        let _ = std::fs::remove_file(&pid_file);
        // Killed with its group: gone, or a zombie waiting to be reaped.
        let stat = format!("/proc/{}/stat", grandchild.trim());
        let running = || {
            std::fs::read_to_string(&stat).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
            })
        };
        let waited = Instant::now();
        while running() && waited.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!running(), "a child outlived its group's limit");
    }
}
