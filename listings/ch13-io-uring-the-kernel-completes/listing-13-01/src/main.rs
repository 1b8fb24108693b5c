//! The reaper bridge: receives and sends go to the kernel through io_uring's
//! submission queue, and one thread of ours, the reaper, waits on the
//! completion queue and completes a completion source per operation. Each
//! operation owns its buffer until its completion arrives; a future dropped
//! before then asks the kernel to cancel, and its buffer stays parked until
//! the completion that follows.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::thread::{self, JoinHandle};

use awd::completion_source::{completion_source, Completion, CompletionSource, Continuations};
use io_uring::{opcode, types, IoUring};

// ANCHOR: unavailable
/// The exit status of a listing that found no io_uring: 77, which test
/// drivers read as "skipped".
pub const UNAVAILABLE_EXIT_CODE: i32 = 77;

/// A ring of `entries` entries, or one clear line and exit status 77 when
/// the kernel has no io_uring (ENOSYS) or a seccomp filter or
/// `kernel.io_uring_disabled` refuses it (EPERM).
pub fn ring_or_exit(entries: u32) -> IoUring {
    match IoUring::new(entries) {
        Ok(ring) => ring,
        Err(e) => {
            eprintln!("io_uring is unavailable here: io_uring_setup failed: {e}");
            std::process::exit(UNAVAILABLE_EXIT_CODE);
        }
    }
}
// ANCHOR_END: unavailable

// ANCHOR: ring
// ANCHOR: owned
/// What an operation gives back: its result and the caller's buffer.
pub type BufResult = (io::Result<usize>, Vec<u8>);

/// An operation the kernel has been given. Its buffer lives here, not in
/// the future, so that dropping the future cannot free memory the kernel
/// may still write.
enum InFlight {
    /// Someone awaits it: the reaper completes this source.
    Awaited {
        buffer: Vec<u8>,
        source: CompletionSource<BufResult>,
    },
    /// Its future was dropped: the buffer waits here for the completion,
    /// and is freed only then.
    Parked { buffer: Vec<u8> },
}
// ANCHOR_END: owned

/// The `user_data` of cancel requests, whose own completions say only
/// whether the cancel found its target.
const CANCEL: u64 = u64::MAX;
/// The `user_data` of the no-op that tells the reaper to stop.
const STOP: u64 = u64::MAX - 1;

/// The name of the thread that reaps completions.
pub const REAPER_THREAD_NAME: &str = "uring-reaper";

/// One io_uring shared by the tasks that submit and the reaper.
pub struct Ring {
    uring: IoUring,
    /// Held while an entry is pushed and submitted: the submission queue
    /// has one producer at a time.
    submitting: Mutex<()>,
    in_flight: Mutex<HashMap<u64, InFlight>>,
    next_id: AtomicU64,
    continuations: Continuations,
    /// The thread that completed the last operation, for the output.
    last_completer: Mutex<String>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ring {
    /// A ring whose completions run continuations as `continuations` says
    /// (`Asynchronous`: the waker bridge; a waiting task is only woken).
    pub fn new(uring: IoUring, continuations: Continuations) -> Arc<Ring> {
        Arc::new(Ring {
            uring,
            submitting: Mutex::new(()),
            in_flight: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            continuations,
            last_completer: Mutex::new(String::new()),
        })
    }

    /// Pushes one entry and submits it. An error means that the entry was
    /// not queued (the queue was full). Once it is queued, the kernel may
    /// take it at any submission: an entry that this `submit` fails to hand
    /// over goes with the next one, and its buffer stays where it is.
    fn push(&self, entry: io_uring::squeue::Entry) -> io::Result<()> {
        let _one_producer = lock(&self.submitting);
        // SAFETY: every use of the submission queue is under `submitting`,
        // so no other `SubmissionQueue` exists while this one does.
        let mut queue = unsafe { self.uring.submission_shared() };
        // SAFETY: the entry's buffer, if it has one, is kept in `in_flight`
        // until its completion is reaped, so it stays valid for as long as
        // the kernel may use it (see `start`).
        let pushed = unsafe { queue.push(&entry) };
        drop(queue); // publishes the entry to the kernel
        if pushed.is_err() {
            return Err(io::Error::other("the submission queue is full"));
        }
        let _ = self.uring.submit();
        Ok(())
    }

    // ANCHOR: start
    /// Hands `buffer` to the kernel for the operation `entry` builds, and
    /// returns the completion its reaper will complete.
    fn start(
        self: &Arc<Self>,
        mut buffer: Vec<u8>,
        entry: impl FnOnce(*mut u8, u32) -> io_uring::squeue::Entry,
    ) -> Operation {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (source, completion) = completion_source(self.continuations);
        // The heap block of a Vec does not move when the Vec moves into the
        // table: this pointer stays valid until the entry is removed.
        let entry = entry(buffer.as_mut_ptr(), buffer.len() as u32).user_data(id);
        lock(&self.in_flight).insert(id, InFlight::Awaited { buffer, source });
        if let Err(e) = self.push(entry) {
            // Never queued: the buffer comes straight back.
            if let Some(InFlight::Awaited { buffer, source }) = lock(&self.in_flight).remove(&id) {
                let _ = source.set_result((Err(e), buffer));
            }
        }
        Operation {
            ring: Arc::clone(self),
            id,
            completion: Some(completion),
        }
    }

    /// Receives into `buffer`; the future gives the buffer back.
    pub fn recv(self: &Arc<Self>, fd: RawFd, buffer: Vec<u8>) -> Operation {
        self.start(buffer, |at, len| {
            opcode::Recv::new(types::Fd(fd), at, len).build()
        })
    }

    /// Sends `buffer`; the future gives it back.
    pub fn send(self: &Arc<Self>, fd: RawFd, buffer: Vec<u8>) -> Operation {
        self.start(buffer, |at, len| {
            opcode::Send::new(types::Fd(fd), at, len).build()
        })
    }
    // ANCHOR_END: start

    // ANCHOR: reaper
    /// The reaper's loop: waits for completions and hands each one to its
    /// completion source, on this thread.
    fn reap(&self) {
        let mut stopping = false;
        loop {
            if stopping && lock(&self.in_flight).is_empty() {
                return;
            }
            // SAFETY: waits for one completion and submits nothing; no
            // signal mask is passed, so there is no argument to outlive.
            let waited = unsafe {
                self.uring.submitter().enter::<libc::sigset_t>(
                    0,
                    1,
                    io_uring::EnterFlags::GETEVENTS.bits(),
                    None,
                )
            };
            if let Err(e) = waited {
                if e.kind() != io::ErrorKind::Interrupted {
                    eprintln!("the reaper stops: {e}");
                    return;
                }
            }
            // SAFETY: only this thread reads the completion queue.
            let completed: Vec<_> = unsafe { self.uring.completion_shared() }.collect();
            for cqe in completed {
                match cqe.user_data() {
                    CANCEL => {}
                    STOP => stopping = true,
                    id => self.complete(id, cqe.result()),
                }
            }
        }
    }

    fn complete(&self, id: u64, result: i32) {
        let result = if result < 0 {
            Err(io::Error::from_raw_os_error(-result))
        } else {
            Ok(result as usize)
        };
        *lock(&self.last_completer) = here();
        // The kernel is done with this buffer: only now may it move on.
        let finished = lock(&self.in_flight).remove(&id);
        match finished {
            Some(InFlight::Awaited { buffer, source }) => {
                let _ = source.set_result((result, buffer));
            }
            Some(InFlight::Parked { buffer }) => drop(buffer),
            None => {}
        }
    }
    // ANCHOR_END: reaper

    /// Starts the reaper thread; dropping the handle cancels what is still
    /// in flight, waits for every completion, and stops it.
    pub fn start_reaper(self: &Arc<Self>) -> io::Result<Reaper> {
        let ring = Arc::clone(self);
        let thread = thread::Builder::new()
            .name(REAPER_THREAD_NAME.into())
            .spawn(move || ring.reap())?;
        Ok(Reaper {
            ring: Arc::clone(self),
            thread: Some(thread),
        })
    }

    /// The thread that completed the last operation.
    pub fn last_completer(&self) -> String {
        lock(&self.last_completer).clone()
    }

    /// How many operations the kernel still owns a buffer for.
    pub fn in_flight(&self) -> usize {
        lock(&self.in_flight).len()
    }
}

impl Drop for Ring {
    /// The last handle is going, and no reaper runs (it holds a handle):
    /// cancel what the kernel still owns and wait for each completion here,
    /// so that no buffer is freed under the kernel.
    fn drop(&mut self) {
        let in_flight = self
            .in_flight
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for id in in_flight.keys() {
            let cancel = opcode::AsyncCancel::new(*id).build().user_data(CANCEL);
            // SAFETY: `&mut self`: no other queue exists; a cancel names no
            // buffer.
            while unsafe { self.uring.submission_shared().push(&cancel) }.is_err() {
                // The queue is full: hand it to the kernel, then push again.
                if self.uring.submit().is_err() {
                    break;
                }
            }
        }
        let mut failures = 0;
        while !in_flight.is_empty() {
            match self.uring.submit_and_wait(1) {
                Ok(_) => failures = 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    failures += 1;
                    if failures == 100 {
                        // The kernel may still write into these buffers:
                        // leaking them is the one safe thing left.
                        eprintln!("io_uring: cannot wait for the operations still in flight ({e}); their buffers are leaked");
                        for owned in in_flight.drain() {
                            std::mem::forget(owned);
                        }
                        return;
                    }
                    continue;
                }
            }
            // SAFETY: `&mut self`: no other reader of the queue.
            for cqe in unsafe { self.uring.completion_shared() } {
                in_flight.remove(&cqe.user_data());
            }
        }
    }
}

/// The running reaper thread.
pub struct Reaper {
    ring: Arc<Ring>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        let ids: Vec<u64> = lock(&self.ring.in_flight).keys().copied().collect();
        for id in ids {
            let _ = self
                .ring
                .push(opcode::AsyncCancel::new(id).build().user_data(CANCEL));
        }
        let _ = self.ring.push(opcode::Nop::new().build().user_data(STOP));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ANCHOR: cancel
/// A receive or send in flight. Awaiting it gives the buffer back with the
/// result; dropping it first cancels the operation, and the buffer is
/// freed when the completion that follows arrives.
pub struct Operation {
    ring: Arc<Ring>,
    id: u64,
    completion: Option<Completion<BufResult>>,
}

impl std::future::Future for Operation {
    type Output = BufResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<BufResult> {
        let completion = self.completion.as_mut().expect("polled after it finished");
        let result = std::task::ready!(Pin::new(completion).poll(cx));
        self.completion = None;
        Poll::Ready(
            result.unwrap_or_else(|abandoned| (Err(io::Error::other(abandoned)), Vec::new())),
        )
    }
}

impl Drop for Operation {
    fn drop(&mut self) {
        if self.completion.is_none() {
            return; // finished: the caller has the buffer
        }
        let mut in_flight = lock(&self.ring.in_flight);
        // Still in the table: the kernel still owns the buffer. Park it and
        // ask for a cancel; the completion that follows frees it.
        if let Some(InFlight::Awaited { buffer, .. }) = in_flight.remove(&self.id) {
            in_flight.insert(self.id, InFlight::Parked { buffer });
            drop(in_flight);
            let cancel = opcode::AsyncCancel::new(self.id).build().user_data(CANCEL);
            let _ = self.ring.push(cancel);
        }
        // Not in the table: the completion came first, and the buffer is in
        // the completion, freed with it.
    }
}
// ANCHOR_END: cancel
// ANCHOR_END: ring

/// An echo peer on loopback: a plain thread that sends back what it gets.
fn echo_peer() -> io::Result<(TcpStream, JoinHandle<()>)> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (mut peer, _) = listener.accept()?;
    client.set_nodelay(true)?;
    peer.set_nodelay(true)?;
    let echo = thread::Builder::new()
        .name("echo-peer".into())
        .spawn(move || {
            let mut buffer = [0u8; 64];
            while let Ok(n @ 1..) = peer.read(&mut buffer) {
                if peer.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        })?;
    Ok((client, echo))
}

/// The name of the thread this runs on.
fn here() -> String {
    thread::current().name().unwrap_or("unnamed").to_string()
}

// ANCHOR: main
/// Three round trips through the ring: each receive is completed by the
/// reaper, and the task resumes on the runtime's thread.
fn echo_three_times(ring: &Arc<Ring>) -> io::Result<Vec<String>> {
    let (client, echo) = echo_peer()?;
    let fd = client.as_raw_fd();
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let lines = runtime.block_on(async {
        let mut lines = Vec::new();
        let mut buffer = Vec::with_capacity(64);
        for round in 1..=3 {
            buffer.clear();
            buffer.extend_from_slice(format!("ping {round}").as_bytes());
            let (sent, mut back) = ring.send(fd, buffer).await;
            let sent = sent?;
            back.resize(64, 0);
            let (received, mut back) = ring.recv(fd, back).await;
            back.truncate(received?);
            lines.push(format!(
                "round {round}: sent {sent} bytes, got {:?} back: completed on `{}`, \
                 resumed on `{}`",
                String::from_utf8_lossy(&back),
                ring.last_completer(),
                here()
            ));
            buffer = back;
        }
        io::Result::Ok(lines)
    })?;
    drop(client);
    echo.join()
        .map_err(|_| io::Error::other("the echo peer panicked"))?;
    Ok(lines)
}

fn main() -> io::Result<()> {
    let ring = Ring::new(ring_or_exit(64), Continuations::Asynchronous);
    let reaper = ring.start_reaper()?;
    for line in echo_three_times(&ring)? {
        println!("{line}");
    }
    drop(reaper);
    println!("operations still in flight: {}", ring.in_flight());
    Ok(())
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;
    use std::time::{Duration, Instant};

    /// A ring for `test`, or `None` where io_uring is unavailable: the test
    /// then says it is skipped, by name, past libtest's capture; with
    /// `CI=true` a skip is a failure.
    fn ring_or_skip(test: &str) -> Option<IoUring> {
        match IoUring::new(64) {
            Ok(ring) => Some(ring),
            Err(e) => {
                let line = format!("skipped: {test}: io_uring is unavailable here: {e}");
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "{line} (CI=true)"
                );
                let _ = writeln!(io::stderr(), "{line}");
                None
            }
        }
    }

    #[test]
    fn every_echo_comes_back_through_the_reaper() {
        let _limit = TestLimit::seconds(20);
        let Some(uring) = ring_or_skip("every_echo_comes_back_through_the_reaper") else {
            return;
        };
        let ring = Ring::new(uring, Continuations::Asynchronous);
        let _reaper = ring.start_reaper().unwrap();
        for _ in 0..50 {
            let lines = echo_three_times(&ring).unwrap();
            assert_eq!(lines.len(), 3);
            for (round, line) in lines.iter().enumerate() {
                let expected = format!(
                    "got \"ping {}\" back: completed on `uring-reaper`, resumed on",
                    round + 1
                );
                assert!(line.contains(&expected), "{line}");
            }
        }
        assert_eq!(ring.in_flight(), 0);
    }

    #[test]
    fn a_dropped_receive_parks_its_buffer_until_the_completion_that_follows() {
        let _limit = TestLimit::seconds(20);
        let Some(uring) =
            ring_or_skip("a_dropped_receive_parks_its_buffer_until_the_completion_that_follows")
        else {
            return;
        };
        let ring = Ring::new(uring, Continuations::Asynchronous);
        // No reaper yet: nothing can complete, so the state after the drop
        // can be looked at before the cancel's completion is reaped.
        let (client, _echo) = echo_peer().unwrap();
        let receive = ring.recv(client.as_raw_fd(), vec![0; 64]);
        drop(receive);
        assert!(matches!(
            lock(&ring.in_flight).values().next(),
            Some(InFlight::Parked { .. })
        ));
        let reaper = ring.start_reaper().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while ring.in_flight() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(
            ring.in_flight(),
            0,
            "the cancelled receive's completion came"
        );
        drop(reaper);
    }
}
