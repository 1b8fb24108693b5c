//! The completion-style socket of [`crate::socket`] with its I/O thread
//! removed: pending receives are driven by tokio's own reactor, and their
//! callbacks run on the runtime's thread, so a callback that wakes a task of
//! that runtime hands it no work across threads. Chapter 10 measures what this
//! saves.
//!
//! # The contract
//!
//! [`ReactorSocket::receive`] keeps [`CallbackSocket::receive`]'s two ways of
//! finishing, and its results:
//!
//! - [`Start::Ready`]: the receive finished while it was being started (the
//!   bytes were already buffered, or the error is immediate). **The callback is
//!   not called.**
//! - [`Start::Pending`]: the callback runs later, **exactly once**, with the
//!   result: on the thread that runs the runtime's I/O driver (the runtime's
//!   only thread, on a `current_thread` runtime), inside the reactor's turn.
//!
//! | situation | outcome |
//! |---|---|
//! | zero-length buffer | `Ready(Err(InvalidInput))` |
//! | a receive started while another receive is pending | `Ready(Err(ResourceBusy))` |
//! | a receive started on a closed socket | `Ready(Err(NotConnected))` |
//! | the socket closed, or its last handle dropped, with a receive pending | its callback runs with `Err(ConnectionAborted)`, from a task on the runtime |
//! | the runtime shut down with a receive pending | its callback runs with an error, on the thread that shuts it down |
//!
//! `Ok(0)` is the end of the stream, as before.
//!
//! # How
//!
//! The socket is registered with the runtime's reactor through
//! [`tokio::io::unix::AsyncFd`]. A receive first tries a plain non-blocking
//! read; if no bytes are there, it leaves a waker of its own with the reactor
//! (`poll_read_ready`) instead of a task's. When the socket becomes readable,
//! the reactor calls that waker, on its own thread, and the waker does what the
//! I/O thread's loop does: it reads, and calls the callback. No task is
//! scheduled for the read itself and no other thread is involved.
//!
//! The price is where callbacks run: inside the reactor, on the runtime's
//! thread. A callback that blocks, or that runs for long, stops every task of
//! that runtime, not just one I/O thread. Keep callbacks short, as the I/O
//! thread already required; here it is not a courtesy but the runtime's
//! health.
//!
//! A socket must be created inside a tokio runtime ([`ReactorSocket::from_std`]
//! returns an error elsewhere) whose I/O driver is enabled (`enable_io`, or
//! `enable_all`, as `#[tokio::main]` does). This
//! socket records nothing for [`crate::waits`]: the watchdog cannot explain a
//! thread stuck on it.
//!
//! [`CallbackSocket::receive`]: crate::socket::CallbackSocket::receive

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Wake, Waker};

use tokio::io::unix::AsyncFd;
use tokio::runtime::Handle;

use crate::socket::{error, lock, refused_receive, Received, Start};

type ReceiveCallback = Box<dyn FnOnce(Received) + Send>;

struct PendingReceive {
    buffer: Vec<u8>,
    callback: ReceiveCallback,
}

#[derive(Default)]
struct State {
    receive: Option<PendingReceive>,
    closed: bool,
}

struct Shared {
    fd: AsyncFd<TcpStream>,
    state: Mutex<State>,
    /// What the reactor calls when the socket becomes readable: it finishes
    /// the pending receive. It holds the socket weakly, so a registration left
    /// with the reactor keeps nothing alive.
    waker: Waker,
    runtime: Handle,
    completions: AtomicUsize,
}

/// The waker left with the reactor.
struct Readable(Weak<Shared>);

impl Wake for Readable {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if let Some(shared) = self.0.upgrade() {
            shared.continue_receive();
        }
    }
}

impl Shared {
    /// Reads into `buffer` if the reactor says the socket is readable;
    /// otherwise leaves [`Shared::waker`] with the reactor and returns
    /// `Pending`.
    fn poll_read(&self, buffer: &mut [u8]) -> Poll<io::Result<usize>> {
        let mut cx = Context::from_waker(&self.waker);
        loop {
            let mut ready = match self.fd.poll_read_ready(&mut cx) {
                Poll::Pending => return Poll::Pending,
                // The runtime is shutting down: no readiness will ever come.
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(ready)) => ready,
            };
            // `try_io` forgets the readiness when the read would block, so the
            // next turn of the loop waits for a fresh event.
            match ready.try_io(|fd| fd.get_ref().read(buffer)) {
                Ok(Err(e)) if e.kind() == ErrorKind::Interrupted => {}
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => {}
            }
        }
    }

    /// The reactor saw the socket readable: finish the pending receive, if
    /// any. Runs on the reactor's thread.
    fn continue_receive(&self) {
        let mut state = lock(&self.state);
        let Some(mut pending) = state.receive.take() else {
            return; // nothing pending (a stale wake-up, or closed meanwhile)
        };
        let result = match self.poll_read(&mut pending.buffer) {
            Poll::Pending => {
                state.receive = Some(pending); // not really readable: keep waiting
                return;
            }
            Poll::Ready(result) => result,
        };
        drop(state); // never call back while holding the lock
        self.completions.fetch_add(1, Ordering::SeqCst);
        (pending.callback)(Received {
            buffer: pending.buffer,
            result,
        });
    }

    /// Marks the socket closed, shuts the connection down, and aborts a
    /// pending receive. Closing twice does nothing more.
    fn close(&self) {
        let pending = {
            let mut state = lock(&self.state);
            if state.closed {
                return;
            }
            state.closed = true;
            state.receive.take()
        };
        let _ = self.fd.get_ref().shutdown(Shutdown::Both);
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

/// A pending receive that will never get its bytes: dropping it calls its
/// callback with `ConnectionAborted`.
struct Aborted(Option<PendingReceive>);

impl Drop for Aborted {
    fn drop(&mut self) {
        if let Some(pending) = self.0.take() {
            (pending.callback)(Received {
                buffer: pending.buffer,
                result: Err(error(
                    ErrorKind::ConnectionAborted,
                    "the socket was closed while the receive was pending",
                )),
            });
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
        let shared = Arc::new_cyclic(|weak| Shared {
            fd,
            state: Mutex::new(State::default()),
            waker: Waker::from(Arc::new(Readable(weak.clone()))),
            runtime,
            completions: AtomicUsize::new(0),
        });
        Ok(ReactorSocket { shared })
    }

    /// Starts receiving into `buffer` (up to its length). See the module
    /// documentation for the contract.
    pub fn receive<F>(&self, mut buffer: Vec<u8>, on_complete: F) -> Start<Received>
    where
        F: FnOnce(Received) + Send + 'static,
    {
        let ready = |buffer, result| Start::Ready(Received { buffer, result });
        // The attempt and the registration happen under one lock: a reactor
        // event in between finds the receive registered, or waits for it.
        let mut state = lock(&self.shared.state);
        if let Some(refusal) = refused_receive(&buffer, state.closed, state.receive.is_some()) {
            return ready(buffer, Err(refusal));
        }
        // A plain read first: bytes already buffered complete at once, even on
        // a fresh socket whose reactor readiness is still empty.
        let first = loop {
            match self.shared.fd.get_ref().read(&mut buffer) {
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        let result = match first {
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                match self.shared.poll_read(&mut buffer) {
                    Poll::Ready(result) => result,
                    Poll::Pending => {
                        state.receive = Some(PendingReceive {
                            buffer,
                            callback: Box::new(on_complete),
                        });
                        return Start::Pending;
                    }
                }
            }
            other => other,
        };
        ready(buffer, result)
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
