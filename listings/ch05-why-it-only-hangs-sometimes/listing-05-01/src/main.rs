//! Listing 3-1's consumer, with the hidden variable made explicit: when the
//! sensor's bytes arrive, relative to the code that waits for them.

use std::io::{self, Write};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use awd::bridge::receive_completion;
use awd::completion_source::{Abandoned, Completion, Continuations};
use awd::frame::{payload_length, Reading, FRAME_LEN, HEADER_LEN, READING_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, IO_THREAD_NAME};
use awd::waits::{self, WaitsFor};
use awd::watchdog::DEADLOCK_LIMIT;

const WAIT: Duration = Duration::from_secs(5);

// ANCHOR: timing
/// When the sensor's bytes arrive, relative to the code that waits for them.
#[derive(Clone, Copy, Debug)]
enum Timing {
    /// Already in the kernel's buffer when the receive starts.
    AlreadyBuffered,
    /// After the receive started, but delivered before the waiting code
    /// registered its continuation.
    CompletionBeatsTheWait,
    /// Only once the waiting code is registered and waiting.
    ArrivesLater,
}
// ANCHOR_END: timing

// ANCHOR: consumer
/// Listing 3-1's consumer: the header's continuation receives the body and
/// waits for it. `before_registering` runs between starting the header's
/// receive and registering the continuation.
fn receive_reading(
    socket: CallbackSocket,
    before_registering: impl FnOnce(&Completion<Received>),
    done: Sender<io::Result<Reading>>,
) {
    // Inline, as in Listing 3-1; `-- --asynchronous` runs the exercise.
    let mode = if run_with("--asynchronous") {
        Continuations::Asynchronous
    } else {
        Continuations::Inline
    };
    let header = receive_completion(&socket, vec![0; HEADER_LEN], mode);
    before_registering(&header);
    header.on_completed(move |header| {
        let body = receive_completion(&socket, vec![0; READING_LEN], mode);
        let _ = done.send(decode(header, body.wait()));
    });
}
// ANCHOR_END: consumer

fn decode(
    header: Result<Received, Abandoned>,
    body: Result<Received, Abandoned>,
) -> io::Result<Reading> {
    let (header, body) = (
        header.map_err(io::Error::other)?,
        body.map_err(io::Error::other)?,
    );
    let header: [u8; HEADER_LEN] = header
        .bytes()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| io::Error::other("a short header"))?;
    payload_length(header)?;
    Ok(Reading::decode(body.bytes().unwrap_or_default())?)
}

/// One reading, sent with the given timing.
fn scenario(timing: Timing) -> io::Result<Reading> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let frame = Reading {
        sensor: 7,
        sequence: 1,
        millidegrees: 21_500,
    }
    .encode();
    let (done, result) = mpsc::channel();
    match timing {
        Timing::AlreadyBuffered => {
            sensor.write_all(&frame)?;
            assert!(socket.wait_until_buffered(FRAME_LEN, WAIT));
            receive_reading(socket, |_| {}, done);
        }
        Timing::CompletionBeatsTheWait => {
            receive_reading(
                socket,
                |header| {
                    // The receive is pending; the I/O thread completes it now.
                    sensor.write_all(&frame).expect("the frame is sent");
                    while !header.is_complete() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                },
                done,
            );
        }
        Timing::ArrivesLater => {
            receive_reading(socket.clone(), |_| {}, done);
            let header_receive = socket.last_receive().expect("started");
            sensor.write_all(&frame[..HEADER_LEN])?;
            assert!(socket.wait_for_pending_receive_after(header_receive, WAIT));
            sensor.write_all(&frame[HEADER_LEN..])?;
        }
    }
    let waits_for = WaitsFor::Thread(IO_THREAD_NAME.into());
    waits::blocking("`Receiver::recv`", waits_for, || result.recv()).map_err(io::Error::other)?
}

/// True when the program runs with `-- <flag>`: the chapter's exercises use
/// it to change one thing.
fn run_with(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

fn main() {
    for timing in [
        Timing::AlreadyBuffered,
        Timing::CompletionBeatsTheWait,
        Timing::ArrivesLater,
    ] {
        println!("{timing:?}:");
        let reading = awd::watchdog::run("server", DEADLOCK_LIMIT, move || scenario(timing));
        match reading {
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
                let outcome = watch("server", WAIT, move || scenario(timing));
                let reading = outcome.completed().expect("completes").expect("a reading");
                assert_eq!(reading.millidegrees, 21_500, "{timing:?}");
            }
        }
        let outcome = watch("server", DEADLOCK_LIMIT, || scenario(Timing::ArrivesLater));
        assert!(outcome.is_deadlock(), "{outcome:?}");
    }
}
