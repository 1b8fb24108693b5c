//! A completion-style socket API: start an operation, and either it is done
//! now or a callback of yours runs later, on the one I/O thread.
//!
//! This is the shape of Windows' `SocketAsyncEventArgs`, of IOCP and io_uring,
//! and of many C libraries that call you back. Here it is built on real
//! non-blocking TCP sockets and [mio], with one dedicated I/O thread that
//! waits for readiness and runs every completion callback.
//!
//! # The contract
//!
//! [`CallbackSocket::receive`] and [`CallbackSocket::send`] return a [`Start`],
//! and keep the contract that [`crate::contract`] states for both of the
//! book's sockets: `Ready` means the callback is not called; `Pending` means
//! it runs later, **exactly once**, on the I/O thread, with the result.
//!
//! # When a callback panics
//!
//! Callbacks run on the one I/O thread, and so do jobs handed to it with
//! [`CallbackSocket::post`]. If one of them panics, the I/O thread stops, and
//! it says so: it catches the panic, and every operation pending on **every**
//! socket it drives completes with `ConnectionAborted` and a message that
//! quotes the panic (`the I/O thread stopped: a callback panicked: ...`).
//! From then on every operation on those sockets returns that error at once,
//! and [`IoThread::connect`], [`IoThread::adopt`] and [`CallbackSocket::post`]
//! fail with it. Nothing waits for a thread that is gone.
//!
//! The thread stops rather than carrying on, because the panicking callback
//! may have left its own state half-changed (a connection whose next receive
//! was never started, say) and only a stop is certain to be noticed. Callbacks
//! that run while it stops (the aborted operations' own) are each guarded the
//! same way: a second panic is reported by the panic hook and stops nothing
//! more. In a build with `panic = "abort"` the process ends instead, loudly.
//!
//! # Observing the pending state
//!
//! Whether a receive completes at once or later depends on whether the bytes
//! were already there. Tests must control that, so a socket tells when a receive
//! is really pending: [`CallbackSocket::wait_for_pending_receive`].
//!
//! # Locks
//!
//! Every lock this module takes, and who takes it:
//!
//!  * `receiving` - one per socket: its receiving side (the pending receive,
//!    `closed`, the refusal). A receive holds it across its `read` and its
//!    registration, so that readiness arriving in between finds the receive
//!    registered. The condition variable `receive_registered` goes with it
//!    ([`CallbackSocket::wait_for_pending_receive`]).
//!
//!  * `sending` - one per socket: its sending side. A send holds it across
//!    its `write` calls and the change of what the poll listens for, so that
//!    the I/O thread's `continue_send` cannot stop listening for writability
//!    after a send re-armed it.
//!
//!  * `sockets` - one per I/O thread: the sockets it drives, by token, and
//!    why it stopped, once it has.
//!
//!  * `jobs` - one per I/O thread: the jobs posted to it.
//!
//!  * the facts of [`crate::waits`] - one per process, taken inside
//!    [`waits::receive_started`], [`waits::receive_now`] and
//!    [`waits::activity`].
//!
//! Which may nest: exactly one pair, in one order. A receive numbers itself
//! and records that it is pending under `receiving`, so `receiving` →
//! the facts of `waits`: the I/O thread's record that it delivered the
//! receive cannot come before the record that it was pending. The facts
//! are a leaf: while they are held, no other lock is taken. `receiving` and
//! `sending` are never held together (closing takes one, then the other),
//! `sockets` and `jobs` are each taken alone, and no lock of this module is
//! held while its thread waits for another thread: the last handle joins
//! the I/O thread holding none, and a wait on `receive_registered` releases
//! `receiving` while it sleeps.
//!
//! No callback, waker or continuation runs under any of them, and no job
//! either: each is taken out of the state first, and called after the lock
//! is released. That includes a callback that is dropped without being
//! called (a receive that went `Ready`): it may own the last handle of
//! something whose drop runs code, such as a completion source that it
//! abandons. So a callback may use its own socket in every way: start the
//! next receive, send, close it, drop the last handle
//! (`tests/socket_locks.rs`).
//!
//! Elsewhere in the crate the same rule holds, and every pair of locks held
//! together ends at a lock under which nothing else is taken:
//!
//!  * the completion source's two locks are each taken alone (the `# Locks`
//!    of [`crate::completion_source`]);
//!
//!  * a thread pool ([`crate::pool`]) records a thread it adds while it holds
//!    its `state`: pool `state` → the facts of `waits`, and pool `state` →
//!    the list of injections. A diagnosis reads the pools before it takes
//!    the facts, never while it holds them;
//!
//!  * a [`WatchedMutex`](crate::waits::WatchedMutex) notes its holder, and
//!    a waiter records that it stopped waiting, while the watched lock is
//!    held: the watched lock → its holder's name, and the watched lock → the
//!    facts of `waits`.
//!
//! So these locks cannot form a cycle among themselves. What a listing's own
//! code does while it holds a lock is the listing's business: chapter 3
//! builds a deadlock from a `WatchedMutex` on purpose.

use std::any::Any;
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use std::os::fd::AsRawFd;

use mio::net::TcpStream;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

pub use crate::contract::{Received, Sent, Start};

use crate::contract::{error, lock, refused_receive};
use crate::waits::{self, ReceiveState};

/// The name of every I/O thread.
pub const IO_THREAD_NAME: &str = "awd-io";

type ReceiveCallback = Box<dyn FnOnce(Received) + Send>;
type SendCallback = Box<dyn FnOnce(Sent) + Send>;
type Job = Box<dyn FnOnce() + Send>;

const WAKER: Token = Token(0);

thread_local! {
    static ON_IO_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// True when called on an I/O thread (for example from inside a callback).
pub fn on_io_thread() -> bool {
    ON_IO_THREAD.with(|flag| flag.get())
}

struct PendingReceive {
    id: u64,
    buffer: Vec<u8>,
    callback: ReceiveCallback,
}

struct PendingSend {
    data: Vec<u8>,
    written: usize,
    callback: SendCallback,
}

/// The receiving direction. Each direction has its own lock: a send (which
/// holds its lock across the `write` system call) never makes the I/O thread
/// wait to finish a receive, or the other way round.
#[derive(Default)]
struct ReceiveSide {
    last_receive: Option<u64>,
    receive: Option<PendingReceive>,
    closed: bool,
    /// Why operations are refused, if not simply because the socket was
    /// closed: the I/O thread stopped.
    refusal: Option<Arc<str>>,
    /// Threads in `wait_for_pending_receive`: only when there are some must
    /// a new pending receive notify the condition variable, which costs a
    /// system call.
    watchers: usize,
}

/// The sending direction.
#[derive(Default)]
struct SendSide {
    send: Option<PendingSend>,
    closed: bool,
    /// As [`ReceiveSide::refusal`].
    refusal: Option<Arc<str>>,
}

struct SocketShared {
    number: u64,
    stream: TcpStream,
    receiving: Mutex<ReceiveSide>,
    sending: Mutex<SendSide>,
    receive_registered: Condvar,
    completions: AtomicUsize,
}

/// The sockets the I/O thread drives, and why it stopped, once it has.
#[derive(Default)]
struct Sockets {
    by_token: HashMap<Token, Arc<SocketShared>>,
    /// Set, under this lock, when the I/O thread stops driving sockets: a
    /// socket adopted after that would never be served.
    stopped: Option<Arc<str>>,
}

/// What the I/O thread and every handle share.
struct Core {
    sockets: Mutex<Sockets>,
    /// Jobs for the I/O thread; `None` once it takes no more.
    jobs: Mutex<Option<Vec<Job>>>,
    waker: Waker,
    registry: mio::Registry,
    next_token: AtomicUsize,
    stopping: AtomicBool,
}

impl Core {
    /// Runs `job` on the I/O thread, soon. Gives it back if the thread takes
    /// no more jobs.
    fn post(&self, job: Job) -> Result<(), Job> {
        match &mut *lock(&self.jobs) {
            Some(jobs) => jobs.push(job),
            None => return Err(job),
        }
        // A failed wake means the poll is gone; the thread is ending anyway
        // and runs what is queued before it takes no more.
        let _ = self.waker.wake();
        Ok(())
    }

    /// Why the I/O thread stopped, as an error for an operation that came
    /// too late.
    fn stopped(&self) -> io::Error {
        let why = lock(&self.sockets).stopped.clone();
        error(
            ErrorKind::ConnectionAborted,
            why.as_deref().unwrap_or("the I/O thread stopped"),
        )
    }
}

/// Stops the I/O thread when the last handle (an [`IoThread`] or a socket) is
/// dropped.
struct Owner {
    core: Arc<Core>,
    /// Taken once, by the drop; no lock needed.
    thread: Option<JoinHandle<()>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.core.stopping.store(true, Ordering::SeqCst);
        let _ = self.core.waker.wake();
        if let Some(handle) = self.thread.take() {
            // Dropping the last handle from a callback must not join the
            // thread that runs the callback.
            if handle.thread().id() != thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

/// The one thread that waits for socket readiness and runs every completion
/// callback. Cloning gives another handle to the same thread; the thread ends
/// when the last handle and the last socket are gone, and it completes every
/// pending operation with `ConnectionAborted` before it does.
#[derive(Clone)]
pub struct IoThread {
    owner: Arc<Owner>,
}

impl IoThread {
    /// Starts the I/O thread (named [`IO_THREAD_NAME`]).
    pub fn start() -> io::Result<IoThread> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let core = Arc::new(Core {
            sockets: Mutex::new(Sockets::default()),
            jobs: Mutex::new(Some(Vec::new())),
            waker,
            registry: poll.registry().try_clone()?,
            next_token: AtomicUsize::new(1),
            stopping: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&core);
        let handle = thread::Builder::new()
            .name(IO_THREAD_NAME.into())
            .spawn(move || run(poll, &for_thread))?;
        Ok(IoThread {
            owner: Arc::new(Owner {
                core,
                thread: Some(handle),
            }),
        })
    }

    /// Connects to `address` and returns the socket, driven by this thread.
    pub fn connect(&self, address: SocketAddr) -> io::Result<CallbackSocket> {
        let stream = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
        self.adopt(stream)
    }

    /// Takes over a connected standard-library stream (for example one a
    /// `std::net::TcpListener` accepted).
    pub fn adopt(&self, stream: std::net::TcpStream) -> io::Result<CallbackSocket> {
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        let core = &self.owner.core;
        let token = Token(core.next_token.fetch_add(1, Ordering::Relaxed));
        let mut stream = TcpStream::from_std(stream);
        core.registry
            .register(&mut stream, token, Interest::READABLE)?;
        let shared = Arc::new(SocketShared {
            number: token.0 as u64,
            stream,
            receiving: Mutex::new(ReceiveSide::default()),
            sending: Mutex::new(SendSide::default()),
            receive_registered: Condvar::new(),
            completions: AtomicUsize::new(0),
        });
        {
            let mut sockets = lock(&core.sockets);
            if let Some(why) = &sockets.stopped {
                return Err(error(ErrorKind::ConnectionAborted, why));
            }
            sockets.by_token.insert(token, Arc::clone(&shared));
        }
        Ok(CallbackSocket {
            handle: Arc::new(Handle {
                io: self.clone(),
                token,
                shared,
            }),
        })
    }

    /// Runs `job` on the I/O thread, after the events it is handling now. An
    /// error if the I/O thread has stopped (see the module documentation).
    pub fn post<F>(&self, job: F) -> io::Result<()>
    where
        F: FnOnce() + Send + 'static,
    {
        let core = &self.owner.core;
        core.post(Box::new(job)).map_err(|_| core.stopped())
    }
}

/// The I/O thread: it serves sockets until told to stop or until code it
/// runs panics, and then completes everything still pending.
fn run(poll: Poll, core: &Core) {
    ON_IO_THREAD.with(|flag| flag.set(true));
    let why = match panic::catch_unwind(AssertUnwindSafe(|| serve(poll, core))) {
        Ok(()) => "the I/O thread stopped while the operation was pending".to_string(),
        Err(panic) => format!(
            "the I/O thread stopped: a callback panicked: {}",
            panic_message(&*panic)
        ),
    };
    // Ending: nothing pending may be dropped silently, and nothing may be
    // adopted or posted that nobody would serve.
    let why: Arc<str> = why.into();
    let sockets: Vec<_> = {
        let mut sockets = lock(&core.sockets);
        sockets.stopped = Some(Arc::clone(&why));
        sockets.by_token.drain().map(|(_, s)| s).collect()
    };
    // The queue closes before any callback hears of the stop: code that
    // learns of it from an aborted operation and then posts a job must be
    // refused, not queued behind a thread that is ending. (The two locks are
    // taken one after the other, never together.)
    let jobs = lock(&core.jobs).take().unwrap_or_default();
    // Every socket is closed before the first callback runs (see
    // `close_pending`), and each callback is guarded on its own.
    let aborted: Vec<_> = sockets
        .iter()
        .map(|socket| socket.close_pending(&why, true))
        .collect();
    for pending in aborted {
        pending.complete_guarded(&why);
    }
    for job in jobs {
        let _ = panic::catch_unwind(AssertUnwindSafe(job));
    }
}

/// The text of a panic's payload (what `panic!` was given).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(text) = payload.downcast_ref::<&str>() {
        text
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text
    } else {
        "(a panic without a message)"
    }
}

/// The I/O thread's loop: wait for readiness, finish what it allows, run
/// the jobs, until told to stop.
fn serve(mut poll: Poll, core: &Core) {
    let mut events = Events::with_capacity(256);
    while !core.stopping.load(Ordering::SeqCst) {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        for event in events.iter() {
            if event.token() == WAKER {
                continue;
            }
            let socket = lock(&core.sockets).by_token.get(&event.token()).cloned();
            if let Some(socket) = socket {
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    socket.continue_receive();
                }
                if event.is_writable() || event.is_write_closed() || event.is_error() {
                    socket.continue_send(&core.registry);
                }
            }
        }
        let jobs = std::mem::take(lock(&core.jobs).get_or_insert_with(Vec::new));
        for job in jobs {
            job();
        }
    }
}

impl SocketShared {
    /// Readiness for reading arrived: finish the pending receive, if any.
    fn continue_receive(&self) {
        let mut state = lock(&self.receiving);
        if state.closed {
            return; // closing delivers `ConnectionAborted` instead (see `abort`)
        }
        let Some(mut pending) = state.receive.take() else {
            return;
        };
        let result = match (&self.stream).read(&mut pending.buffer) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                state.receive = Some(pending); // a spurious wake-up: keep waiting
                return;
            }
            other => other,
        };
        drop(state); // never call back while holding the lock
        self.completions.fetch_add(1, Ordering::SeqCst);
        waits::receive_now(pending.id, ReceiveState::Delivered);
        let _running = waits::activity(format!("the callback of receive #{}", pending.id));
        (pending.callback)(Received {
            buffer: pending.buffer,
            result,
        });
    }

    /// Readiness for writing arrived: continue the pending send, if any.
    fn continue_send(&self, registry: &mio::Registry) {
        let mut state = lock(&self.sending);
        if state.closed {
            return; // closing delivers `ConnectionAborted` instead (see `abort`)
        }
        let Some(mut pending) = state.send.take() else {
            return;
        };
        let result = loop {
            if pending.written == pending.data.len() {
                break Ok(pending.written);
            }
            match (&self.stream).write(&pending.data[pending.written..]) {
                Ok(0) => {
                    break Err(error(
                        ErrorKind::WriteZero,
                        "the peer stopped accepting data",
                    ))
                }
                Ok(n) => pending.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    state.send = Some(pending);
                    return;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        // Nothing left to send: stop listening for writability. Still under
        // the lock, so a send that goes pending next re-arms it after this.
        // Failing, it only costs a spurious wake-up later.
        let _ = self.listen(registry, Interest::READABLE);
        drop(state);
        (pending.callback)(result);
    }

    /// Sets what the I/O thread hears about this socket. Readability always;
    /// writability only while a send is pending: registered for it, every
    /// incoming segment would also report the socket writable, and the I/O
    /// thread would take the sending lock for nothing, even while a sender
    /// holds it. Re-arming reports readiness that is already there, so a send
    /// that registers after its write would block loses no wake-up.
    fn listen(&self, registry: &mio::Registry, interest: Interest) -> io::Result<()> {
        let fd = self.stream.as_raw_fd();
        registry.reregister(&mut SourceFd(&fd), Token(self.number as usize), interest)
    }

    /// Completes whatever is pending with `ConnectionAborted`. Runs on the I/O
    /// thread (or, if it has stopped, on the thread that closes the socket).
    /// `lasting`: later operations are refused with `why` too (the I/O thread
    /// stopped), not as on a closed socket.
    fn abort(&self, why: &str, lasting: bool) {
        self.close_pending(why, lasting).complete(why);
    }

    /// The first half of [`SocketShared::abort`]: marks both sides closed
    /// (refusing later operations) and takes what is pending, calling
    /// nothing. A stopping I/O thread closes every socket this way before it
    /// calls any callback, so code that hears of the stop cannot slip a new
    /// operation into a socket not yet closed.
    fn close_pending(&self, why: &str, lasting: bool) -> Aborted<'_> {
        let refusal: Option<Arc<str>> = lasting.then(|| why.into());
        let receive = {
            let mut receiving = lock(&self.receiving);
            receiving.closed = true;
            receiving.refusal = receiving.refusal.take().or(refusal.clone());
            receiving.receive.take()
        };
        let send = {
            let mut sending = lock(&self.sending);
            sending.closed = true;
            sending.refusal = sending.refusal.take().or(refusal);
            sending.send.take()
        };
        Aborted {
            socket: self,
            receive,
            send,
        }
    }
}

/// What a socket had pending when it was closed, still to be told why.
#[must_use = "the pending operations' callbacks must be called"]
struct Aborted<'a> {
    socket: &'a SocketShared,
    receive: Option<PendingReceive>,
    send: Option<PendingSend>,
}

impl Aborted<'_> {
    /// Like [`Aborted::complete`], with each callback guarded on its own: a
    /// receive's callback that panics does not keep the send's from running.
    fn complete_guarded(self, why: &str) {
        let Aborted {
            socket,
            receive,
            send,
        } = self;
        let _ = panic::catch_unwind(AssertUnwindSafe(|| {
            Aborted {
                socket,
                receive,
                send: None,
            }
            .complete(why)
        }));
        let _ = panic::catch_unwind(AssertUnwindSafe(|| {
            Aborted {
                socket,
                receive: None,
                send,
            }
            .complete(why)
        }));
    }

    /// Calls the pending operations' callbacks with `ConnectionAborted`.
    fn complete(self, why: &str) {
        if let Some(pending) = self.receive {
            self.socket.completions.fetch_add(1, Ordering::SeqCst);
            waits::receive_now(pending.id, ReceiveState::Delivered);
            let _running = waits::activity(format!("the callback of receive #{}", pending.id));
            (pending.callback)(Received {
                buffer: pending.buffer,
                result: Err(error(ErrorKind::ConnectionAborted, why)),
            });
        }
        if let Some(pending) = self.send {
            (pending.callback)(Err(error(ErrorKind::ConnectionAborted, why)));
        }
    }
}

/// A connected TCP socket with a completion-style API. Cloning gives another
/// handle to the same socket; the socket closes when [`CallbackSocket::close`]
/// is called or the last handle is dropped.
#[derive(Clone)]
pub struct CallbackSocket {
    handle: Arc<Handle>,
}

/// The one owner of a socket's registration; dropping it closes the socket.
struct Handle {
    io: IoThread,
    token: Token,
    shared: Arc<SocketShared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.close();
    }
}

impl Handle {
    fn close(&self) {
        // The receiving side's flag says whether this socket was closed
        // already; the locks are taken one after the other, never together.
        {
            let mut receiving = lock(&self.shared.receiving);
            if receiving.closed {
                return;
            }
            receiving.closed = true;
        }
        lock(&self.shared.sending).closed = true;
        let _ = self.shared.stream.shutdown(Shutdown::Both);
        let core = &self.io.owner.core;
        // Once out of the map, the socket gets no more events; its file
        // descriptor leaves the poll when the last reference closes it.
        let socket = lock(&core.sockets).by_token.remove(&self.token);
        if let Some(socket) = socket {
            let why = "the socket was closed while the operation was pending";
            let aborting: Job = Box::new(move || socket.abort(why, false));
            // The I/O thread stopped after the socket left the map, before
            // it ran this: then this thread is the only one left to do it.
            if let Err(aborting) = core.post(aborting) {
                aborting();
            }
        }
    }
}

impl CallbackSocket {
    fn shared(&self) -> &SocketShared {
        &self.handle.shared
    }

    /// Starts receiving into `buffer` (up to its length). See the module
    /// documentation for the contract.
    pub fn receive<F>(&self, mut buffer: Vec<u8>, on_complete: F) -> Start<Received>
    where
        F: FnOnce(Received) + Send + 'static,
    {
        let ready = |buffer, result| Start::Ready(Received { buffer, result });
        // The attempt and the registration happen under one lock: readiness
        // that arrives in between is handled by the I/O thread only after the
        // receive is registered, so no wake-up is lost. A callback that is not
        // registered is dropped when this returns, after the guard (parameters
        // are dropped after locals): never under the lock.
        let mut state = lock(&self.shared().receiving);
        if let (Some(why), false) = (&state.refusal, buffer.is_empty()) {
            return ready(buffer, Err(error(ErrorKind::ConnectionAborted, why)));
        }
        if let Some(refusal) = refused_receive(&buffer, state.closed, state.receive.is_some()) {
            return ready(buffer, Err(refusal));
        }
        let id = waits::receive_started(self.shared().number);
        state.last_receive = Some(id);
        match (&self.shared().stream).read(&mut buffer) {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                waits::receive_now(
                    id,
                    ReceiveState::Pending {
                        delivered_by: IO_THREAD_NAME.to_string(),
                    },
                );
                state.receive = Some(PendingReceive {
                    id,
                    buffer,
                    callback: Box::new(on_complete),
                });
                if state.watchers > 0 {
                    self.shared().receive_registered.notify_all();
                }
                Start::Pending
            }
            result => {
                waits::receive_now(id, ReceiveState::CompletedAtOnce);
                ready(buffer, result)
            }
        }
    }

    /// Starts sending all of `data`. See the module documentation for the
    /// contract.
    pub fn send<F>(&self, data: Vec<u8>, on_complete: F) -> Start<Sent>
    where
        F: FnOnce(Sent) + Send + 'static,
    {
        if data.is_empty() {
            return Start::Ready(Err(error(ErrorKind::InvalidInput, "nothing to send")));
        }
        let mut state = lock(&self.shared().sending);
        if let Some(why) = &state.refusal {
            return Start::Ready(Err(error(ErrorKind::ConnectionAborted, why)));
        }
        if state.closed {
            return Start::Ready(Err(error(ErrorKind::NotConnected, "the socket is closed")));
        }
        if state.send.is_some() {
            return Start::Ready(Err(error(
                ErrorKind::ResourceBusy,
                "a send is already pending on this socket",
            )));
        }
        let mut written = 0;
        while written < data.len() {
            match (&self.shared().stream).write(&data[written..]) {
                Ok(0) => {
                    return Start::Ready(Err(error(
                        ErrorKind::WriteZero,
                        "the peer stopped accepting data",
                    )))
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let registry = &self.handle.io.owner.core.registry;
                    let both = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = self.shared().listen(registry, both) {
                        return Start::Ready(Err(e));
                    }
                    state.send = Some(PendingSend {
                        data,
                        written,
                        callback: Box::new(on_complete),
                    });
                    return Start::Pending;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Start::Ready(Err(e)),
            }
        }
        Start::Ready(Ok(written))
    }

    /// Sends all of `data` and waits for the result (a convenience for peers
    /// and tests). On the I/O thread, a send that cannot finish at once is an
    /// error (`WouldBlock`), not a hang: only that thread could finish it.
    pub fn send_all(&self, data: &[u8]) -> io::Result<()> {
        let (done, wait) = std::sync::mpsc::channel();
        match self.send(data.to_vec(), move |sent| {
            let _ = done.send(sent);
        }) {
            Start::Ready(sent) => sent.map(|_| ()),
            // Waiting here would wait for this very thread: refuse instead.
            Start::Pending if on_io_thread() => Err(error(
                ErrorKind::WouldBlock,
                "send_all cannot wait on the I/O thread, which must deliver the send",
            )),
            Start::Pending => wait
                .recv()
                .map_err(|_| error(ErrorKind::ConnectionAborted, "the send was dropped"))?
                .map(|_| ()),
        }
    }

    /// Runs `job` on this socket's I/O thread, after the events it is
    /// handling now: how a callback that has done its share of work hands the
    /// rest back, so that other sockets' callbacks run first. An error if the
    /// I/O thread has stopped.
    pub fn post<F>(&self, job: F) -> io::Result<()>
    where
        F: FnOnce() + Send + 'static,
    {
        self.handle.io.post(job)
    }

    /// True while a receive waits for its callback.
    pub fn is_receive_pending(&self) -> bool {
        lock(&self.shared().receiving).receive.is_some()
    }

    /// The number of the receive that waits for its callback, if one does.
    /// Receives are numbered from 1 in each process (see [`crate::waits`]).
    pub fn pending_receive(&self) -> Option<u64> {
        lock(&self.shared().receiving)
            .receive
            .as_ref()
            .map(|r| r.id)
    }

    /// The number of the receive most recently started on this socket, pending
    /// or not. Receives are numbered from 1 in each process.
    pub fn last_receive(&self) -> Option<u64> {
        lock(&self.shared().receiving).last_receive
    }

    /// This socket's number, as diagnoses show it.
    pub fn number(&self) -> u64 {
        self.shared().number
    }

    /// Waits until a receive is pending on this socket (it went [`Start::Pending`]
    /// and its callback has not run yet). False if `timeout` passed first.
    pub fn wait_for_pending_receive(&self, timeout: Duration) -> bool {
        self.wait_for_receive(timeout, |pending| pending.is_some())
    }

    /// Waits until a receive numbered after `receive` is pending on this
    /// socket: the next receive, started by whoever handles `receive`'s
    /// result, is really waiting. False if `timeout` passed first.
    pub fn wait_for_pending_receive_after(&self, receive: u64, timeout: Duration) -> bool {
        self.wait_for_receive(timeout, |pending| pending.is_some_and(|r| r.id > receive))
    }

    /// Waits until `wanted` holds of the pending receive (or `timeout` passes),
    /// counted as a watcher meanwhile so that receives notify it.
    fn wait_for_receive(
        &self,
        timeout: Duration,
        wanted: impl Fn(Option<&PendingReceive>) -> bool,
    ) -> bool {
        let mut state = lock(&self.shared().receiving);
        state.watchers += 1;
        let (mut state, _) = self
            .shared()
            .receive_registered
            .wait_timeout_while(state, timeout, |s| !wanted(s.receive.as_ref()))
            .unwrap_or_else(PoisonError::into_inner);
        state.watchers -= 1;
        wanted(state.receive.as_ref())
    }

    /// Waits until bytes (or the end of the stream) are buffered in the
    /// kernel, so that the next receive is certain to complete at once. False
    /// if `timeout` passed first.
    pub fn wait_until_readable(&self, timeout: Duration) -> bool {
        self.wait_until_buffered(1, timeout)
    }

    /// Waits until at least `bytes` bytes are buffered in the kernel (or the
    /// stream ended, or failed), so that receives of up to that many bytes in
    /// all are certain to complete at once. False if `timeout` passed first.
    pub fn wait_until_buffered(&self, bytes: usize, timeout: Duration) -> bool {
        if bytes == 0 {
            return true;
        }
        let deadline = std::time::Instant::now() + timeout;
        let mut probe = vec![0u8; bytes.max(1)];
        loop {
            match self.shared().stream.peek(&mut probe) {
                Ok(0) => return true, // the end of the stream
                Ok(n) if n >= probe.len() => return true,
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return true, // an error is "ready" too
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// How many receive callbacks this socket has run.
    pub fn receive_callbacks(&self) -> usize {
        self.shared().completions.load(Ordering::SeqCst)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.shared().stream.peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared().stream.local_addr()
    }

    /// Shuts the connection down in both directions. A pending receive or send
    /// completes, on the I/O thread, with `ConnectionAborted`; later operations
    /// return `Ready(Err(NotConnected))`. Closing twice does nothing more.
    pub fn close(&self) {
        self.handle.close();
    }
}

impl std::fmt::Debug for CallbackSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallbackSocket")
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .finish()
    }
}

/// A connected pair on loopback: a [`CallbackSocket`] driven by `io`, and its
/// peer as a plain blocking `std::net::TcpStream`.
pub fn loopback_pair(io: &IoThread) -> io::Result<(CallbackSocket, std::net::TcpStream)> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let socket = io.connect(listener.local_addr()?)?;
    let (peer, _) = listener.accept()?;
    peer.set_nodelay(true)?;
    Ok((socket, peer))
}
