//! What io_uring's bridges cost: one-byte round trips over loopback through
//! the reaper bridge (Listing 13-1), the eventfd bridge (Listing 13-3) and
//! native tokio, against the same echo peer; unpinned, and with every
//! thread on one core. The method is Chapter 10's: slices interleaved in an
//! order that shifts, ratios to native tokio within each repeat, medians
//! over the repeats.
//!
//! - `cargo run -p listing-13-05` checks that every variant round-trips the
//!   right bytes, on both layouts (a second).
//! - `cargo bench -p listing-13-05` measures (about half a minute) and prints
//!   the two tables.
//! - `cargo run --release -p listing-13-05 -- --only eventfd` runs one
//!   variant on one core, 5,000 round trips: the run to watch with
//!   `perf stat`, `perf trace -s` or `strace -f -c`; `-- --only eventfd
//!   --unpinned` runs it unpinned.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The name of the thread this runs on.
fn here() -> String {
    thread::current().name().unwrap_or("unnamed").to_string()
}

/// Listing 13-1's ring, reaped by a thread of its own.
#[allow(dead_code)] // the copy keeps every method of the listing
mod reaper {
    use std::collections::HashMap;
    use std::io;
    use std::os::fd::RawFd;
    use std::pin::Pin;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
    use std::task::{Context, Poll};
    use std::thread::{self, JoinHandle};

    use awd::completion_source::{completion_source, Completion, CompletionSource, Continuations};
    use io_uring::{opcode, types, IoUring};

    use super::here;

    // COPY OF: listings/ch13-io-uring-the-kernel-completes/listing-13-01/src/main.rs:ring
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
                if let Some(InFlight::Awaited { buffer, source }) =
                    lock(&self.in_flight).remove(&id)
                {
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
    // COPY END
}

/// Listing 13-3's ring, reaped on the runtime's thread through an eventfd.
#[allow(dead_code)] // the copy keeps every method of the listing
mod eventfd {
    use std::collections::HashMap;
    use std::future::Future;
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::pin::Pin;
    use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
    use std::task::{Context, Poll, Waker};

    use io_uring::{opcode, types, IoUring};
    use tokio::io::unix::AsyncFd;

    use super::here;

    // COPY OF: listings/ch13-io-uring-the-kernel-completes/listing-13-03/src/main.rs:ring
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
                    if cqe.user_data() != CANCEL
                        && state.in_flight.remove(&cqe.user_data()).is_some()
                    {
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
    // COPY END
}

/// The exit status of a listing that found no io_uring.
pub const UNAVAILABLE_EXIT_CODE: i32 = 77;

/// A ring, or one clear line and exit status 77 where io_uring is missing.
fn ring_or_exit(entries: u32) -> io_uring::IoUring {
    match io_uring::IoUring::new(entries) {
        Ok(ring) => ring,
        Err(e) => {
            eprintln!("io_uring is unavailable here: io_uring_setup failed: {e}");
            std::process::exit(UNAVAILABLE_EXIT_CODE);
        }
    }
}

// ANCHOR: variants
/// The ways of doing one round trip that this listing compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// Listing 13-1: the reaper thread completes a source, which wakes the
    /// task on the runtime's thread (one hop).
    Reaper,
    /// Listing 13-3: the eventfd wakes tokio's reactor, a driver task reaps
    /// on the runtime's thread (no hop).
    Eventfd,
    /// Fix 3: tokio's `TcpStream`, on epoll.
    Tokio,
}
// ANCHOR_END: variants

pub const VARIANTS: [Variant; 3] = [Variant::Reaper, Variant::Eventfd, Variant::Tokio];

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Reaper => "reaper",
            Variant::Eventfd => "eventfd",
            Variant::Tokio => "tokio",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Variant::Reaper => "io_uring, reaper bridge",
            Variant::Eventfd => "io_uring, eventfd bridge",
            Variant::Tokio => "native tokio (epoll)",
        }
    }
}

/// Where the threads may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Unpinned,
    OneCore,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::Unpinned => "unpinned",
            Layout::OneCore => "one-core",
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A new echo peer: a blocking thread that sends back what it receives.
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

/// CPU time and context switches of the whole process so far.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    cpu: Duration,
    switches: u64,
}

impl Usage {
    fn now() -> Usage {
        // SAFETY: `rusage` is a plain C struct of integers, for which all
        // zeroes is a valid value; `getrusage` writes one through a pointer
        // to a live, exclusively borrowed one.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
            return Usage::default();
        }
        let time = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Usage {
            cpu: time(usage.ru_utime) + time(usage.ru_stime),
            switches: (usage.ru_nvcsw + usage.ru_nivcsw) as u64,
        }
    }
}

/// What one slice of one variant measured.
#[derive(Clone, Debug, Default)]
struct Samples {
    round_trips: Vec<u64>,
    wall: Duration,
    cpu: Duration,
    switches: u64,
}

/// Numbers the rounds, times them, and checks each echo.
struct Clock {
    warm_up: usize,
    total: usize,
    done: usize,
    round_start: Instant,
    timed_from: Option<(Instant, Usage)>,
    samples: Samples,
}

impl Clock {
    fn new(warm_up: usize, timed: usize) -> Clock {
        Clock {
            warm_up,
            total: warm_up + timed,
            done: 0,
            round_start: Instant::now(),
            timed_from: None,
            samples: Samples::default(),
        }
    }

    fn next_byte(&mut self) -> Option<u8> {
        if self.done == self.total {
            return None;
        }
        if self.done == self.warm_up {
            self.timed_from = Some((Instant::now(), Usage::now()));
        }
        self.round_start = Instant::now();
        Some(b'a' + (self.done % 26) as u8)
    }

    fn round_done(&mut self, sent: u8, echo: &[u8]) -> io::Result<()> {
        let took = self.round_start.elapsed();
        if echo != [sent] {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("sent {:?}, got {echo:?} back", sent as char),
            ));
        }
        if self.done >= self.warm_up {
            self.samples.round_trips.push(took.as_nanos() as u64);
        }
        self.done += 1;
        Ok(())
    }

    fn finish(&mut self) -> Samples {
        let mut samples = std::mem::take(&mut self.samples);
        if let Some((at, usage)) = self.timed_from {
            let now = Usage::now();
            samples.wall = at.elapsed();
            samples.cpu = now.cpu.saturating_sub(usage.cpu);
            samples.switches = now.switches.saturating_sub(usage.switches);
        }
        samples
    }
}

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

// ANCHOR: loops
/// Runs every round of `variant` against a fresh echo peer.
fn run(variant: Variant, clock: &mut Clock) -> io::Result<()> {
    let (stream, echo) = echo_peer()?;
    let fd = stream.as_raw_fd();
    match variant {
        Variant::Reaper => {
            let ring = reaper::Ring::new(
                ring_or_exit(64),
                awd::completion_source::Continuations::Asynchronous,
            );
            let reaper = ring.start_reaper()?;
            runtime()?.block_on(async {
                let mut buffer = Vec::with_capacity(64);
                while let Some(byte) = clock.next_byte() {
                    buffer.clear();
                    buffer.push(byte);
                    let (sent, mut back) = ring.send(fd, buffer).await;
                    sent?;
                    back.resize(64, 0);
                    let (received, mut back) = ring.recv(fd, back).await;
                    back.truncate(received?);
                    clock.round_done(byte, &back)?;
                    buffer = back;
                }
                io::Result::Ok(())
            })?;
            drop(reaper);
        }
        Variant::Eventfd => runtime()?.block_on(async {
            let ring = eventfd::Ring::new(ring_or_exit(64));
            tokio::spawn(eventfd::driver(&ring)?);
            let mut buffer = Vec::with_capacity(64);
            while let Some(byte) = clock.next_byte() {
                buffer.clear();
                buffer.push(byte);
                let (sent, mut back) = ring.send(fd, buffer).await;
                sent?;
                back.resize(64, 0);
                let (received, mut back) = ring.recv(fd, back).await;
                back.truncate(received?);
                clock.round_done(byte, &back)?;
                buffer = back;
            }
            io::Result::Ok(())
        })?,
        Variant::Tokio => runtime()?.block_on(async {
            let stream = stream.try_clone()?;
            stream.set_nonblocking(true)?;
            let mut stream = tokio::net::TcpStream::from_std(stream)?;
            let mut buffer = [0u8; 64];
            while let Some(byte) = clock.next_byte() {
                stream.write_all(&[byte]).await?;
                let n = stream.read(&mut buffer).await?;
                clock.round_done(byte, &buffer[..n])?;
            }
            io::Result::Ok(())
        })?,
    }
    // Every client has dropped its end (the tokio variant its clone): the
    // peer sees the end of the stream once `stream` goes too.
    drop(stream);
    echo.join()
        .map_err(|_| io::Error::other("the echo peer panicked"))
}
// ANCHOR_END: loops

/// Lets this thread, and every thread it starts from now on, run only on
/// `cpus` (`None`: every CPU this process was allowed at first).
fn pin(cpus: Option<&[usize]>) -> io::Result<()> {
    static ALLOWED: Mutex<Option<Vec<usize>>> = Mutex::new(None);
    let mut allowed = lock(&ALLOWED);
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `cpu_set_t` is a plain bit set, for which all zeroes is a
    // valid value (no CPU).
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if allowed.is_none() {
        // SAFETY: a pointer to a live set and its exact size; pid 0 is this
        // thread.
        if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `CPU_ISSET` reads the bit of a CPU below `CPU_SETSIZE`.
        let every =
            (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) });
        *allowed = Some(every.collect());
    }
    let cpus = cpus.unwrap_or(allowed.as_deref().unwrap_or_default());
    // SAFETY: all zeroes is a valid, empty set.
    set = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&cpu| cpu < libc::CPU_SETSIZE as usize) {
        // SAFETY: sets the bit of a CPU below `CPU_SETSIZE`.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: a pointer to a live set and its exact size; pid 0 is this
    // thread.
    if unsafe { libc::sched_setaffinity(0, size, &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts this thread, and the threads each variant starts, in `layout`.
fn enter(layout: Layout) -> io::Result<()> {
    match layout {
        Layout::Unpinned => pin(None),
        Layout::OneCore => pin(Some(&[0])),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// The measurement's shape.
const REPEATS: usize = 7;
const SLICES: usize = 10;
const WARM_UP: usize = 150;
const TIMED: usize = 1_500;

/// One variant's results in one layout, over every repeat.
#[derive(Default)]
struct Results {
    /// Per repeat: every round trip of its slices, and the totals.
    repeats: Vec<Samples>,
}

// ANCHOR: method
/// Measures every variant in `layout`: each repeat runs `SLICES` slices of
/// every variant, in an order that shifts at every slice, so that all
/// variants of a repeat share the same seconds.
fn measure(layout: Layout) -> io::Result<Vec<Results>> {
    enter(layout)?;
    let mut results: Vec<Results> = VARIANTS.iter().map(|_| Results::default()).collect();
    for _ in 0..REPEATS {
        let mut repeat: Vec<Samples> = VARIANTS.iter().map(|_| Samples::default()).collect();
        for slice in 0..SLICES {
            for k in 0..VARIANTS.len() {
                let v = (slice + k) % VARIANTS.len();
                let mut clock = Clock::new(WARM_UP, TIMED);
                run(VARIANTS[v], &mut clock)?;
                let samples = clock.finish();
                let total = &mut repeat[v];
                total.round_trips.extend(samples.round_trips);
                total.wall += samples.wall;
                total.cpu += samples.cpu;
                total.switches += samples.switches;
            }
        }
        for (v, samples) in repeat.into_iter().enumerate() {
            results[v].repeats.push(samples);
        }
    }
    enter(Layout::Unpinned)?;
    Ok(results)
}
// ANCHOR_END: method

/// Prints one layout's table: medians over the repeats, and each variant's
/// ratio to native tokio within each repeat (median, lowest–highest).
fn print_table(layout: Layout, results: &[Results]) {
    let tokio = VARIANTS
        .iter()
        .position(|&v| v == Variant::Tokio)
        .expect("tokio is measured");
    println!(
        "\n{}:\n",
        match layout {
            Layout::Unpinned => "Unpinned",
            Layout::OneCore => "On one core, every thread pinned to CPU 0",
        }
    );
    println!("| variant | round trip | × native tokio | round trips/s | switches per round trip | CPU per round trip |");
    println!("|---|--:|--:|--:|--:|--:|");
    for (v, variant) in VARIANTS.iter().enumerate() {
        let per_repeat = |f: &dyn Fn(&Samples) -> f64| -> Vec<f64> {
            results[v].repeats.iter().map(f).collect()
        };
        let round_trip = median(per_repeat(&|s| {
            median(s.round_trips.iter().map(|&n| n as f64).collect())
        }));
        let ratios: Vec<f64> = results[v]
            .repeats
            .iter()
            .zip(&results[tokio].repeats)
            .map(|(s, t)| {
                median(s.round_trips.iter().map(|&n| n as f64).collect())
                    / median(t.round_trips.iter().map(|&n| n as f64).collect())
            })
            .collect();
        let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let high = ratios.iter().copied().fold(0.0, f64::max);
        let rate = median(per_repeat(&|s| {
            s.round_trips.len() as f64 / s.wall.as_secs_f64().max(1e-9)
        }));
        let switches = median(per_repeat(&|s| {
            s.switches as f64 / s.round_trips.len().max(1) as f64
        }));
        let cpu = median(per_repeat(&|s| {
            s.cpu.as_nanos() as f64 / s.round_trips.len().max(1) as f64
        }));
        println!(
            "| {} | {:.1} µs | {:.2} ({:.2}–{:.2}) | {:.0} | {:.2} | {:.1} µs |",
            variant.label(),
            round_trip / 1000.0,
            median(ratios.clone()),
            low,
            high,
            rate,
            switches,
            cpu / 1000.0,
        );
    }
}

fn arg_after(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> io::Result<()> {
    if std::env::args().any(|a| a == "--bench") {
        let started = Instant::now();
        for layout in [Layout::Unpinned, Layout::OneCore] {
            let results = measure(layout)?;
            print_table(layout, &results);
        }
        println!(
            "\n{REPEATS} repeats of {SLICES} slices of {TIMED} timed round trips per variant and layout, in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    if let Some(name) = arg_after("--only") {
        let Some(&variant) = VARIANTS.iter().find(|v| v.name() == name) else {
            eprintln!("no variant `{name}`: reaper, eventfd or tokio");
            std::process::exit(2);
        };
        let unpinned = std::env::args().any(|a| a == "--unpinned");
        enter(if unpinned {
            Layout::Unpinned
        } else {
            Layout::OneCore
        })?;
        let mut clock = Clock::new(0, 5_000);
        run(variant, &mut clock)?;
        let samples = clock.finish();
        println!(
            "{}: {} round trips {}, median {:.1} µs",
            variant.label(),
            samples.round_trips.len(),
            if unpinned { "unpinned" } else { "on one core" },
            median(samples.round_trips.iter().map(|&n| n as f64).collect()) / 1000.0
        );
        return Ok(());
    }
    for layout in [Layout::Unpinned, Layout::OneCore] {
        enter(layout)?;
        for variant in VARIANTS {
            let mut clock = Clock::new(0, 200);
            run(variant, &mut clock)?;
            let done = clock.finish().round_trips.len();
            println!(
                "{:<9}{:<26}{done} round trips, every echo intact",
                layout.name(),
                variant.label()
            );
        }
    }
    enter(Layout::Unpinned)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn every_variant_echoes_on_both_layouts() {
        let _limit = TestLimit::seconds(30);
        if let Err(e) = io_uring::IoUring::new(2) {
            let line = format!(
                "skipped: every_variant_echoes_on_both_layouts: io_uring is unavailable here: {e}"
            );
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{line} (CI=true)"
            );
            let _ = writeln!(io::stderr(), "{line}");
            return;
        }
        for layout in [Layout::Unpinned, Layout::OneCore] {
            enter(layout).unwrap();
            for variant in VARIANTS {
                let mut clock = Clock::new(10, 100);
                run(variant, &mut clock).unwrap();
                assert_eq!(
                    clock.finish().round_trips.len(),
                    100,
                    "{variant:?} {layout:?}"
                );
            }
        }
        enter(Layout::Unpinned).unwrap();
    }
}
