//! Fix 1 does not cure the single-threaded context deadlock: the callback
//! hands the completion to another thread, and that thread posts the rest of
//! the receive to the blocked thread's message queue.

use std::io::{self, Write};
use std::thread;
use std::time::Duration;

use awd::completion_source::{completion_source, Continuations};
use awd::frame::{Reading, FRAME_LEN, HEADER_LEN};
use awd::message_loop::{result_of, MessageLoop};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start};
use awd::waits;
use awd::watchdog::DEADLOCK_LIMIT;

// ANCHOR: hand_off
/// Listing 2-3's bridge, with the completion handed off to a new thread.
pub async fn receive(socket: &CallbackSocket, buffer: Vec<u8>) -> io::Result<Received> {
    let (source, completion) = completion_source(Continuations::Asynchronous);
    let start = socket.receive(buffer, move |received| {
        let hand_off = thread::Builder::new().name("hand-off".to_string());
        let _ = hand_off.spawn(move || {
            let _ = source.set_result(received); // wakes the task from here
        });
    });
    match start {
        Start::Ready(received) => Ok(received),
        Start::Pending => completion.await.map_err(io::Error::other),
    }
}
// ANCHOR_END: hand_off

/// Receives one reading with the bridge above.
async fn receive_reading(socket: CallbackSocket) -> io::Result<Reading> {
    let received = receive(&socket, vec![0; FRAME_LEN]).await?;
    let bytes = received.result?;
    let frame = &received.buffer[..bytes];
    Ok(Reading::decode(
        frame.get(HEADER_LEN..).unwrap_or_default(),
    )?)
}

/// A synchronous event handler, as a UI framework would call it.
fn on_refresh_clicked(socket: CallbackSocket) -> io::Result<Reading> {
    result_of(receive_reading(socket))
}

/// The UI thread of Listing 4-1: a message loop whose first message is the
/// click. The sensor answers only once that thread is blocked.
fn scenario() -> io::Result<Reading> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let ui = thread::current().id();
    let sending = thread::spawn(move || -> io::Result<_> {
        assert!(waits::wait_until_blocked(ui, Duration::from_secs(5)));
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
    let reading = MessageLoop::run_until(async move { on_refresh_clicked(socket) })?;
    sending.join().expect("the sensor thread")?;
    reading
}

fn main() {
    let reading = awd::watchdog::run("ui", DEADLOCK_LIMIT, scenario);
    println!("received {reading:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn the_hand_off_leaves_the_executor_deadlock_in_place() {
        let _limit = TestLimit::seconds(10);
        let outcome = watch("ui", DEADLOCK_LIMIT, scenario);
        assert!(outcome.is_deadlock(), "{outcome:?}");
    }
}
