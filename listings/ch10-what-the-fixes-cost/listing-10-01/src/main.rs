//! What the fixes cost: one-byte round trips over loopback through every
//! bridge of Part III, beside blocking sockets and native tokio, all against
//! the same echo peer; unpinned, and with every thread on one core; then the
//! completion primitives alone.
//!
//! - `cargo run -p listing-10-01` checks that every variant round-trips the
//!   right bytes, on both layouts (a second or two).
//! - `cargo bench -p listing-10-01` measures (under a minute on two CPUs): it prints the
//!   table and writes it to `target/costs.tsv`, which Listing 10-4 draws.
//!   (`cargo run --release -p listing-10-01 -- --bench` does the same.)
//! - `cargo run --release -p listing-10-01 -- --only waker` runs one variant
//!   (by its short name) on one core, 5,000 round trips: the run to watch
//!   with `perf sched record` or `strace -f -c`.

use std::fs;
use std::future::{poll_fn, Future};
use std::hint::black_box;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use awd::completion_source::{completion_source, Continuations};
use awd::reactor_socket::ReactorSocket;
use awd::socket::{CallbackSocket, IoThread, Received, Start, IO_THREAD_NAME};
use awd::waits::{self, ReceiveState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

// ANCHOR: variants
/// The ways of doing one round trip that this listing compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// std's blocking sockets: the floor.
    Blocking,
    /// Callbacks only: the whole client loop runs on the I/O thread.
    Callbacks,
    /// Fix 1: the callback hands `set_result` to a tokio task.
    HandOff,
    /// Fix 2 as .NET does it: the completion queues each continuation to a
    /// pool of threads (`Continuations::Asynchronous`, `awd::pool`).
    PoolContinuation,
    /// Fix 2, the way Rust does it: the callback completes the source, which
    /// wakes the task (Listing 2-3's bridge).
    Waker,
    /// The same bridge with `tokio::sync::oneshot` (Listing 2-4).
    Oneshot,
    /// The waker bridge on a socket driven by tokio's own reactor.
    ZeroHop,
    /// Fix 3: tokio's `TcpStream`, no callback API at all.
    Tokio,
}
// ANCHOR_END: variants

/// Every variant, in the order the table shows them.
pub const VARIANTS: [Variant; 8] = [
    Variant::Blocking,
    Variant::Callbacks,
    Variant::HandOff,
    Variant::PoolContinuation,
    Variant::Waker,
    Variant::Oneshot,
    Variant::ZeroHop,
    Variant::Tokio,
];

impl Variant {
    /// A short name, for the results file.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Blocking => "blocking",
            Variant::Callbacks => "callbacks",
            Variant::HandOff => "hand-off",
            Variant::PoolContinuation => "pool-continuation",
            Variant::Waker => "waker",
            Variant::Oneshot => "oneshot",
            Variant::ZeroHop => "zero-hop",
            Variant::Tokio => "tokio",
        }
    }

    /// What the table and the chart call it.
    pub fn label(self) -> &'static str {
        match self {
            Variant::Blocking => "blocking std sockets",
            Variant::Callbacks => "callbacks on the I/O thread",
            Variant::HandOff => "hand-off to a task (fix 1)",
            Variant::PoolContinuation => "continuation on a pool (fix 2)",
            Variant::Waker => "waker bridge (fix 2, Rust)",
            Variant::Oneshot => "oneshot bridge",
            Variant::ZeroHop => "zero-hop bridge",
            Variant::Tokio => "native tokio (fix 3)",
        }
    }
}

/// Where the threads may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Wherever the scheduler puts them.
    Unpinned,
    /// Every thread on CPU 0.
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

// ANCHOR: peer
/// Connects to a new echo peer: a plain blocking thread that sends back
/// whatever it receives until the stream ends. Every variant talks to one of
/// these, so they differ only in how the client waits.
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
// ANCHOR_END: peer

/// CPU time and context switches of the whole process so far: every thread,
/// finished ones included (`getrusage(RUSAGE_SELF)`).
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    cpu: Duration,
    switches: u64,
}

impl Usage {
    fn now() -> Usage {
        // SAFETY: `rusage` is a plain C struct of integers, for which all
        // zeroes is a valid value; `getrusage` writes one through a pointer to
        // a live, exclusively borrowed one, and reads nothing else.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
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

/// What one run of one variant measured.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    /// Every timed round trip, in nanoseconds.
    pub round_trips: Vec<u64>,
    /// Wall time of the timed round trips.
    pub wall: Duration,
    /// CPU time of the process during them.
    pub cpu: Duration,
    /// Context switches of the process during them.
    pub switches: u64,
}

impl Samples {
    /// Adds the round trips of another run.
    fn absorb(&mut self, other: Samples) {
        self.round_trips.extend(other.round_trips);
        self.wall += other.wall;
        self.cpu += other.cpu;
        self.switches += other.switches;
    }

    /// The median round trip, in nanoseconds.
    pub fn median(&self) -> f64 {
        median(self.round_trips.iter().map(|&ns| ns as f64).collect())
    }

    fn per_round_trip(&self, total: f64) -> f64 {
        total / self.round_trips.len().max(1) as f64
    }
}

// ANCHOR: clock
/// Numbers the rounds, times them, and checks each echo. The first
/// `warm_up` rounds are not timed.
#[derive(Debug)]
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
            samples: Samples {
                round_trips: Vec::with_capacity(timed),
                ..Samples::default()
            },
        }
    }

    /// The byte the next round sends, or `None` when every round is done.
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

    /// The round that sent `sent` got `echo` back.
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

    /// What the timed rounds measured.
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
// ANCHOR_END: clock

fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

fn aborted(why: impl std::fmt::Display) -> io::Error {
    io::Error::new(ErrorKind::ConnectionAborted, why.to_string())
}

/// Sends one byte through the callback API.
fn send_byte(socket: &CallbackSocket, byte: u8) -> io::Result<()> {
    match socket.send(vec![byte], |_| {}) {
        Start::Ready(sent) => sent.map(drop),
        // The I/O thread finishes it; the echo will tell if it failed.
        Start::Pending => Ok(()),
    }
}

// ANCHOR: bridges
/// Fix 1: the callback hands the completion to a task on the runtime, where
/// `set_result` (and any inline continuation) runs.
async fn receive_handed_off(
    socket: &CallbackSocket,
    buffer: Vec<u8>,
    runtime: &Handle,
) -> io::Result<Received> {
    let (source, completion) = completion_source(Continuations::Inline);
    let runtime = runtime.clone();
    let start = socket.receive(buffer, move |received| {
        runtime.spawn(async move {
            let _ = source.set_result(received);
        });
    });
    match start {
        Start::Ready(received) => {
            tokio::task::coop::consume_budget().await;
            Ok(received)
        }
        Start::Pending => completion.await.map_err(aborted),
    }
}

/// Listing 2-4's bridge: `oneshot` as the completion source.
async fn receive_oneshot(socket: &CallbackSocket, buffer: Vec<u8>) -> io::Result<Received> {
    let (sender, result) = oneshot::channel();
    let start = socket.receive(buffer, move |received| {
        let _ = sender.send(received);
    });
    match start {
        Start::Ready(received) => {
            tokio::task::coop::consume_budget().await;
            Ok(received)
        }
        Start::Pending => result.await.map_err(aborted),
    }
}

// COPY OF: listings/ch10-what-the-fixes-cost/listing-10-03/src/main.rs:bridge
/// The zero-hop bridge: Listing 10-3's, on a socket whose callbacks run on
/// the runtime's own thread.
async fn receive_zero_hop(socket: &ReactorSocket, buffer: Vec<u8>) -> io::Result<Received> {
    let (source, completion) = completion_source(Continuations::Asynchronous);
    let start = socket.receive(buffer, move |received| {
        let _ = source.set_result(received);
    });
    match start {
        Start::Ready(received) => {
            tokio::task::coop::consume_budget().await;
            Ok(received)
        }
        Start::Pending => completion.await.map_err(|abandoned| {
            // The socket broke its contract and dropped the callback.
            io::Error::new(ErrorKind::ConnectionAborted, abandoned)
        }),
    }
}
// COPY END
// ANCHOR_END: bridges

/// The echo of a receive, checked by the clock; gives the buffer back.
fn check_echo(clock: &mut Clock, sent: u8, received: Received) -> io::Result<Vec<u8>> {
    let n = received.result?;
    clock.round_done(sent, &received.buffer[..n])?;
    Ok(received.buffer)
}

// ANCHOR: loops
/// Runs every round of `variant` against a fresh echo peer.
fn run(variant: Variant, clock: &mut Clock) -> io::Result<()> {
    let (stream, echo) = echo_peer()?;
    match variant {
        Variant::Blocking => blocking(stream, clock)?,
        Variant::Callbacks | Variant::PoolContinuation => {
            let io = IoThread::start()?;
            chained(variant, io.adopt(stream)?, clock)?;
        }
        Variant::HandOff | Variant::Waker | Variant::Oneshot => {
            let io = IoThread::start()?;
            let socket = io.adopt(stream)?;
            let runtime = runtime()?;
            let handle = runtime.handle().clone();
            runtime.block_on(async {
                let mut buffer = vec![0u8; 64];
                while let Some(byte) = clock.next_byte() {
                    send_byte(&socket, byte)?;
                    let received = match variant {
                        Variant::HandOff => receive_handed_off(&socket, buffer, &handle).await?,
                        Variant::Waker => awd::bridge::receive(&socket, buffer).await?,
                        _ => receive_oneshot(&socket, buffer).await?,
                    };
                    buffer = check_echo(clock, byte, received)?;
                }
                io::Result::Ok(())
            })?;
        }
        Variant::ZeroHop => runtime()?.block_on(async {
            let socket = ReactorSocket::from_std(stream)?;
            let mut buffer = vec![0u8; 64];
            while let Some(byte) = clock.next_byte() {
                socket.send_all(&[byte]).await?;
                let received = receive_zero_hop(&socket, buffer).await?;
                buffer = check_echo(clock, byte, received)?;
            }
            io::Result::Ok(())
        })?,
        Variant::Tokio => runtime()?.block_on(async {
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
    // Every client above has dropped its end by now: the peer sees the end of
    // the stream and returns.
    echo.join().map_err(|_| aborted("the echo peer panicked"))
}

fn blocking(mut stream: TcpStream, clock: &mut Clock) -> io::Result<()> {
    let mut buffer = [0u8; 64];
    while let Some(byte) = clock.next_byte() {
        stream.write_all(&[byte])?;
        let n = stream.read(&mut buffer)?;
        clock.round_done(byte, &buffer[..n])?;
    }
    Ok(())
}
// ANCHOR_END: loops

// ANCHOR: chained
/// A client made of callbacks: each round starts the next one from where the
/// previous one completed. `finished` hears once, at the end.
struct Chain {
    socket: CallbackSocket,
    clock: Mutex<Clock>,
    finished: Mutex<Option<mpsc::Sender<io::Result<()>>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Chain {
    /// Sends the next byte; `None` when the chain is over.
    fn begin_round(&self) -> Option<u8> {
        let Some(byte) = lock(&self.clock).next_byte() else {
            self.finish(Ok(()));
            return None;
        };
        match send_byte(&self.socket, byte) {
            Ok(()) => Some(byte),
            Err(e) => {
                self.finish(Err(e));
                None
            }
        }
    }

    /// Checks the echo; the buffer back if the chain goes on.
    fn end_round(&self, sent: u8, received: Received) -> Option<Vec<u8>> {
        let checked = check_echo(&mut lock(&self.clock), sent, received);
        checked.map_err(|e| self.finish(Err(e))).ok()
    }

    fn finish(&self, result: io::Result<()>) {
        if let Some(finished) = lock(&self.finished).take() {
            let _ = finished.send(result);
        }
    }
}

/// Raw callbacks: the callback checks the echo and starts the next round,
/// right there on the I/O thread.
fn callback_rounds(chain: Arc<Chain>, mut buffer: Vec<u8>) {
    while let Some(byte) = chain.begin_round() {
        let next = Arc::clone(&chain);
        let start = chain.socket.receive(buffer, move |received| {
            if let Some(buffer) = next.end_round(byte, received) {
                callback_rounds(next, buffer);
            }
        });
        match start {
            Start::Pending => return, // the callback goes on
            Start::Ready(received) => match chain.end_round(byte, received) {
                Some(again) => buffer = again,
                None => return,
            },
        }
    }
}

/// Asynchronous continuations as .NET runs them: the continuation is
/// registered before the receive starts, and `set_result` queues it to the
/// support crate's continuation pool (`awd::pool::continuations()`), where a
/// pool thread runs it, whichever way the receive finishes.
fn continuation_round(chain: Arc<Chain>, buffer: Vec<u8>) {
    let Some(byte) = chain.begin_round() else {
        return;
    };
    let (source, completion) = completion_source(Continuations::Asynchronous);
    let next = Arc::clone(&chain);
    completion.on_completed(move |result| match result {
        Ok(received) => {
            if let Some(buffer) = next.end_round(byte, received) {
                continuation_round(next, buffer);
            }
        }
        Err(abandoned) => next.finish(Err(aborted(abandoned))),
    });
    let completer = source.clone();
    let start = chain.socket.receive(buffer, move |received| {
        let _ = completer.set_result(received);
    });
    if let Start::Ready(received) = start {
        let _ = source.set_result(received);
    }
}
// ANCHOR_END: chained

fn chained(variant: Variant, socket: CallbackSocket, clock: &mut Clock) -> io::Result<()> {
    let (finished, outcome) = mpsc::channel();
    let chain = Arc::new(Chain {
        socket,
        clock: Mutex::new(Clock::new(0, 0)),
        finished: Mutex::new(Some(finished)),
    });
    std::mem::swap(clock, &mut *lock(&chain.clock));
    if variant == Variant::Callbacks {
        callback_rounds(Arc::clone(&chain), vec![0u8; 64]);
    } else {
        continuation_round(Arc::clone(&chain), vec![0u8; 64]);
    }
    let result = outcome
        .recv_timeout(Duration::from_secs(600))
        .unwrap_or_else(|_| Err(aborted("the chain stopped without finishing")));
    std::mem::swap(clock, &mut *lock(&chain.clock));
    chain.socket.close();
    result
}

/// Measures `rounds` timed round trips of `variant`, after `warm_up`.
pub fn measure(variant: Variant, warm_up: usize, rounds: usize) -> io::Result<Samples> {
    let mut clock = Clock::new(warm_up, rounds);
    run(variant, &mut clock)?;
    if clock.done != clock.total {
        return Err(aborted(format!(
            "{} did {} of {} rounds",
            variant.name(),
            clock.done,
            clock.total
        )));
    }
    Ok(clock.finish())
}

// ANCHOR: pin
/// Lets every thread of this process, those running now and those started
/// later (which inherit it), run only on `cpus` (`None`: every CPU this
/// process was allowed at first). Threads that outlive a variant, such as the
/// continuation pool's, move too.
fn pin(cpus: Option<&[usize]>) -> io::Result<()> {
    static ALLOWED: Mutex<Option<Vec<usize>>> = Mutex::new(None);
    let mut allowed = lock(&ALLOWED);
    if allowed.is_none() {
        *allowed = Some(allowed_cpus()?);
    }
    let cpus = cpus.unwrap_or(allowed.as_deref().unwrap_or_default());
    // SAFETY: `cpu_set_t` is a plain bit set, for which all zeroes is a valid
    // value (no CPU). `CPU_SET` only touches the bit of a CPU below
    // `CPU_SETSIZE`, which every index here is. `sched_setaffinity` gets a
    // pointer to a live set and its exact size, and reads nothing else.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&cpu| cpu < libc::CPU_SETSIZE as usize) {
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // Each thread has its own affinity: this thread first (0), then every
    // thread the kernel lists for the process.
    if unsafe { libc::sched_setaffinity(0, size, &set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    for thread in fs::read_dir("/proc/self/task")? {
        let Some(id) = thread?.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        if unsafe { libc::sched_setaffinity(id, size, &set) } != 0 {
            let error = io::Error::last_os_error();
            // A thread that ended since the listing needs no pinning.
            if error.raw_os_error() != Some(libc::ESRCH) {
                return Err(error);
            }
        }
    }
    Ok(())
}

/// The CPUs this thread may run on.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: as in `pin`; `sched_getaffinity` writes the calling thread's
    // set (pid 0) into a live one of the size it is given, and `CPU_ISSET`
    // reads a bit below `CPU_SETSIZE`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let every =
        (0..libc::CPU_SETSIZE as usize).filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) });
    Ok(every.collect())
}

/// Puts every thread of the process, and the threads each variant starts, in
/// `layout`.
fn enter(layout: Layout) -> io::Result<()> {
    match layout {
        Layout::Unpinned => pin(None),
        Layout::OneCore => pin(Some(&[0])),
    }
}
// ANCHOR_END: pin

// ANCHOR: primitives
/// The completion primitives alone: no socket, no other thread. Each
/// operation creates one, polls it once (the task's waker is left with it),
/// completes it (which wakes the task), and polls it again to get the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Primitive {
    Oneshot,
    CompletionSource,
    /// A completion handed to a task first (`Handle::spawn`), as fix 1 does.
    HandOff,
    /// One pass of the scheduler: `tokio::task::yield_now`.
    SchedulerPass,
    /// What `awd`'s socket records per pending receive, for the watchdog.
    SocketBookkeeping,
    /// Starting a thread and waiting for it: what each continuation would
    /// cost with a thread of its own.
    Thread,
}

pub const PRIMITIVES: [Primitive; 6] = [
    Primitive::Oneshot,
    Primitive::CompletionSource,
    Primitive::HandOff,
    Primitive::SchedulerPass,
    Primitive::SocketBookkeeping,
    Primitive::Thread,
];

/// Polls `future` once, and hands back what that poll said.
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
}

async fn oneshots(ops: u32) {
    for i in 0..ops {
        let (sender, mut receiver) = oneshot::channel::<u32>();
        assert!(poll_once(&mut receiver).await.is_pending());
        let _ = sender.send(i);
        black_box(receiver.await.expect("sent"));
    }
}

async fn completion_sources(ops: u32) {
    for i in 0..ops {
        let (source, mut completion) = completion_source::<u32>(Continuations::Asynchronous);
        assert!(poll_once(&mut completion).await.is_pending());
        let _ = source.set_result(i);
        black_box(completion.await.expect("set"));
    }
}

async fn hand_offs(ops: u32) {
    let runtime = Handle::current();
    for i in 0..ops {
        let (source, completion) = completion_source::<u32>(Continuations::Inline);
        runtime.spawn(async move {
            let _ = source.set_result(i);
        });
        black_box(completion.await.expect("set"));
    }
}
// ANCHOR_END: primitives

/// CPU nanoseconds per operation of `primitive`, over `ops` operations: the
/// CPU time of the whole process, so that time the machine gives to other
/// programs is not counted, and a started thread's work is.
pub fn measure_primitive(primitive: Primitive, ops: u32) -> io::Result<f64> {
    let runtime = runtime()?;
    let started = Usage::now();
    match primitive {
        // `unconstrained`: tokio's cooperative budget would otherwise make
        // every 128th poll of a oneshot yield, and time a scheduler pass too.
        Primitive::Oneshot => runtime.block_on(tokio::task::unconstrained(oneshots(ops))),
        Primitive::CompletionSource => {
            runtime.block_on(tokio::task::unconstrained(completion_sources(ops)))
        }
        Primitive::HandOff => runtime.block_on(hand_offs(ops)),
        Primitive::SchedulerPass => runtime.block_on(async {
            for _ in 0..ops {
                tokio::task::yield_now().await;
            }
        }),
        Primitive::SocketBookkeeping => {
            // What `CallbackSocket` does for one pending receive.
            for _ in 0..ops {
                let id = waits::receive_started(0);
                waits::receive_now(
                    id,
                    ReceiveState::Pending {
                        delivered_by: IO_THREAD_NAME.to_string(),
                    },
                );
                waits::receive_now(id, ReceiveState::Delivered);
                drop(waits::activity(format!("the callback of receive #{id}")));
            }
        }
        Primitive::Thread => {
            for i in 0..ops {
                thread::spawn(move || black_box(i))
                    .join()
                    .map_err(|_| aborted("a thread panicked"))?;
            }
        }
    }
    let cpu = Usage::now().cpu.saturating_sub(started.cpu);
    Ok(cpu.as_nanos() as f64 / f64::from(ops.max(1)))
}

impl Primitive {
    pub fn name(self) -> &'static str {
        match self {
            Primitive::Oneshot => "oneshot",
            Primitive::CompletionSource => "completion-source",
            Primitive::HandOff => "hand-off",
            Primitive::SchedulerPass => "scheduler-pass",
            Primitive::SocketBookkeeping => "socket-bookkeeping",
            Primitive::Thread => "thread",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Primitive::Oneshot => "oneshot",
            Primitive::CompletionSource => "hand-written completion source",
            Primitive::HandOff => "hand-off: spawn a task to complete",
            Primitive::SchedulerPass => "one scheduler pass (yield_now)",
            Primitive::SocketBookkeeping => "awd socket's watchdog records",
            Primitive::Thread => "start and join a thread",
        }
    }

    /// How many operations one measurement times.
    fn ops(self) -> u32 {
        match self {
            Primitive::Thread => 2_000,
            _ => 200_000,
        }
    }
}

/// The median of `values` (0 for none).
pub fn median(mut values: Vec<f64>) -> f64 {
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

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// How long and how often the benchmark measures.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Untimed round trips before each slice.
    pub warm_up: usize,
    /// Timed round trips per slice.
    pub rounds: usize,
    /// Slices per variant and repeat.
    pub slices: usize,
    pub repeats_unpinned: usize,
    pub repeats_one_core: usize,
    pub primitive_repeats: usize,
}

impl Plan {
    fn repeats(&self, layout: Layout) -> usize {
        match layout {
            Layout::Unpinned => self.repeats_unpinned,
            Layout::OneCore => self.repeats_one_core,
        }
    }
}

/// A primitive, and its ns per operation in each repeat.
pub type Timings = (Primitive, Vec<f64>);

/// One measured run of one variant in one layout.
#[derive(Clone, Debug)]
pub struct Measured {
    pub layout: Layout,
    pub variant: Variant,
    pub repeat: usize,
    pub samples: Samples,
}

// ANCHOR: method
/// Measures every variant in both layouts. Each repeat measures each layout
/// in slices: a slice runs every variant once, on a fresh connection, in an
/// order that shifts by one each time, so that variants compared within a
/// repeat were measured in the same seconds, whatever the host did meanwhile.
/// Then the primitives, on one core.
pub fn benchmark(plan: &Plan) -> io::Result<(Vec<Measured>, Vec<Timings>)> {
    let mut measured = Vec::new();
    let repeats = plan.repeats_unpinned.max(plan.repeats_one_core);
    for repeat in 0..repeats {
        for layout in [Layout::Unpinned, Layout::OneCore] {
            if repeat >= plan.repeats(layout) {
                continue;
            }
            enter(layout)?;
            let mut runs = vec![Samples::default(); VARIANTS.len()];
            for slice in 0..plan.slices {
                for k in 0..VARIANTS.len() {
                    let at = (k + slice + repeat) % VARIANTS.len();
                    runs[at].absorb(measure(VARIANTS[at], plan.warm_up, plan.rounds)?);
                }
            }
            for (variant, samples) in VARIANTS.into_iter().zip(runs) {
                eprintln!(
                    "repeat {}/{repeats} {:>8} {:>24}: median {:>7.1} µs",
                    repeat + 1,
                    layout.name(),
                    variant.name(),
                    samples.median() / 1e3
                );
                measured.push(Measured {
                    layout,
                    variant,
                    repeat,
                    samples,
                });
            }
        }
    }
    enter(Layout::OneCore)?;
    let mut primitives: Vec<Timings> = PRIMITIVES.iter().map(|&p| (p, Vec::new())).collect();
    for _ in 0..plan.primitive_repeats {
        for (primitive, ns) in primitives.iter_mut() {
            ns.push(measure_primitive(*primitive, primitive.ops())?);
        }
    }
    enter(Layout::Unpinned)?;
    Ok((measured, primitives))
}
// ANCHOR_END: method

/// One line of the results: a variant in a layout, over every repeat.
#[derive(Clone, Debug)]
pub struct Row {
    pub layout: Layout,
    pub variant: Variant,
    /// Median round trip: the median of the repeats' medians, and their range.
    pub median_ns: f64,
    pub min_ns: f64,
    pub max_ns: f64,
    /// Round trip over native tokio's in the same repeat: median and range.
    pub ratio: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
    pub round_trips_per_s: f64,
    pub switches_per_round_trip: f64,
    pub cpu_ns_per_round_trip: f64,
}

// ANCHOR: ratios
/// The table: for each layout and variant, the median over repeats of the
/// median round trip, and of its ratio to native tokio's median in the same
/// repeat and layout.
pub fn rows(measured: &[Measured]) -> Vec<Row> {
    let mut rows = Vec::new();
    for layout in [Layout::Unpinned, Layout::OneCore] {
        for variant in VARIANTS {
            let runs: Vec<&Measured> = measured
                .iter()
                .filter(|m| m.layout == layout && m.variant == variant)
                .collect();
            if runs.is_empty() {
                continue;
            }
            let tokio_in = |repeat: usize| {
                measured
                    .iter()
                    .find(|m| {
                        m.layout == layout && m.variant == Variant::Tokio && m.repeat == repeat
                    })
                    .map(|m| m.samples.median())
            };
            let medians: Vec<f64> = runs.iter().map(|m| m.samples.median()).collect();
            let ratios: Vec<f64> = runs
                .iter()
                .filter_map(|m| Some(m.samples.median() / tokio_in(m.repeat)?))
                .collect();
            let each =
                |f: &dyn Fn(&Samples) -> f64| median(runs.iter().map(|m| f(&m.samples)).collect());
            let (min_ns, max_ns) = min_max(&medians);
            let (ratio_min, ratio_max) = min_max(&ratios);
            rows.push(Row {
                layout,
                variant,
                median_ns: median(medians.clone()),
                min_ns,
                max_ns,
                ratio: median(ratios),
                ratio_min,
                ratio_max,
                round_trips_per_s: each(&|s| s.round_trips.len() as f64 / s.wall.as_secs_f64()),
                switches_per_round_trip: each(&|s| s.per_round_trip(s.switches as f64)),
                cpu_ns_per_round_trip: each(&|s| s.per_round_trip(s.cpu.as_nanos() as f64)),
            });
        }
    }
    rows
}
// ANCHOR_END: ratios

/// The machine the numbers come from.
pub fn machine() -> Vec<(&'static str, String)> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let virtualised = field("flags").is_some_and(|f| f.split(' ').any(|flag| flag == "hypervisor"));
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|v| !v.is_empty());
    vec![
        (
            "cpu",
            field("model name").unwrap_or_else(|| "unknown".into()),
        ),
        ("cpus", cpus.to_string()),
        ("virtual", if virtualised { "yes" } else { "no" }.into()),
        (
            "kernel",
            fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|k| format!("Linux {}", k.trim()))
                .unwrap_or_else(|_| std::env::consts::OS.into()),
        ),
        (
            "rustc",
            rustc.unwrap_or_else(|| "rustc (unknown version)".into()),
        ),
    ]
}

/// Today's date (UTC), as YYYY-MM-DD.
fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The results file: tab-separated lines, one fact or row each.
pub fn results_file(plan: &Plan, rows: &[Row], primitives: &[Timings]) -> String {
    let mut out = String::from(
        "# What the fixes cost: the results of `cargo bench -p listing-10-01` (Listing 10-1).\n",
    );
    for (key, value) in machine() {
        out.push_str(&format!("machine\t{key}\t{value}\n"));
    }
    out.push_str(&format!("run\tdate\t{}\n", today()));
    out.push_str("run\tmessage_bytes\t1\n");
    out.push_str(&format!("run\tslices\t{}\n", plan.slices));
    out.push_str(&format!("run\twarm_up_per_slice\t{}\n", plan.warm_up));
    out.push_str(&format!("run\tround_trips_per_slice\t{}\n", plan.rounds));
    out.push_str(&format!(
        "run\trepeats_unpinned\t{}\n",
        plan.repeats_unpinned
    ));
    out.push_str(&format!(
        "run\trepeats_one_core\t{}\n",
        plan.repeats_one_core
    ));
    out.push_str(&format!(
        "run\tprimitive_repeats\t{}\n",
        plan.primitive_repeats
    ));
    out.push_str(
        "# round_trip\tlayout\tvariant\tlabel\tmedian_ns\tmin_ns\tmax_ns\tratio\tratio_min\tratio_max\
         \tround_trips_per_s\tswitches_per_round_trip\tcpu_ns_per_round_trip\n",
    );
    for r in rows {
        out.push_str(&format!(
            "round_trip\t{}\t{}\t{}\t{:.0}\t{:.0}\t{:.0}\t{:.3}\t{:.3}\t{:.3}\t{:.0}\t{:.2}\t{:.0}\n",
            r.layout.name(),
            r.variant.name(),
            r.variant.label(),
            r.median_ns,
            r.min_ns,
            r.max_ns,
            r.ratio,
            r.ratio_min,
            r.ratio_max,
            r.round_trips_per_s,
            r.switches_per_round_trip,
            r.cpu_ns_per_round_trip,
        ));
    }
    out.push_str("# primitive\tname\tlabel\tmedian_ns\tmin_ns\tmax_ns\n");
    for (primitive, ns) in primitives {
        let (lo, hi) = min_max(ns);
        out.push_str(&format!(
            "primitive\t{}\t{}\t{:.1}\t{:.1}\t{:.1}\n",
            primitive.name(),
            primitive.label(),
            median(ns.clone()),
            lo,
            hi
        ));
    }
    out
}

/// The table, as a reader wants it on a terminal.
pub fn table(plan: &Plan, rows: &[Row], primitives: &[Timings]) -> String {
    let machine: Vec<String> = machine()
        .into_iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let mut out = format!(
        "One-byte round trips over loopback, per variant and repeat: {} slices of {} timed \
         after {} untimed.\nMachine: {}.\n",
        plan.slices,
        plan.rounds,
        plan.warm_up,
        machine.join(", ")
    );
    for layout in [Layout::Unpinned, Layout::OneCore] {
        out.push_str(&format!(
            "\n{} ({} repeats; median of the repeats' medians, [min-max])\n",
            match layout {
                Layout::Unpinned => "Unpinned",
                Layout::OneCore => "One core: every thread on CPU 0",
            },
            plan.repeats(layout)
        ));
        out.push_str(&format!(
            "{:<32} {:>22} {:>20} {:>10} {:>8} {:>8}\n",
            "variant", "round trip (µs)", "× native tokio", "per s", "switches", "CPU µs"
        ));
        for r in rows.iter().filter(|r| r.layout == layout) {
            out.push_str(&format!(
                "{:<32} {:>7.1} [{:>5.1}-{:>6.1}] {:>6.2} [{:.2}-{:.2}] {:>10.0} {:>8.2} {:>8.1}\n",
                r.variant.label(),
                r.median_ns / 1e3,
                r.min_ns / 1e3,
                r.max_ns / 1e3,
                r.ratio,
                r.ratio_min,
                r.ratio_max,
                r.round_trips_per_s,
                r.switches_per_round_trip,
                r.cpu_ns_per_round_trip / 1e3,
            ));
        }
    }
    out.push_str(&format!(
        "\nThe primitives alone, on one core ({} repeats; CPU ns per operation, median [min-max])\n",
        plan.primitive_repeats
    ));
    for (primitive, ns) in primitives {
        let (lo, hi) = min_max(ns);
        out.push_str(&format!(
            "{:<40} {:>9.1} [{:.1}-{:.1}]\n",
            primitive.label(),
            median(ns.clone()),
            lo,
            hi
        ));
    }
    out
}

/// Where the results go: `target/costs.tsv` of the workspace this runs in
/// (cargo runs benchmarks from their package's directory).
fn results_path() -> PathBuf {
    let here = std::env::current_dir().unwrap_or_default();
    let root = here
        .ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(&here);
    root.join("target").join("costs.tsv")
}

// ANCHOR: check
/// Checks every variant in both layouts with a few rounds, and every
/// primitive with a few operations: each must finish, and every echo must be
/// the byte that was sent.
pub fn check(rounds: usize) -> io::Result<()> {
    for layout in [Layout::Unpinned, Layout::OneCore] {
        enter(layout)?;
        for variant in VARIANTS {
            let samples = measure(variant, 0, rounds)?;
            println!(
                "{:>8} {:<32} {} round trips, every echo intact",
                layout.name(),
                variant.label(),
                samples.round_trips.len()
            );
        }
    }
    for primitive in PRIMITIVES {
        measure_primitive(primitive, 100)?;
    }
    enter(Layout::Unpinned)?;
    println!("{} primitives: each completes", PRIMITIVES.len());
    Ok(())
}
// ANCHOR_END: check

/// One variant on one core, for a profiler to watch.
fn only(name: &str) -> io::Result<()> {
    let Some(variant) = VARIANTS.into_iter().find(|v| v.name() == name) else {
        let names: Vec<_> = VARIANTS.iter().map(|v| v.name()).collect();
        return Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("no variant `{name}`; the variants are {}", names.join(", ")),
        ));
    };
    enter(Layout::OneCore)?;
    let samples = measure(variant, 150, 5_000)?;
    println!(
        "{}: 5000 round trips on one core, median {:.1} µs",
        variant.label(),
        samples.median() / 1e3
    );
    Ok(())
}

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, name] = args.as_slice() {
        if flag == "--only" {
            return only(name);
        }
    }
    if !args.iter().any(|a| a == "--bench") {
        return check(200);
    }
    let plan = Plan {
        warm_up: 150,
        rounds: 1_500,
        slices: 10,
        repeats_unpinned: 7,
        repeats_one_core: 7,
        primitive_repeats: 7,
    };
    let (measured, primitives) = benchmark(&plan)?;
    let rows = rows(&measured);
    print!("{}", table(&plan, &rows, &primitives));
    let path = results_path();
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(&path, results_file(&plan, &rows, &primitives))?;
    println!("\nWritten to {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn every_variant_round_trips_the_right_bytes_unpinned() {
        let _limit = TestLimit::seconds(60);
        for variant in VARIANTS {
            let samples = measure(variant, 10, 100).unwrap();
            assert_eq!(samples.round_trips.len(), 100, "{variant:?}");
            assert!(samples.median() > 0.0);
        }
    }

    #[test]
    fn every_variant_round_trips_the_right_bytes_on_one_core() {
        let _limit = TestLimit::seconds(60);
        enter(Layout::OneCore).unwrap();
        for variant in VARIANTS {
            let samples = measure(variant, 10, 100).unwrap();
            assert_eq!(samples.round_trips.len(), 100, "{variant:?}");
        }
    }

    #[test]
    fn pinning_moves_a_thread_that_was_already_running() {
        let _limit = TestLimit::seconds(10);
        let (go, wait) = mpsc::channel::<()>();
        let (tell, told) = mpsc::channel();
        let earlier = thread::spawn(move || {
            let _ = wait.recv_timeout(Duration::from_secs(5));
            let _ = tell.send(allowed_cpus());
        });
        enter(Layout::OneCore).unwrap();
        go.send(()).unwrap();
        let cpus = told.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
        enter(Layout::Unpinned).unwrap();
        earlier.join().unwrap();
        assert_eq!(cpus, vec![0], "a thread started before pinning is on CPU 0");
    }

    #[test]
    fn a_wrong_echo_is_an_error() {
        let _limit = TestLimit::seconds(10);
        let mut clock = Clock::new(0, 2);
        let byte = clock.next_byte().unwrap();
        let error = clock.round_done(byte, &[byte + 1]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData);
        let error = clock.round_done(byte, &[]).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn every_primitive_completes() {
        let _limit = TestLimit::seconds(30);
        for primitive in PRIMITIVES {
            let ns = measure_primitive(primitive, 50).unwrap();
            assert!(ns > 0.0, "{primitive:?}");
        }
    }

    #[test]
    fn ratios_are_taken_within_a_repeat() {
        let _limit = TestLimit::seconds(10);
        let run = |layout, variant, repeat, ns: u64| Measured {
            layout,
            variant,
            repeat,
            samples: Samples {
                round_trips: vec![ns; 3],
                wall: Duration::from_nanos(ns * 3),
                ..Samples::default()
            },
        };
        let measured = vec![
            run(Layout::OneCore, Variant::Tokio, 0, 100),
            run(Layout::OneCore, Variant::Waker, 0, 130),
            run(Layout::OneCore, Variant::Tokio, 1, 200),
            run(Layout::OneCore, Variant::Waker, 1, 240),
            run(Layout::OneCore, Variant::Tokio, 2, 100),
            run(Layout::OneCore, Variant::Waker, 2, 125),
        ];
        let rows = rows(&measured);
        let waker = rows.iter().find(|r| r.variant == Variant::Waker).unwrap();
        assert_eq!(waker.ratio, 1.25); // the ratios are 1.3, 1.2 and 1.25
        assert_eq!((waker.ratio_min, waker.ratio_max), (1.2, 1.3));
        assert_eq!(waker.median_ns, 130.0);
        let tokio = rows.iter().find(|r| r.variant == Variant::Tokio).unwrap();
        assert_eq!(tokio.ratio, 1.0);
        let text = results_file(
            &Plan {
                warm_up: 0,
                rounds: 3,
                slices: 1,
                repeats_unpinned: 0,
                repeats_one_core: 3,
                primitive_repeats: 0,
            },
            &rows,
            &[],
        );
        assert!(text.contains("round_trip\tone-core\twaker\t"));
    }
}
