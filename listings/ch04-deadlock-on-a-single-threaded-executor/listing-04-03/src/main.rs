//! The passing twin of the single-threaded executor deadlock: the handler
//! is async and awaits the receive, so the thread goes back to its executor
//! while it waits.

use std::io::{self, Write};
use std::thread;
use std::time::Duration;

use awd::bridge::receive;
use awd::frame::{Reading, FRAME_LEN, HEADER_LEN};
use awd::message_loop::MessageLoop;
use awd::socket::{loopback_pair, CallbackSocket, IoThread};

/// Receives one reading with the bridge of Listing 2-3.
async fn receive_reading(socket: CallbackSocket) -> io::Result<Reading> {
    let received = receive(&socket, vec![0; FRAME_LEN]).await?;
    let bytes = received.result?;
    let frame = &received.buffer[..bytes];
    Ok(Reading::decode(
        frame.get(HEADER_LEN..).unwrap_or_default(),
    )?)
}

// ANCHOR: handler
/// The event handler, async all the way: awaiting gives the thread back to
/// its message loop, which runs the receive's rest when it completes.
async fn on_refresh_clicked(socket: CallbackSocket) -> io::Result<Reading> {
    receive_reading(socket).await
}
// ANCHOR_END: handler

/// The UI thread: the message loop of Listing 4-1 runs the handler and
/// awaits it. The sensor answers only once the receive is waiting.
fn scenario() -> io::Result<Reading> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let waiting = socket.clone();
    let sending = thread::spawn(move || -> io::Result<_> {
        assert!(waiting.wait_for_pending_receive(Duration::from_secs(5)));
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
    let reading = MessageLoop::run_until(on_refresh_clicked(socket))?;
    sending.join().expect("the sensor thread")?;
    reading
}

fn main() {
    match awd::watchdog::run("ui", Duration::from_secs(5), scenario) {
        Ok(reading) => println!("received {reading}"),
        Err(e) => println!("failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn awaiting_instead_of_blocking_completes() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..20 {
            let outcome = watch("ui", Duration::from_secs(5), scenario);
            let reading = outcome.completed().expect("completes").expect("a reading");
            assert_eq!(reading.millidegrees, 21_500);
        }
    }
}
