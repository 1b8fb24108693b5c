//! The receive bridges the book builds, kept here for the chapters that use
//! them after they are introduced.
//!
//! - [`receive`] is Listing 2-3: a receive as a future, with the `Ready` path
//!   handled; waking the task is all the callback does. Both paths spend
//!   tokio's cooperative budget, so a loop of receives that are always
//!   `Ready` (a client that keeps its socket full) still yields to the other
//!   tasks of its worker.
//! - [`receive_completion`] is Listing 3-1's bridge: a receive as a
//!   [`Completion`], so code can be registered to run when it completes,
//!   inline or asynchronously as the [`Continuations`] mode says. A pending
//!   receive's completion source says which receive it completes, so that a
//!   thread stuck waiting for it can be explained by the watchdog.

use std::io::{self, ErrorKind};

use crate::completion_source::{completion_source, Completion, Continuations};
use crate::socket::{CallbackSocket, Received, Start};
use crate::waits::{self, WaitsFor};

// COPY OF: listings/ch02-the-completion-source/listing-02-03/src/main.rs:bridge
// (the book shows that one; a rule test fails when the code of the two
// differs, comments aside)
/// Receives into `buffer`: at once if the bytes are already there, or when
/// the I/O thread runs the callback.
pub async fn receive(socket: &CallbackSocket, buffer: Vec<u8>) -> io::Result<Received> {
    // The mode decides where a registered continuation runs; this bridge
    // registers none (it awaits), so either mode would do.
    let (source, completion) = completion_source(Continuations::Asynchronous);
    let start = socket.receive(buffer, move |received| {
        // On the I/O thread: store the result and wake the task.
        let _ = source.set_result(received);
    });
    match start {
        // Finished at once, so nothing is awaited: spend a unit of the
        // budget here, and yield to the scheduler when it is spent.
        Start::Ready(received) => {
            tokio::task::coop::consume_budget().await;
            Ok(received)
        }
        // Awaiting the completion spends the budget (see `Completion`).
        Start::Pending => completion.await.map_err(|abandoned| {
            // The socket broke its contract and dropped the callback.
            io::Error::new(ErrorKind::ConnectionAborted, abandoned)
        }),
    }
}
// COPY END

/// Starts a receive into `buffer` and returns its completion: already
/// complete if the receive finished at once, completed by the I/O thread's
/// callback otherwise.
pub fn receive_completion(
    socket: &CallbackSocket,
    buffer: Vec<u8>,
    continuations: Continuations,
) -> Completion<Received> {
    let (source, completion) = completion_source(continuations);
    let completer = source.clone();
    let start = socket.receive(buffer, move |received| {
        let _ = completer.set_result(received);
    });
    match start {
        Start::Ready(received) => {
            let _ = source.set_result(received);
        }
        Start::Pending => {
            if let Some(id) = waits::last_receive_started_here() {
                source.completes(WaitsFor::Receive(id));
            }
        }
    }
    completion
}
