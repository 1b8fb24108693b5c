//! The drop test: receives are started on io_uring and their futures
//! dropped, thousands of times, in the three orders a drop can meet: before
//! any byte came, after the receive's completion was queued but not reaped,
//! and after a poll took it. An allocator that
//! watches the receive buffers counts every one allocated and freed, and
//! checks two things the ring's own records cannot prove:
//!
//! - no buffer is freed while the kernel owns it (submitted, completion
//!   not yet reaped);
//! - no buffer is written after it was freed: a freed buffer is filled with
//!   a pattern and held in quarantine until the end, and a write by the
//!   kernel, which no user-space checker sees, would change the pattern.
//!
//! `-- --free-on-drop` plants the bug the owned buffers prevent: a dropped
//! receive frees its buffer at once, without a cancel. `-- --rounds N`
//! changes the number of receives; `-- --no-quarantine` gives freed buffers
//! back at once, for a run under Valgrind or AddressSanitizer.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::future::Future;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

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

// ANCHOR: checker
/// The size of every receive buffer: no other allocation of the program has
/// it, so the allocator can tell the buffers apart.
const BUFFER_LEN: usize = 313;
/// What a freed buffer is filled with.
const FREED: u8 = 0xA5;
/// How many freed buffers the quarantine holds.
const QUARANTINE: usize = 1 << 15;

/// Buffers the kernel owns right now (their addresses; 0 is a free slot).
static KERNEL_OWNS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static FREED_COUNT: AtomicUsize = AtomicUsize::new(0);
static FREED_WHILE_KERNEL_OWNS: AtomicUsize = AtomicUsize::new(0);
static QUARANTINED: [AtomicUsize; QUARANTINE] = [const { AtomicUsize::new(0) }; QUARANTINE];
static NEXT_QUARANTINED: AtomicUsize = AtomicUsize::new(0);
/// Off with `--no-quarantine`: freed buffers go back to the system at once,
/// for a run under Valgrind or AddressSanitizer, which keep freed memory in
/// quarantines of their own.
static HOLD_FREED: AtomicBool = AtomicBool::new(true);

/// The system's allocator, watching the receive buffers.
struct WatchingAllocator;

// SAFETY: every request is passed to the system allocator with the same
// layout; a freed buffer kept in quarantine is simply never reused, which
// the contract allows, and it is written only within its own layout.
unsafe impl GlobalAlloc for WatchingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() == BUFFER_LEN {
            ALLOCATED.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's layout, unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, at: *mut u8, layout: Layout) {
        if layout.size() == BUFFER_LEN {
            FREED_COUNT.fetch_add(1, Ordering::Relaxed);
            let address = at as usize;
            if KERNEL_OWNS
                .iter()
                .any(|slot| slot.load(Ordering::SeqCst) == address)
            {
                FREED_WHILE_KERNEL_OWNS.fetch_add(1, Ordering::SeqCst);
            }
            let slot = NEXT_QUARANTINED.fetch_add(1, Ordering::Relaxed);
            if HOLD_FREED.load(Ordering::Relaxed) && slot < QUARANTINE {
                // SAFETY: the block is the caller's, `BUFFER_LEN` bytes long,
                // and no longer used by the program.
                unsafe { at.write_bytes(FREED, BUFFER_LEN) };
                QUARANTINED[slot].store(address, Ordering::Release);
                return;
            }
        }
        // SAFETY: the caller's block and layout, unchanged.
        unsafe { System.dealloc(at, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: WatchingAllocator = WatchingAllocator;

/// Notes that the kernel owns the buffer at `at` (a submitted receive).
fn kernel_owns(at: *const u8) {
    let address = at as usize;
    let free = KERNEL_OWNS.iter().find(|slot| {
        slot.compare_exchange(0, address, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    });
    assert!(
        free.is_some(),
        "more receives in flight than the checker tracks"
    );
}

/// Notes that the kernel gave the buffer at `at` back (its completion).
fn kernel_done(at: *const u8) {
    let address = at as usize;
    for slot in &KERNEL_OWNS {
        let _ = slot.compare_exchange(address, 0, Ordering::SeqCst, Ordering::SeqCst);
    }
}

/// Freed buffers in quarantine whose pattern something overwrote.
fn written_after_free() -> usize {
    let held = NEXT_QUARANTINED.load(Ordering::Acquire).min(QUARANTINE);
    QUARANTINED[..held]
        .iter()
        .map(|slot| slot.load(Ordering::Acquire))
        .filter(|&address| address != 0)
        .filter(|&address| {
            // SAFETY: a quarantined block is never returned to the system
            // while the program runs, and is `BUFFER_LEN` bytes long.
            let bytes = unsafe { std::slice::from_raw_parts(address as *const u8, BUFFER_LEN) };
            bytes.iter().any(|&b| b != FREED)
        })
        .count()
}
// ANCHOR_END: checker

/// What an operation gives back.
type BufResult = (io::Result<usize>, Vec<u8>);

enum InFlight {
    Awaited { buffer: Vec<u8> },
    Done { result: i32, buffer: Vec<u8> },
    Parked { buffer: Vec<u8> },
}

const CANCEL: u64 = u64::MAX;

/// How the receives ended.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Endings {
    /// The cancel stopped it: its completion carried `-ECANCELED`.
    pub cancelled: usize,
    /// Its completion was queued, not yet reaped, when the future was
    /// dropped: the bytes are in the parked buffer, freed when it is reaped.
    pub completed_after_drop: usize,
    /// A poll took its completion: the future gave the buffer back, and
    /// was dropped finished.
    pub finished: usize,
}

struct State {
    in_flight: HashMap<u64, InFlight>,
    next_id: u64,
    endings: Endings,
}

/// The ring of Listing 13-3, reaped by hand instead of by a driver task,
/// with the checker's two notes at submission and completion.
struct Ring {
    uring: IoUring,
    state: Mutex<State>,
    free_on_drop: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Ring {
    fn push(&self, _locked: &mut State, entry: io_uring::squeue::Entry) -> io::Result<()> {
        // SAFETY: every queue is made under `state`, which the caller holds.
        let mut queue = unsafe { self.uring.submission_shared() };
        // SAFETY: a receive's buffer stays in `in_flight` until its
        // completion is reaped; a cancel names no buffer. (Unless the bug
        // is planted: that is what the checker must catch.)
        let pushed = unsafe { queue.push(&entry) };
        drop(queue);
        pushed.map_err(|_| io::Error::other("the submission queue is full"))?;
        // Queued: a failed `submit` leaves it for the next one.
        let _ = self.uring.submit();
        Ok(())
    }

    fn recv(self: &Arc<Self>, fd: RawFd, mut buffer: Vec<u8>) -> Operation {
        let mut state = lock(&self.state);
        let id = state.next_id;
        state.next_id += 1;
        let entry = opcode::Recv::new(types::Fd(fd), buffer.as_mut_ptr(), buffer.len() as u32)
            .build()
            .user_data(id);
        kernel_owns(buffer.as_ptr());
        state.in_flight.insert(id, InFlight::Awaited { buffer });
        self.push(&mut state, entry).expect("submitted");
        Operation {
            ring: Arc::clone(self),
            id,
            finished: false,
        }
    }

    /// Takes every completion off the queue.
    fn reap(&self) {
        let mut state = lock(&self.state);
        // SAFETY: the completion queue is only read under `state`.
        let completed: Vec<_> = unsafe { self.uring.completion_shared() }.collect();
        for cqe in completed {
            let id = cqe.user_data();
            match state.in_flight.remove(&id) {
                Some(InFlight::Awaited { buffer }) => {
                    kernel_done(buffer.as_ptr());
                    let result = cqe.result();
                    state
                        .in_flight
                        .insert(id, InFlight::Done { result, buffer });
                }
                Some(InFlight::Parked { buffer }) => {
                    kernel_done(buffer.as_ptr());
                    if cqe.result() == -libc::ECANCELED {
                        state.endings.cancelled += 1;
                    } else {
                        state.endings.completed_after_drop += 1;
                    }
                    drop(buffer); // the kernel is done with it: now, not before
                }
                Some(done) => {
                    state.in_flight.insert(id, done);
                }
                None => {}
            }
        }
    }

    /// Waits, a bounded time, until the completion queue holds an entry, and
    /// takes none: the peer's byte has completed a receive.
    fn wait_until_something_completes(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            let state = lock(&self.state);
            // SAFETY: the completion queue is only read under `state`; this
            // view looks at its length and takes nothing off it.
            let queued = !unsafe { self.uring.completion_shared() }.is_empty();
            drop(state);
            if queued {
                return;
            }
            std::thread::yield_now();
        }
    }

    /// Waits until the kernel owns no buffer of ours.
    fn drain(&self) {
        loop {
            self.reap();
            let owned = lock(&self.state)
                .in_flight
                .values()
                .any(|op| !matches!(op, InFlight::Done { .. }));
            if !owned {
                return;
            }
            let _ = self.uring.submit_and_wait(1);
        }
    }
}

/// A receive in flight, as in Listing 13-3.
struct Operation {
    ring: Arc<Ring>,
    id: u64,
    finished: bool,
}

impl Future for Operation {
    type Output = BufResult;

    fn poll(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<BufResult> {
        self.ring.reap();
        let mut state = lock(&self.ring.state);
        match state.in_flight.remove(&self.id) {
            Some(InFlight::Done { result, buffer }) => {
                state.endings.finished += 1;
                drop(state);
                self.finished = true;
                let result = match result {
                    n if n < 0 => Err(io::Error::from_raw_os_error(-n)),
                    n => Ok(n as usize),
                };
                Poll::Ready((result, buffer))
            }
            Some(op) => {
                state.in_flight.insert(self.id, op);
                Poll::Pending
            }
            None => unreachable!("taken only when finished"),
        }
    }
}

// ANCHOR: drop
impl Drop for Operation {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = lock(&self.ring.state);
        match state.in_flight.remove(&self.id) {
            Some(InFlight::Awaited { buffer }) if self.ring.free_on_drop => {
                drop(buffer); // the bug: the kernel still owns it
            }
            Some(InFlight::Awaited { buffer }) => {
                state.in_flight.insert(self.id, InFlight::Parked { buffer });
                let cancel = opcode::AsyncCancel::new(self.id).build().user_data(CANCEL);
                let _ = self.ring.push(&mut state, cancel);
            }
            Some(InFlight::Done { buffer, .. }) => {
                state.endings.completed_after_drop += 1;
                drop(buffer); // reaped, never taken: the kernel is done
            }
            _ => {}
        }
    }
}
// ANCHOR_END: drop

/// What a run counted.
#[derive(Debug)]
pub struct Report {
    pub dropped: usize,
    pub endings: Endings,
    pub allocated: usize,
    pub freed: usize,
    pub freed_while_kernel_owns: usize,
    pub written_after_free: usize,
}

// ANCHOR: run
/// Starts `rounds` receives and drops every future, in three ways by
/// turns: with nothing sent (the cancel stops it); just after the
/// peer sent a byte (its completion is queued, not yet reaped); and after
/// a poll that took that completion. Then the peer sends a few more bytes,
/// which only a receive wrongly left armed could take.
fn run(rounds: usize, free_on_drop: bool) -> io::Result<Report> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    let ours = TcpStream::connect(listener.local_addr()?)?;
    let (mut peer, _) = listener.accept()?;
    let ring = Arc::new(Ring {
        uring: ring_or_exit(256),
        state: Mutex::new(State {
            in_flight: HashMap::new(),
            next_id: 1,
            endings: Endings::default(),
        }),
        free_on_drop,
    });
    let mut context = Context::from_waker(Waker::noop());
    for round in 0..rounds {
        ring.reap(); // the queue is empty from here
        let mut receive = ring.recv(ours.as_raw_fd(), vec![0; BUFFER_LEN]);
        let _ = Pin::new(&mut receive).poll(&mut context);
        if round % 3 != 0 {
            peer.write_all(b"x")?;
            ring.wait_until_something_completes();
        }
        if round % 3 == 2 {
            let _ = Pin::new(&mut receive).poll(&mut context);
        }
        drop(receive); // mid-flight, unless the last poll finished it
    }
    for _ in 0..8 {
        peer.write_all(b"y")?;
        ring.reap();
    }
    if !free_on_drop {
        ring.drain(); // every completion, before anything is counted
    }
    let endings = lock(&ring.state).endings;
    Ok(Report {
        dropped: rounds,
        endings,
        allocated: ALLOCATED.load(Ordering::SeqCst),
        freed: FREED_COUNT.load(Ordering::SeqCst),
        freed_while_kernel_owns: FREED_WHILE_KERNEL_OWNS.load(Ordering::SeqCst),
        written_after_free: written_after_free(),
    })
}
// ANCHOR_END: run

fn main() {
    let free_on_drop = std::env::args().any(|a| a == "--free-on-drop");
    if std::env::args().any(|a| a == "--no-quarantine") {
        HOLD_FREED.store(false, Ordering::Relaxed);
    }
    if free_on_drop {
        println!("the bug is planted: a dropped receive frees its buffer at once");
    }
    // With the bug, receives stay armed in the kernel: fewer rounds.
    let args: Vec<String> = std::env::args().collect();
    let asked = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|at| args.get(at + 1)?.parse().ok());
    let rounds = asked.unwrap_or(if free_on_drop { 200 } else { 10_000 });
    let report = match run(rounds, free_on_drop) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("the drop test failed: {e}");
            std::process::exit(1);
        }
    };
    let e = report.endings;
    println!("receives started and dropped: {}", report.dropped);
    println!("  stopped by the cancel (-ECANCELED): {}", e.cancelled);
    println!(
        "  completed, reaped after the drop (bytes in the parked buffer): {}",
        e.completed_after_drop
    );
    println!(
        "  finished first (a poll took the buffer back): {}",
        e.finished
    );
    println!(
        "buffers allocated: {}, freed: {}, still allocated: {}",
        report.allocated,
        report.freed,
        report.allocated - report.freed
    );
    println!(
        "freed while the kernel owned them: {}",
        report.freed_while_kernel_owns
    );
    println!(
        "written after they were freed: {}",
        report.written_after_free
    );
    let sound = report.freed_while_kernel_owns == 0
        && report.written_after_free == 0
        && report.allocated == report.freed;
    if !sound {
        println!("the checker found buffers misused");
        std::process::exit(1);
    }
}
