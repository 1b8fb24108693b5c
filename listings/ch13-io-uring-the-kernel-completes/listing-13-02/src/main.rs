//! Chapter 3's deadlock on io_uring's reaper: the reaper completes the
//! header's receive, the completion source runs the continuation inline, on
//! the reaper, and the continuation waits there for the body, whose
//! completion only the reaper can reap. `-- --asynchronous` queues the
//! continuation to a pool instead, and the reading arrives.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use awd::completion_source::{
    completion_source, Abandoned, Completion, CompletionSource, Continuations,
};
use awd::frame::{payload_length, Reading, HEADER_LEN, READING_LEN};
use awd::waits::{self, ReceiveState, WaitsFor};
use awd::watchdog::DEADLOCK_LIMIT;
use io_uring::{opcode, types, IoUring};

/// The exit status of a listing that found no io_uring.
pub const UNAVAILABLE_EXIT_CODE: i32 = 77;

/// A ring, or one clear line and exit status 77 where io_uring is missing.
fn ring_or_exit(entries: u32) -> IoUring {
    match IoUring::new(entries) {
        Ok(ring) => ring,
        Err(e) => {
            eprintln!("io_uring is unavailable here: io_uring_setup failed: {e}");
            std::process::exit(UNAVAILABLE_EXIT_CODE);
        }
    }
}

/// A receive's result and the buffer the kernel gives back.
type BufResult = (io::Result<usize>, Vec<u8>);

/// The `user_data` of the no-op that stops the reaper.
const STOP: u64 = u64::MAX;

/// The name of the thread that reaps completions.
const REAPER_THREAD_NAME: &str = "uring-reaper";

/// A receive the kernel owns, with its buffer and the source its reaper
/// completes, and its number in the watchdog's records.
struct InFlight {
    buffer: Vec<u8>,
    source: CompletionSource<BufResult>,
    receive: u64,
}

/// The ring, shared by those who submit and the reaper.
struct Ring {
    uring: IoUring,
    submitting: Mutex<()>,
    in_flight: Mutex<HashMap<u64, InFlight>>,
    /// The socket's number in the watchdog's records.
    socket: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ring {
    /// Starts a receive into `buffer` and returns its completion.
    fn receive_completion(
        &self,
        fd: RawFd,
        mut buffer: Vec<u8>,
        continuations: Continuations,
    ) -> Completion<BufResult> {
        let (source, completion) = completion_source(continuations);
        let receive = waits::receive_started(self.socket);
        waits::receive_now(
            receive,
            ReceiveState::Pending {
                delivered_by: REAPER_THREAD_NAME.into(),
            },
        );
        source.completes(WaitsFor::Receive(receive));
        let entry = opcode::Recv::new(types::Fd(fd), buffer.as_mut_ptr(), buffer.len() as u32)
            .build()
            .user_data(receive);
        lock(&self.in_flight).insert(
            receive,
            InFlight {
                buffer,
                source,
                receive,
            },
        );
        if !self.push(entry) {
            if let Some(op) = lock(&self.in_flight).remove(&receive) {
                let _ = op
                    .source
                    .set_result((Err(io::Error::other("not submitted")), op.buffer));
            }
        }
        completion
    }

    /// Pushes one entry and submits it; false if it could not be queued.
    fn push(&self, entry: io_uring::squeue::Entry) -> bool {
        let _one_producer = lock(&self.submitting);
        // SAFETY: the submission queue is only used under `submitting`.
        let mut queue = unsafe { self.uring.submission_shared() };
        // SAFETY: a receive's buffer stays in `in_flight` until its
        // completion is reaped, so it is valid while the kernel may write
        // it; a no-op points to nothing.
        let pushed = unsafe { queue.push(&entry) }.is_ok();
        drop(queue);
        // Once queued, the entry goes with this submission or a later one:
        // its buffer stays in the table either way.
        if pushed {
            let _ = self.uring.submit();
        }
        pushed
    }

    /// Tells the reaper to return once it reaps this no-op.
    fn stop_reaper(&self) {
        self.push(opcode::Nop::new().build().user_data(STOP));
    }

    // ANCHOR: reaper
    /// The reaper: waits for completions and completes their sources here,
    /// on this thread. An inline continuation runs inside `set_result`.
    fn reap(&self) {
        loop {
            // SAFETY: waits for one completion, submits nothing, and passes
            // no argument.
            let waited = unsafe {
                self.uring.submitter().enter::<libc::sigset_t>(
                    0,
                    1,
                    io_uring::EnterFlags::GETEVENTS.bits(),
                    None,
                )
            };
            if waited.is_err() {
                continue; // interrupted: wait again
            }
            // SAFETY: only this thread reads the completion queue.
            let completed: Vec<_> = unsafe { self.uring.completion_shared() }.collect();
            for cqe in completed {
                if cqe.user_data() == STOP {
                    return;
                }
                let Some(op) = lock(&self.in_flight).remove(&cqe.user_data()) else {
                    continue;
                };
                let result = match cqe.result() {
                    n if n < 0 => Err(io::Error::from_raw_os_error(-n)),
                    n => Ok(n as usize),
                };
                let _completing =
                    waits::activity(format!("the completion of receive #{}", op.receive));
                waits::receive_now(op.receive, ReceiveState::Delivered);
                let _ = op.source.set_result((result, op.buffer));
            }
        }
    }
    // ANCHOR_END: reaper
}

// ANCHOR: consumer
/// Receives one reading: its header, then, in the continuation, its body,
/// waited for there.
fn receive_reading(
    ring: Arc<Ring>,
    fd: RawFd,
    continuations: Continuations,
    done: Sender<io::Result<Reading>>,
) {
    let header = ring.receive_completion(fd, vec![0; HEADER_LEN], continuations);
    header.on_completed(move |header| {
        // Inline mode: this runs inside `set_result`, on the reaper.
        let body = ring.receive_completion(fd, vec![0; READING_LEN], continuations);
        let body = body.wait(); // blocks this thread until the body arrives
        let _ = done.send(decode(header, body));
    });
}
// ANCHOR_END: consumer

/// The reading in a header and a body, or why not.
fn decode(
    header: Result<BufResult, Abandoned>,
    body: Result<BufResult, Abandoned>,
) -> io::Result<Reading> {
    let (header_len, header) = header.map_err(io::Error::other)?;
    let (body_len, body) = body.map_err(io::Error::other)?;
    if header_len? != HEADER_LEN || body_len? != READING_LEN {
        return Err(io::Error::other("a short frame"));
    }
    payload_length([header[0], header[1]])?;
    Ok(Reading::decode(&body)?)
}

/// Waits until a receive started after `receive` is in flight: the sensor
/// sends the body only once the server waits for it.
fn wait_for_receive_after(ring: &Ring, receive: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if lock(&ring.in_flight).keys().any(|&later| later > receive) {
            return true;
        }
        thread::sleep(Duration::from_millis(1));
    }
    false
}

/// A sensor sends one reading, header first; the body follows once the
/// server waits for it.
fn scenario(continuations: Continuations) -> io::Result<Reading> {
    let ring = Arc::new(Ring {
        uring: ring_or_exit(16),
        submitting: Mutex::new(()),
        in_flight: Mutex::new(HashMap::new()),
        socket: 1,
    });
    let reaper = Arc::clone(&ring);
    thread::Builder::new()
        .name(REAPER_THREAD_NAME.into())
        .spawn(move || reaper.reap())?;
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let server = TcpStream::connect(listener.local_addr()?)?;
    let (mut sensor, _) = listener.accept()?;
    let frame = Reading {
        sensor: 7,
        sequence: 1,
        millidegrees: 21_500,
    }
    .encode();
    let (done, result) = mpsc::channel();
    receive_reading(Arc::clone(&ring), server.as_raw_fd(), continuations, done);
    let header = waits::last_receive_started_here().expect("the header's receive started");
    sensor.write_all(&frame[..HEADER_LEN])?;
    assert!(
        wait_for_receive_after(&ring, header),
        "the body's receive started"
    );
    sensor.write_all(&frame[HEADER_LEN..])?;
    let waits_for = WaitsFor::Thread(REAPER_THREAD_NAME.into());
    let reading = waits::blocking("`Receiver::recv`", waits_for, || result.recv());
    ring.stop_reaper(); // both receives are complete: no buffer is in flight
    reading.map_err(io::Error::other)?
}

fn main() {
    let continuations = if std::env::args().any(|a| a == "--asynchronous") {
        println!("continuations are queued to a pool");
        Continuations::Asynchronous
    } else {
        println!("continuations run inline, on the reaper");
        Continuations::Inline
    };
    let reading = awd::watchdog::run("server", DEADLOCK_LIMIT, move || scenario(continuations));
    println!("received {reading:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    /// True where io_uring works; otherwise the test says it is skipped,
    /// by name (a failure with `CI=true`).
    fn io_uring_or_skip(test: &str) -> bool {
        match IoUring::new(2) {
            Ok(_) => true,
            Err(e) => {
                let line = format!("skipped: {test}: io_uring is unavailable here: {e}");
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{line} (CI=true)"
                );
                let _ = writeln!(io::stderr(), "{line}");
                false
            }
        }
    }

    #[test]
    fn inline_continuations_deadlock_the_reaper_every_time() {
        let _limit = TestLimit::seconds(20);
        if !io_uring_or_skip("inline_continuations_deadlock_the_reaper_every_time") {
            return;
        }
        for _ in 0..3 {
            let outcome = watch("server", DEADLOCK_LIMIT, || scenario(Continuations::Inline));
            assert!(outcome.is_deadlock(), "{outcome:?}");
            let Outcome::Stuck { diagnosis, .. } = outcome else {
                unreachable!("a deadlock is stuck");
            };
            let text = diagnosis.to_string();
            assert!(
                text.contains("thread `uring-reaper`, inside the completion of receive"),
                "{text}"
            );
            assert!(text.contains("`uring-reaper` → `uring-reaper`"), "{text}");
        }
    }

    #[test]
    fn asynchronous_continuations_receive_the_reading() {
        let _limit = TestLimit::seconds(20);
        if !io_uring_or_skip("asynchronous_continuations_receive_the_reading") {
            return;
        }
        for _ in 0..20 {
            let outcome = watch("server", Duration::from_secs(5), || {
                scenario(Continuations::Asynchronous)
            });
            let reading = outcome.completed().expect("completes").expect("a reading");
            assert_eq!(reading.millidegrees, 21_500);
        }
    }

    use awd::watchdog::Outcome;
}
