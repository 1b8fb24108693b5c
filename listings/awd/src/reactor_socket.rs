//! The completion-style socket of [`crate::socket`] with its I/O thread
//! removed: pending receives are driven by tokio's own reactor, and their
//! callbacks run on the runtime's thread, so a callback that wakes a task of
//! that runtime hands it no work across threads. Chapter 10 measures what this
//! saves.
//!
//! # The contract
//!
//! [`ReactorSocket::receive`] keeps the contract that [`crate::contract`]
//! states for both of the book's sockets, with [`CallbackSocket::receive`]'s
//! two ways of finishing and its results. [`Start::Pending`]'s callback runs
//! from the socket's driver task on the runtime: on the runtime's only
//! thread on a `current_thread` runtime, on a worker on a multi-threaded
//! one.
//!
//! # How
//!
//! The socket is registered with the runtime's reactor through
//! [`tokio::io::unix::AsyncFd`], and one task per socket, its *driver*, waits
//! on it. A receive first tries a plain non-blocking read; if no bytes are
//! there, it leaves the receive for the driver and returns. When the reactor
//! sees the socket readable it wakes the driver, which is all a wake does: it
//! schedules the task. The driver, polled like any task, reads the bytes and
//! calls the callback. No other thread is involved: on a `current_thread`
//! runtime, the reactor, the driver and the task the callback wakes all run
//! on the one thread.
//!
//! Two rules of tokio's own sockets are kept. A waker only schedules: no
//! callback, no read and no lock of this module runs inside `Waker::wake`
//! (the reactor calls wakers inside its own turn, and tokio calls them at
//! once in some places, such as a task out of cooperative budget under
//! `Handle::block_on`). And a read that fills less than the buffer clears
//! the socket's readiness, as `PollEvented::poll_read` does on epoll and
//! kqueue (tokio#5866), so the next receive that must wait does not first
//! read once more for nothing.
//!
//! The price is where callbacks run: inside a task of the runtime. A
//! callback that blocks holds a worker, as any blocking task does: on a
//! `current_thread` runtime everything stops; on a multi-threaded one, that
//! worker and the tasks queued on it. Keep callbacks short, as the I/O thread
//! already required; here it is not a courtesy but the runtime's health.
//!
//! A socket must be created inside a tokio runtime ([`ReactorSocket::from_std`]
//! returns an error elsewhere) whose I/O driver is enabled (`enable_io`, or
//! `enable_all`, as `#[tokio::main]` does). This
//! socket records nothing for [`crate::waits`]: the watchdog cannot explain a
//! thread stuck on it.
//!
//! [`CallbackSocket::receive`]: crate::socket::CallbackSocket::receive

use std::future::{poll_fn, Future};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};

use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;

use crate::contract::{error, lock, refused_receive, Received, Start};

type ReceiveCallback = Box<dyn FnOnce(Received) + Send>;

struct PendingReceive {
    buffer: Vec<u8>,
    callback: ReceiveCallback,
}

impl PendingReceive {
    fn complete(self, result: io::Result<usize>) {
        (self.callback)(Received {
            buffer: self.buffer,
            result,
        });
    }
}

#[derive(Default)]
struct State {
    receive: Option<PendingReceive>,
    closed: bool,
    /// The driver task's waker, once it has been polled: closing wakes it,
    /// so that it ends.
    driver: Option<Waker>,
    /// The driver saw the socket readable with no receive pending, and waits
    /// for one to be started (which then wakes it). Otherwise it waits on the
    /// reactor, and a new receive need not wake it.
    driver_idle: bool,
    /// The driver task is gone (its runtime shut down): a receive that would
    /// wait would wait forever.
    driver_gone: bool,
}

struct Shared {
    fd: AsyncFd<TcpStream>,
    state: Mutex<State>,
    runtime: Handle,
    completions: AtomicUsize,
    /// `read` system calls made for receives, to show what each receive
    /// costs.
    reads: AtomicUsize,
}

impl Shared {
    /// One `read` system call for a receive, counted.
    fn read(&self, buffer: &mut [u8]) -> io::Result<usize> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.fd.get_ref().read(buffer)
    }

    /// One turn of the driver: waits until a receive is pending and the
    /// reactor says the socket is readable, then reads, and hands back the
    /// receive with its result for the caller to call back, after every lock
    /// is released. `Ready(None)` once the socket is closed.
    fn poll_drive(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<(PendingReceive, io::Result<usize>)>> {
        loop {
            // Outside this module's lock: the reactor may call the waker at
            // once (a task out of budget), and the waker must find nothing
            // of ours held. It only schedules the driver anyway.
            let readiness = self.fd.poll_read_ready(cx);
            // Declared before the guard, so dropped after it: a waker's drop
            // may run its executor's code, never under this module's lock.
            let _replaced: Option<Waker>;
            let mut state = lock(&self.state);
            if state.closed {
                return Poll::Ready(None);
            }
            state.driver_idle = false;
            _replaced = match &state.driver {
                Some(waker) if waker.will_wake(cx.waker()) => None,
                _ => state.driver.replace(cx.waker().clone()),
            };
            let mut ready = match readiness {
                Poll::Pending => return Poll::Pending, // the reactor wakes us
                // The runtime is shutting down: no readiness will ever come.
                Poll::Ready(Err(e)) => match state.receive.take() {
                    Some(pending) => return Poll::Ready(Some((pending, Err(e)))),
                    None => {
                        state.driver_idle = true;
                        return Poll::Pending;
                    }
                },
                Poll::Ready(Ok(ready)) => ready,
            };
            let Some(mut pending) = state.receive.take() else {
                // Readable, and nobody receiving: the next receive will read
                // the bytes at once. Wait until one has to wait.
                state.driver_idle = true;
                return Poll::Pending;
            };
            let len = pending.buffer.len();
            // `try_io` forgets the readiness when the read would block, so the
            // next turn waits for a fresh event.
            match ready.try_io(|_| self.read(&mut pending.buffer)) {
                Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {
                    state.receive = Some(pending);
                }
                Ok(result) => {
                    // A short read drained the socket (epoll and kqueue report
                    // edges): forget the readiness now, or the next receive
                    // would pay one more read to learn it.
                    if matches!(result, Ok(n) if 0 < n && n < len) {
                        ready.clear_ready();
                    }
                    return Poll::Ready(Some((pending, result)));
                }
                Err(_would_block) => state.receive = Some(pending),
            }
        }
    }

    /// Marks the socket closed, shuts the connection down, and aborts a
    /// pending receive. Closing twice does nothing more.
    fn close(&self) {
        let (pending, driver) = {
            let mut state = lock(&self.state);
            if state.closed {
                return;
            }
            state.closed = true;
            (state.receive.take(), state.driver.take())
        };
        let _ = self.fd.get_ref().shutdown(Shutdown::Both);
        if let Some(driver) = driver {
            driver.wake(); // it sees the socket closed, and ends
        }
        if let Some(pending) = pending {
            let aborted = Aborted(Some(pending));
            // The callback runs when the task drops `aborted`: on the runtime,
            // or here at once if the runtime is gone and refuses the task.
            // Either way, exactly once, and never inside `close`'s caller
            // while the runtime is alive.
            self.runtime.spawn(async move { drop(aborted) });
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.close();
    }
}

/// The socket's driver task: finishes each pending receive when the reactor
/// says the socket is readable, and calls its callback, until the socket
/// closes. It holds the socket weakly, so it keeps nothing alive.
fn drive(socket: Weak<Shared>) -> impl Future<Output = ()> + Send + 'static {
    // Made before the future, so that it is dropped with it even if the task
    // is dropped before its first poll.
    let gone = DriverGone(socket.clone());
    async move {
        let _gone = gone;
        poll_fn(|cx| loop {
            let Some(shared) = socket.upgrade() else {
                return Poll::Ready(()); // every handle is gone
            };
            match shared.poll_drive(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Ready(Some((pending, result))) => {
                    shared.completions.fetch_add(1, Ordering::SeqCst);
                    pending.complete(result);
                }
            }
        })
        .await
    }
}

/// Dropped with the driver task: when it ends, or when the runtime shuts
/// down and drops it unfinished. A receive still pending then would never
/// complete, so it is aborted, and later ones are refused.
struct DriverGone(Weak<Shared>);

impl Drop for DriverGone {
    fn drop(&mut self) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        let pending = {
            let mut state = lock(&shared.state);
            state.driver_gone = true;
            state.receive.take()
        };
        if let Some(pending) = pending {
            pending.complete(Err(error(
                ErrorKind::ConnectionAborted,
                "the runtime that drove this socket shut down",
            )));
        }
    }
}

/// A pending receive that will never get its bytes: dropping it calls its
/// callback with `ConnectionAborted`.
struct Aborted(Option<PendingReceive>);

impl Drop for Aborted {
    fn drop(&mut self) {
        if let Some(pending) = self.0.take() {
            pending.complete(Err(error(
                ErrorKind::ConnectionAborted,
                "the socket was closed while the receive was pending",
            )));
        }
    }
}

/// A connected TCP socket with a completion-style receive, driven by the
/// tokio reactor of the runtime it was created in. Cloning gives another
/// handle to the same socket; the socket closes when [`ReactorSocket::close`]
/// is called or the last handle is dropped.
#[derive(Clone)]
pub struct ReactorSocket {
    shared: Arc<Shared>,
}

impl ReactorSocket {
    /// Takes over a connected standard-library stream and registers it with
    /// the current runtime's reactor. An error outside a tokio runtime; like
    /// every tokio socket, it panics in a runtime built without its I/O driver.
    pub fn from_std(stream: TcpStream) -> io::Result<ReactorSocket> {
        let runtime = Handle::try_current().map_err(io::Error::other)?;
        stream.set_nonblocking(true)?;
        stream.set_nodelay(true)?;
        // SAFETY: `AsyncFd::register` asks that the descriptor `as_raw_fd`
        // returns be open, and stay the same descriptor of the same open file,
        // until the `AsyncFd` is dropped. A `std::net::TcpStream` owns its
        // descriptor (an `OwnedFd` inside): it is open while the stream lives,
        // closed only when the stream is dropped, and `as_raw_fd` always returns
        // it. The stream moves into the `AsyncFd`, which drops it last; this
        // module reaches it only through `get_ref` (a shared reference, which
        // cannot replace or close the descriptor) and never takes it back out.
        let fd = unsafe { AsyncFd::register(stream) }?;
        let shared = Arc::new(Shared {
            fd,
            state: Mutex::new(State::default()),
            runtime,
            completions: AtomicUsize::new(0),
            reads: AtomicUsize::new(0),
        });
        // A runtime that is shutting down drops the task at once, and its
        // `DriverGone` marks the socket: then receives that would wait are
        // refused.
        drop(shared.runtime.spawn(drive(Arc::downgrade(&shared))));
        Ok(ReactorSocket { shared })
    }

    /// Starts receiving into `buffer` (up to its length). See the module
    /// documentation for the contract.
    pub fn receive<F>(&self, mut buffer: Vec<u8>, on_complete: F) -> Start<Received>
    where
        F: FnOnce(Received) + Send + 'static,
    {
        let ready = |buffer, result| Start::Ready(Received { buffer, result });
        // The attempt and the registration happen under one lock: the driver,
        // woken by the reactor in between, finds the receive registered or
        // waits for the lock.
        let mut state = lock(&self.shared.state);
        if let Some(refusal) = refused_receive(&buffer, state.closed, state.receive.is_some()) {
            return ready(buffer, Err(refusal));
        }
        // A plain read first: bytes already buffered complete at once, even on
        // a fresh socket whose reactor readiness is still empty.
        let first = loop {
            match self.shared.read(&mut buffer) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        match first {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if state.driver_gone {
                    let why = "the runtime that drove this socket shut down";
                    return ready(buffer, Err(error(ErrorKind::ConnectionAborted, why)));
                }
                state.receive = Some(PendingReceive {
                    buffer,
                    callback: Box::new(on_complete),
                });
                // The driver waits on the reactor already, unless it saw the
                // socket readable with nothing to receive: then it needs to
                // hear of this receive. Woken after the lock is released.
                let idle = std::mem::take(&mut state.driver_idle);
                let driver = state.driver.clone().filter(|_| idle);
                drop(state);
                if let Some(driver) = driver {
                    driver.wake();
                }
                Start::Pending
            }
            other => ready(buffer, other),
        }
    }

    /// Sends all of `data`, waiting on the reactor when the socket's send
    /// buffer is full.
    pub async fn send_all(&self, data: &[u8]) -> io::Result<()> {
        let mut written = 0;
        while written < data.len() {
            if lock(&self.shared.state).closed {
                return Err(error(ErrorKind::NotConnected, "the socket is closed"));
            }
            let wrote = match self.shared.fd.get_ref().write(&data[written..]) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let mut ready = self.shared.fd.writable().await?;
                    match ready.try_io(|fd| fd.get_ref().write(&data[written..])) {
                        Ok(result) => result,
                        Err(_would_block) => continue,
                    }
                }
                other => other,
            };
            match wrote {
                Ok(0) => {
                    return Err(error(
                        ErrorKind::WriteZero,
                        "the peer stopped accepting data",
                    ))
                }
                Ok(n) => written += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// True while a receive waits for its callback.
    pub fn is_receive_pending(&self) -> bool {
        lock(&self.shared.state).receive.is_some()
    }

    /// How many receive callbacks this socket has run (aborted receives are
    /// not counted).
    pub fn receive_callbacks(&self) -> usize {
        self.shared.completions.load(Ordering::SeqCst)
    }

    /// How many `read` system calls this socket's receives have made: one
    /// for a receive that completes at once, two for one that waits (the
    /// attempt that would block, and the read once the reactor says the bytes
    /// are there).
    pub fn read_calls(&self) -> usize {
        self.shared.reads.load(Ordering::Relaxed)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.shared.fd.get_ref().peer_addr()
    }

    /// The local address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.shared.fd.get_ref().local_addr()
    }

    /// Shuts the connection down in both directions. A pending receive
    /// completes with `ConnectionAborted`, from a task on the runtime; later
    /// receives return `Ready(Err(NotConnected))`. Closing twice does nothing
    /// more.
    pub fn close(&self) {
        self.shared.close();
    }
}

impl std::fmt::Debug for ReactorSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReactorSocket")
            .field("local", &self.local_addr().ok())
            .field("peer", &self.peer_addr().ok())
            .finish()
    }
}

/// A connected pair on loopback: a [`ReactorSocket`] on the current runtime's
/// reactor, and its peer as a plain blocking `std::net::TcpStream`. Must be
/// called inside a tokio runtime.
pub fn loopback_pair() -> io::Result<(ReactorSocket, TcpStream)> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let stream = TcpStream::connect(listener.local_addr()?)?;
    let (peer, _) = listener.accept()?;
    peer.set_nodelay(true)?;
    Ok((ReactorSocket::from_std(stream)?, peer))
}
