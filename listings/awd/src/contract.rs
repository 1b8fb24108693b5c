//! The contract that both completion-style sockets keep, stated once:
//! [`CallbackSocket`], driven by its own I/O thread, and [`ReactorSocket`],
//! driven by tokio's reactor. This module also holds the refusals and
//! helpers that both sockets share.
//!
//! Starting an operation returns a [`Start`]:
//!
//! - [`Start::Ready`]: the operation finished while it was being started (the
//!   bytes were already buffered, or the error is immediate). The result is in
//!   your hands now and **the callback is not called**.
//! - [`Start::Pending`]: the operation waits. The callback runs later,
//!   **exactly once**, with the result. Each socket's documentation says
//!   which thread runs it.
//!
//! A receive's result is the number of bytes placed at the front of the buffer;
//! `Ok(0)` is the end of the stream (the peer closed its side). Failures (a
//! reset connection, a closed socket) come through the same result.
//!
//! | situation | [`CallbackSocket`] | [`ReactorSocket`] |
//! |---|---|---|
//! | a zero-length buffer | `Ready(Err(InvalidInput))` | the same |
//! | a receive started while another receive is pending | `Ready(Err(ResourceBusy))`, and the same for sends | the same (it has no callback sends) |
//! | an operation started on a closed socket | `Ready(Err(NotConnected))` | the same |
//! | the socket closed, or its last handle dropped, while an operation is pending | its callback runs with `Err(ConnectionAborted)`, on the I/O thread | its callback runs with `Err(ConnectionAborted)`, from a task on the runtime |
//! | what drives the socket stopped while an operation is pending | the I/O thread stopped: its callback runs on the I/O thread with `Err(ConnectionAborted)` | the runtime shut down: its callback runs with `Err(ConnectionAborted)`, on the thread that shuts it down |
//! | an operation started after what drives the socket stopped | `Ready(Err(ConnectionAborted))`, saying why it stopped | a receive that would wait: `Ready(Err(ConnectionAborted))` |
//!
//! No operation is ever dropped silently, and no input makes either socket
//! panic. `tests/socket_contract.rs` and `tests/reactor_socket_contract.rs`
//! check each row.
//!
//! [`CallbackSocket`]: crate::socket::CallbackSocket
//! [`ReactorSocket`]: crate::reactor_socket::ReactorSocket

use std::io::{self, ErrorKind};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// How an operation started: finished now, or a callback will follow.
///
/// Ignoring it is a bug, the lost completion of chapter 1: a `Ready` result
/// is the only report of an operation that finished at once.
#[derive(Debug)]
#[must_use = "a `Ready` result is the only report of an operation that finished at once"]
pub enum Start<T> {
    /// Finished while starting; the callback will not be called.
    Ready(T),
    /// The callback will be called later, once.
    Pending,
}

/// The result of a receive: the buffer handed in, and how many bytes at its
/// front were received (`Ok(0)` at the end of the stream).
#[derive(Debug)]
pub struct Received {
    /// The caller's buffer, given back.
    pub buffer: Vec<u8>,
    /// Bytes received, or why not.
    pub result: io::Result<usize>,
}

impl Received {
    /// The received bytes, if the receive succeeded.
    pub fn bytes(&self) -> Option<&[u8]> {
        self.result.as_ref().ok().map(|&n| &self.buffer[..n])
    }
}

/// The result of a send: how many bytes were sent (all of them, on success).
pub type Sent = io::Result<usize>;

/// Locks one of a socket's mutexes. A callback that panicked elsewhere must
/// not wedge the socket: the state each lock protects is updated in single
/// steps and stays consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An error of this `kind` that says `message`.
pub(crate) fn error(kind: ErrorKind, message: &str) -> io::Error {
    io::Error::new(kind, message.to_string())
}

/// The receives the contract refuses at once, whatever drives the socket:
/// into a zero-length buffer, on a closed socket, or while another receive
/// is pending.
pub(crate) fn refused_receive(buffer: &[u8], closed: bool, pending: bool) -> Option<io::Error> {
    if buffer.is_empty() {
        Some(error(
            ErrorKind::InvalidInput,
            "cannot receive into a zero-length buffer",
        ))
    } else if closed {
        Some(error(ErrorKind::NotConnected, "the socket is closed"))
    } else if pending {
        Some(error(
            ErrorKind::ResourceBusy,
            "a receive is already pending on this socket",
        ))
    } else {
        None
    }
}
