//! The single-threaded context deadlock: a synchronous handler, running on a
//! UI thread's message loop, blocks that thread on a receive whose rest is
//! posted to that same loop.

use std::io::{self, Write};
use std::thread;
use std::time::Duration;

use awd::bridge::receive;
use awd::frame::{Reading, FRAME_LEN, HEADER_LEN};
use awd::message_loop::{result_of, MessageLoop};
use awd::socket::{loopback_pair, CallbackSocket, IoThread};
use awd::waits;
use awd::watchdog::DEADLOCK_LIMIT;

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
/// A synchronous event handler, as a UI framework would call it: it reads
/// the `.Result` of an async receive.
fn on_refresh_clicked(socket: CallbackSocket) -> io::Result<Reading> {
    result_of(receive_reading(socket))
}

/// The UI thread: a message loop whose first message is the click. The
/// sensor answers only once `ui` is blocked.
fn scenario() -> io::Result<Reading> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let ui = thread::current().id();
    let sensor_thread = thread::spawn(move || -> io::Result<_> {
        if waits::wait_until_blocked(ui, Duration::from_secs(5)) {
            sensor.write_all(&READING.encode())?;
        }
        Ok(sensor)
    });
    let reading = MessageLoop::run_until(async move {
        if run_with("--tokio-block-on") {
            on_refresh_clicked_with_tokio(socket)
        } else {
            on_refresh_clicked(socket)
        }
    })?;
    sensor_thread.join().expect("the sensor thread")?;
    reading
}
// ANCHOR_END: result_of

/// What the sensor sends.
const READING: Reading = Reading {
    sensor: 7,
    sequence: 1,
    millidegrees: 21_500,
};

/// The exercise: tokio's `Handle::block_on` in place of `result_of`.
fn on_refresh_clicked_with_tokio(socket: CallbackSocket) -> io::Result<Reading> {
    tokio::runtime::Handle::current().block_on(receive_reading(socket))
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
    use awd::watchdog::{watch, Outcome, TestLimit};

    #[test]
    fn the_rest_of_the_receive_waits_in_the_blocked_threads_queue() {
        let _limit = TestLimit::seconds(10);
        let outcome = watch("ui", DEADLOCK_LIMIT, scenario);
        assert!(outcome.is_deadlock(), "{outcome:?}");
        let Outcome::Stuck { diagnosis, .. } = outcome else {
            unreachable!()
        };
        let report = diagnosis.lines.join("\n");
        assert!(
            report.contains("posted to the message queue of thread `ui` by thread `awd-io`"),
            "the I/O thread's completion posts the rest to `ui`'s queue:\n{report}"
        );
    }
}
