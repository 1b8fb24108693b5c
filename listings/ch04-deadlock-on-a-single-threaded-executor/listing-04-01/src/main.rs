//! The single-threaded executor deadlock: a synchronous handler, running on
//! the only thread of a `current_thread` runtime, blocks on a receive whose
//! rest can only run on that same thread.

use std::future::Future;
use std::io::{self, Write};
use std::thread;
use std::time::Duration;

use awd::bridge::receive;
use awd::frame::{Reading, FRAME_LEN, HEADER_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread};
use awd::waits::{self, WaitsFor};
use awd::watchdog::DEADLOCK_LIMIT;
use futures::FutureExt;

/// Receives one reading with the bridge of Listing 2-3.
async fn receive_reading(socket: CallbackSocket) -> io::Result<Reading> {
    let received = receive(&socket, vec![0; FRAME_LEN]).await?;
    let bytes = received.result?;
    let frame = &received.buffer[..bytes];
    Ok(Reading::decode(
        frame.get(HEADER_LEN..).unwrap_or_default(),
    )?)
}

// ANCHOR: result_of
/// What C#'s `.Result` does on a single-threaded context, in Rust: run the
/// future right here up to its first wait; if it had to wait, its rest is
/// handed to this thread's executor (the context it captured), and this
/// thread blocks until the rest has run.
fn result_of<F>(future: F) -> F::Output
where
    F: Future + 'static,
    F::Output: 'static,
{
    let mut future = Box::pin(future);
    if let Some(output) = (&mut future).now_or_never() {
        return output; // finished without waiting: nothing to hand over
    }
    let rest = tokio::task::spawn_local(future); // only this thread runs it
    let this_thread = WaitsFor::Thread(waits::thread_name());
    waits::blocking("`futures::executor::block_on`", this_thread, || {
        futures::executor::block_on(rest).expect("the task ran to the end")
    })
}

/// A synchronous event handler, as a UI framework would call it.
fn on_refresh_clicked(socket: CallbackSocket) -> io::Result<Reading> {
    result_of(receive_reading(socket))
}
// ANCHOR_END: result_of

/// The "UI thread": one thread runs a `current_thread` runtime and a
/// `LocalSet`, and calls the handler from a task. The sensor answers only
/// once that thread is blocked.
fn scenario() -> io::Result<Reading> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let ui = thread::current().id();
    let sending = thread::spawn(move || -> io::Result<_> {
        if !waits::wait_until_blocked(ui, Duration::from_secs(5)) {
            return Ok(sensor);
        }
        sensor.write_all(
            &Reading {
                sensor: 7,
                sequence: 1,
                millidegrees: 21_500,
            }
            .encode(),
        )?;
        Ok(sensor)
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let reading = local.block_on(&runtime, async move {
        if run_with("--tokio-block-on") {
            on_refresh_clicked_with_tokio(socket)
        } else {
            on_refresh_clicked(socket)
        }
    });
    sending.join().expect("the sensor thread")?;
    reading
}

/// The exercise: `result_of` with tokio's `Handle::block_on` in place of
/// `futures::executor::block_on`.
fn on_refresh_clicked_with_tokio(socket: CallbackSocket) -> io::Result<Reading> {
    let mut future = Box::pin(receive_reading(socket));
    if let Some(output) = (&mut future).now_or_never() {
        return output;
    }
    let rest = tokio::task::spawn_local(future);
    tokio::runtime::Handle::current()
        .block_on(rest)
        .expect("the task ran to the end")
}

/// True when the program runs with `-- <flag>`: the chapter's exercises use
/// it to change one thing.
fn run_with(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

fn main() {
    if run_with("--tokio-block-on") {
        // The watchdog reports a panic's message; skip the default report,
        // whose file and line say where inside tokio it panicked.
        std::panic::set_hook(Box::new(|_| {}));
    }
    let reading = awd::watchdog::run("ui", DEADLOCK_LIMIT, scenario);
    println!("received {reading:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn the_blocked_thread_is_the_only_one_that_could_finish_the_receive() {
        let _limit = TestLimit::seconds(10);
        let outcome = watch("ui", DEADLOCK_LIMIT, scenario);
        assert!(outcome.is_deadlock(), "{outcome:?}");
    }
}
