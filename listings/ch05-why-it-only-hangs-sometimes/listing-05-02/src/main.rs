//! Listing 4-1's `result_of`, with the hidden variable made explicit: when
//! the sensor's bytes arrive, relative to the first poll of the receive.

use std::io::{self, Write};
use std::thread;
use std::time::Duration;

use awd::bridge::receive_completion;
use awd::completion_source::Continuations;
use awd::frame::{Reading, FRAME_LEN, HEADER_LEN};
use awd::message_loop::{result_of, MessageLoop};
use awd::socket::{loopback_pair, CallbackSocket, IoThread};
use awd::waits;
use awd::watchdog::DEADLOCK_LIMIT;

const WAIT: Duration = Duration::from_secs(5);

/// When the sensor's bytes arrive, relative to the code that waits for them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timing {
    /// Already in the kernel's buffer when the receive starts.
    AlreadyBuffered,
    /// After the receive started, but delivered before the first poll
    /// looks for the result.
    CompletionBeatsTheWait,
    /// Only once the handler is blocked.
    ArrivesLater,
}

// ANCHOR: receive_reading
/// Receives one reading. With `CompletionBeatsTheWait`, it lets the I/O
/// thread deliver the receive between starting it and looking for the
/// result, which is the race a real server loses or wins at random.
async fn receive_reading(socket: CallbackSocket, timing: Timing) -> io::Result<Reading> {
    let completion = receive_completion(&socket, vec![0; FRAME_LEN], Continuations::Asynchronous);
    if timing == Timing::CompletionBeatsTheWait {
        while !completion.is_complete() {
            thread::sleep(Duration::from_millis(1)); // the sensor's bytes are on their way
        }
    }
    let received = completion.await.map_err(io::Error::other)?;
    let bytes = received.result?;
    Ok(Reading::decode(
        received.buffer[..bytes]
            .get(HEADER_LEN..)
            .unwrap_or_default(),
    )?)
}
// ANCHOR_END: receive_reading

fn scenario(timing: Timing) -> io::Result<Reading> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let frame = Reading {
        sensor: 7,
        sequence: 1,
        millidegrees: 21_500,
    }
    .encode();
    if timing == Timing::AlreadyBuffered {
        sensor.write_all(&frame)?;
        assert!(socket.wait_until_buffered(FRAME_LEN, WAIT));
    }
    let ui = thread::current().id();
    let waiting = socket.clone();
    let sending = thread::spawn(move || -> io::Result<_> {
        match timing {
            Timing::AlreadyBuffered => {}
            Timing::CompletionBeatsTheWait => {
                assert!(waiting.wait_for_pending_receive(WAIT));
                sensor.write_all(&frame)?;
            }
            Timing::ArrivesLater => {
                assert!(waits::wait_until_blocked(ui, WAIT));
                sensor.write_all(&frame)?;
            }
        }
        Ok(sensor)
    });
    let reading =
        MessageLoop::run_until(async move { result_of(receive_reading(socket, timing)) })?;
    sending.join().expect("the sensor thread")?;
    reading
}

fn main() {
    for timing in [
        Timing::AlreadyBuffered,
        Timing::CompletionBeatsTheWait,
        Timing::ArrivesLater,
    ] {
        println!("{timing:?}:");
        match awd::watchdog::run("ui", DEADLOCK_LIMIT, move || scenario(timing)) {
            Ok(reading) => println!("  received {reading}"),
            Err(e) => println!("  failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn the_same_code_passes_or_deadlocks_by_timing_alone() {
        let _limit = TestLimit::seconds(30);
        for _ in 0..10 {
            for timing in [Timing::AlreadyBuffered, Timing::CompletionBeatsTheWait] {
                let outcome = watch("ui", WAIT, move || scenario(timing));
                let description = format!("{timing:?}: {outcome:?}");
                let reading = outcome.completed().expect(&description).expect("a reading");
                assert_eq!(reading.millidegrees, 21_500, "{timing:?}");
            }
        }
        let outcome = watch("ui", DEADLOCK_LIMIT, || scenario(Timing::ArrivesLater));
        assert!(outcome.is_deadlock(), "{outcome:?}");
    }
}
