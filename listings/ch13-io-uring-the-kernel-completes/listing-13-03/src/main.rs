//! The eventfd bridge: the ring's completion queue signals an eventfd
//! (`IORING_REGISTER_EVENTFD`), tokio's reactor watches that eventfd
//! (`AsyncFd`), and a driver task on the runtime reaps the completions and
//! wakes the tasks that wait for them. No thread of ours waits on the ring:
//! completions are reaped on the runtime's own thread, with no hop.

use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::thread::{self, JoinHandle};

use io_uring::{opcode, types, IoUring};
use tokio::io::unix::AsyncFd;

/// The exit status of a listing that found no io_uring.
pub const UNAVAILABLE_EXIT_CODE: i32 = 77;

/// A ring, or one clear line and exit status 77 where io_uring is missing.
pub fn ring_or_exit(entries: u32) -> IoUring {
    match IoUring::new(entries) {
        Ok(ring) => ring,
        Err(e) => {
            eprintln!("io_uring is unavailable here: io_uring_setup failed: {e}");
            std::process::exit(UNAVAILABLE_EXIT_CODE);
        }
    }
}

// ANCHOR: ring
/// What an operation gives back: its result and the caller's buffer.
pub type BufResult = (io::Result<usize>, Vec<u8>);

/// An operation the kernel owns, with its buffer.
enum InFlight {
    /// Awaited; `waker` is the waiting task's, once it has been polled.
    Awaited {
        buffer: Vec<u8>,
        waker: Option<Waker>,
    },
    /// Its completion arrived; the future takes it at its next poll.
    Done { result: i32, buffer: Vec<u8> },
    /// Its future was dropped: parked until its completion, freed then.
    Parked { buffer: Vec<u8> },
}

/// The `user_data` of cancel requests.
const CANCEL: u64 = u64::MAX;

struct State {
    in_flight: HashMap<u64, InFlight>,
    next_id: u64,
    /// The thread that reaped the last completion, for the output.
    last_reaper: String,
}

/// One io_uring whose completions are reaped on the runtime's thread.
pub struct Ring {
    uring: IoUring,
    /// Every use of the submission and completion queues is under this lock.
    state: Mutex<State>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ring {
    /// A ring with its operations' table.
    pub fn new(uring: IoUring) -> Arc<Ring> {
        Arc::new(Ring {
            uring,
            state: Mutex::new(State {
                in_flight: HashMap::new(),
                next_id: 1,
                last_reaper: String::new(),
            }),
        })
    }

    // ANCHOR: push
    /// Pushes and submits one entry; the caller holds the state's lock. An
    /// error means that the entry was not queued.
    ///
    /// The eventfd is silenced while the entry is submitted: an operation
    /// that completes during its own submission (a send, usually) is reaped
    /// by its caller right after, and a signal for it would only wake the
    /// driver for nothing. Completions that come later signal as usual.
    fn push(&self, _locked: &mut State, entry: io_uring::squeue::Entry) -> io::Result<()> {
        // SAFETY: the caller holds `state`, under which every submission
        // and completion queue is made: there is no other one.
        let (mut queue, completions) = unsafe {
            (
                self.uring.submission_shared(),
                self.uring.completion_shared(),
            )
        };
        // SAFETY: a buffer named by an entry is kept in `in_flight` until
        // its completion is reaped (see `start`); a cancel names none.
        let pushed = unsafe { queue.push(&entry) };
        drop(queue);
        pushed.map_err(|_| io::Error::other("the submission queue is full"))?;
        // Queued: the kernel may take it at any submission from now on, so
        // a failed `submit` leaves it for the next one, buffer and all.
        completions.disable_eventfd();
        let _ = self.uring.submit();
        completions.enable_eventfd();
        Ok(())
    }
    // ANCHOR_END: push

    /// Hands `buffer` to the kernel for the operation `entry` builds.
    fn start(
        self: &Arc<Self>,
        mut buffer: Vec<u8>,
        entry: impl FnOnce(*mut u8, u32) -> io_uring::squeue::Entry,
    ) -> Operation {
        let mut state = lock(&self.state);
        let id = state.next_id;
        state.next_id += 1;
        // The Vec's heap block does not move when the Vec moves into the
        // table, so this pointer stays valid while the entry is there.
        let entry = entry(buffer.as_mut_ptr(), buffer.len() as u32).user_data(id);
        state.in_flight.insert(
            id,
            InFlight::Awaited {
                buffer,
                waker: None,
            },
        );
        if let Err(e) = self.push(&mut state, entry) {
            if let Some(InFlight::Awaited { buffer, .. }) = state.in_flight.remove(&id) {
                return Operation {
                    ring: Arc::clone(self),
                    id,
                    state: OperationState::Failed(Some((Err(e), buffer))),
                };
            }
        }
        drop(state);
        // Reap what completed while the eventfd was silent (see `push`).
        self.reap();
        Operation {
            ring: Arc::clone(self),
            id,
            state: OperationState::Submitted,
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

    // ANCHOR: reap
    /// Takes every completion off the queue: an awaited operation's result
    /// is stored and its task woken, a parked buffer is freed. Wakers are
    /// called after the lock is released.
    fn reap(&self) -> usize {
        let mut wake = Vec::new();
        let mut state = lock(&self.state);
        // SAFETY: the completion queue is only read under `state`.
        let completed: Vec<_> = unsafe { self.uring.completion_shared() }.collect();
        for cqe in &completed {
            if cqe.user_data() == CANCEL {
                continue;
            }
            let id = cqe.user_data();
            match state.in_flight.remove(&id) {
                Some(InFlight::Awaited { buffer, waker }) => {
                    let result = cqe.result();
                    state
                        .in_flight
                        .insert(id, InFlight::Done { result, buffer });
                    wake.extend(waker);
                }
                Some(InFlight::Parked { buffer }) => drop(buffer),
                Some(done @ InFlight::Done { .. }) => {
                    state.in_flight.insert(id, done);
                }
                None => {}
            }
        }
        if !completed.is_empty() {
            state.last_reaper = here();
        }
        drop(state);
        for waker in wake {
            waker.wake();
        }
        completed.len()
    }
    // ANCHOR_END: reap

    /// The thread that reaped the last completion.
    pub fn last_reaper(&self) -> String {
        lock(&self.state).last_reaper.clone()
    }

    /// How many operations the kernel still owns a buffer for.
    pub fn in_flight(&self) -> usize {
        lock(&self.state)
            .in_flight
            .values()
            .filter(|op| !matches!(op, InFlight::Done { .. }))
            .count()
    }
}

impl Drop for Ring {
    /// The last handle is going: cancel what the kernel still owns and wait
    /// for each completion, so that no buffer is freed under the kernel.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        let owned: Vec<u64> = state
            .in_flight
            .iter()
            .filter(|(_, op)| !matches!(op, InFlight::Done { .. }))
            .map(|(id, _)| *id)
            .collect();
        let mut waiting = owned.len();
        for id in owned {
            let cancel = opcode::AsyncCancel::new(id).build().user_data(CANCEL);
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
        while waiting > 0 {
            match self.uring.submit_and_wait(1) {
                Ok(_) => failures = 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    failures += 1;
                    if failures == 100 {
                        // The kernel may still write into these buffers:
                        // leaking them is the one safe thing left.
                        eprintln!("io_uring: cannot wait for the operations still in flight ({e}); their buffers are leaked");
                        for owned in state.in_flight.drain() {
                            std::mem::forget(owned);
                        }
                        return;
                    }
                    continue;
                }
            }
            // SAFETY: `&mut self`: no other reader of the queue.
            for cqe in unsafe { self.uring.completion_shared() } {
                if cqe.user_data() != CANCEL && state.in_flight.remove(&cqe.user_data()).is_some() {
                    waiting -= 1;
                }
            }
        }
    }
}

// ANCHOR: eventfd
/// Registers an eventfd with the ring and returns the driver: a future to
/// spawn on the runtime, which reaps completions whenever the eventfd says
/// there are some.
pub fn driver(ring: &Arc<Ring>) -> io::Result<impl Future<Output = io::Result<()>>> {
    // SAFETY: eventfd takes no pointer; it returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by eventfd and nothing else owns it.
    let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
    ring.uring
        .submitter()
        .register_eventfd(eventfd.as_raw_fd())?;
    // SAFETY: `register` asks that the descriptor stay open and the same
    // until the `AsyncFd` is dropped: the `OwnedFd` moves into it, closes
    // only when it is dropped, and is reached only through `as_raw_fd`.
    let watched = unsafe { AsyncFd::register(eventfd) }?;
    let ring = Arc::downgrade(ring);
    Ok(async move {
        loop {
            let mut ready = watched.readable().await?;
            // Forget the readiness first, then reap: a completion posted
            // after this signals the eventfd again, and tokio's reactor,
            // registered edge-triggered, sees every signal as a new event.
            // So the counter need not be read back (it will not overflow:
            // it holds 2^64 - 2 signals).
            ready.clear_ready();
            let Some(ring) = ring.upgrade() else {
                return Ok(()); // the ring is gone
            };
            ring.reap();
        }
    })
}
// ANCHOR_END: eventfd

/// How an operation's future stands.
enum OperationState {
    Submitted,
    Failed(Option<BufResult>),
    Finished,
}

// ANCHOR: future
/// A receive or send in flight; dropped early, it parks its buffer and
/// asks the kernel to cancel.
pub struct Operation {
    ring: Arc<Ring>,
    id: u64,
    state: OperationState,
}

impl Future for Operation {
    type Output = BufResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<BufResult> {
        match &mut self.state {
            OperationState::Failed(result) => {
                let result = result.take().expect("polled after it finished");
                self.state = OperationState::Finished;
                return Poll::Ready(result);
            }
            OperationState::Finished => panic!("polled after it finished"),
            OperationState::Submitted => {}
        }
        // A send usually completes while it is submitted: look at the queue
        // before waiting for the eventfd to say so.
        self.ring.reap();
        let mut state = lock(&self.ring.state);
        match state.in_flight.remove(&self.id) {
            Some(InFlight::Done { result, buffer }) => {
                drop(state);
                self.state = OperationState::Finished;
                let result = match result {
                    n if n < 0 => Err(io::Error::from_raw_os_error(-n)),
                    n => Ok(n as usize),
                };
                Poll::Ready((result, buffer))
            }
            Some(InFlight::Awaited { buffer, .. }) => {
                let waker = Some(cx.waker().clone());
                state
                    .in_flight
                    .insert(self.id, InFlight::Awaited { buffer, waker });
                Poll::Pending
            }
            Some(parked @ InFlight::Parked { .. }) => {
                state.in_flight.insert(self.id, parked);
                unreachable!("a live future's operation is never parked")
            }
            None => unreachable!("an operation stays in the table until its future takes it"),
        }
    }
}

impl Drop for Operation {
    fn drop(&mut self) {
        if !matches!(self.state, OperationState::Submitted) {
            return;
        }
        let mut state = lock(&self.ring.state);
        match state.in_flight.remove(&self.id) {
            Some(InFlight::Awaited { buffer, .. }) => {
                // The kernel still owns the buffer: park it, ask to cancel.
                state.in_flight.insert(self.id, InFlight::Parked { buffer });
                let cancel = opcode::AsyncCancel::new(self.id).build().user_data(CANCEL);
                let _ = self.ring.push(&mut state, cancel);
                drop(state);
                // A cancel usually completes, with its target, while it is
                // submitted, and so signals nothing: reap now.
                self.ring.reap();
            }
            // Completed but not taken: the kernel is done with it.
            Some(InFlight::Done { buffer, .. }) => drop(buffer),
            _ => {}
        }
    }
}
// ANCHOR_END: future
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
/// Three round trips through the ring on a current-thread runtime: the
/// reactor sees the eventfd, the driver task reaps, the task resumes, all
/// on the runtime's one thread.
fn echo_three_times() -> io::Result<Vec<String>> {
    let (client, echo) = echo_peer()?;
    let fd = client.as_raw_fd();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let lines = runtime.block_on(async {
        let ring = Ring::new(ring_or_exit(64));
        tokio::spawn(driver(&ring)?);
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
                "round {round}: sent {sent} bytes, got {:?} back: reaped on `{}`, \
                 resumed on `{}`",
                String::from_utf8_lossy(&back),
                ring.last_reaper(),
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
    for line in echo_three_times()? {
        println!("{line}");
    }
    Ok(())
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;
    use std::time::Duration;

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
    fn every_echo_is_reaped_on_the_runtimes_thread() {
        let _limit = TestLimit::seconds(20);
        if !io_uring_or_skip("every_echo_is_reaped_on_the_runtimes_thread") {
            return;
        }
        for _ in 0..50 {
            let lines = echo_three_times().unwrap();
            assert_eq!(lines.len(), 3);
            let me = here();
            for line in lines {
                assert!(
                    line.ends_with(&format!("reaped on `{me}`, resumed on `{me}`")),
                    "{line}"
                );
            }
        }
    }

    #[test]
    fn a_receive_dropped_by_a_timeout_is_cancelled_and_its_buffer_freed_after() {
        let _limit = TestLimit::seconds(20);
        if !io_uring_or_skip(
            "a_receive_dropped_by_a_timeout_is_cancelled_and_its_buffer_freed_after",
        ) {
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, _echo) = echo_peer().unwrap();
            let ring = Ring::new(IoUring::new(16).unwrap());
            tokio::spawn(driver(&ring).unwrap());
            let receive = ring.recv(client.as_raw_fd(), vec![0; 64]);
            let timed_out = tokio::time::timeout(Duration::from_millis(20), receive).await;
            assert!(timed_out.is_err(), "nothing was sent");
            // Dropped by the timeout: parked, and freed by the completion
            // that the cancel brings.
            for _ in 0..500 {
                if ring.in_flight() == 0 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert_eq!(ring.in_flight(), 0);
        });
    }
}
