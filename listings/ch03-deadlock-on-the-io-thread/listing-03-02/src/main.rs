//! The passing twin of the inline-continuation deadlock: the same inline
//! continuation, which now registers another continuation for the body
//! instead of blocking, so the I/O thread returns at once.

use std::io::{self, Write};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use awd::bridge::receive_completion;
use awd::completion_source::{Abandoned, Continuations};
use awd::frame::{payload_length, Reading, HEADER_LEN, READING_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, IO_THREAD_NAME};
use awd::waits::{self, WaitsFor};

/// The reading in a header and a body, or why not.
fn decode(
    header: Result<Received, Abandoned>,
    body: Result<Received, Abandoned>,
) -> io::Result<Reading> {
    let header = header.map_err(io::Error::other)?;
    let body = body.map_err(io::Error::other)?;
    let header: [u8; HEADER_LEN] = header
        .bytes()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| io::Error::other("a short header"))?;
    payload_length(header)?;
    let body = body.bytes().ok_or_else(|| io::Error::other("no body"))?;
    Ok(Reading::decode(body)?)
}

// ANCHOR: consumer
/// Receives one reading: first its header; the continuation starts the
/// body's receive and leaves another continuation for it, without waiting.
fn receive_reading(socket: CallbackSocket, done: Sender<io::Result<Reading>>) {
    let header = receive_completion(&socket, vec![0; HEADER_LEN], Continuations::Inline);
    header.on_completed(move |header| {
        // Inline mode: this runs inside `set_result`, on the I/O thread...
        let body = receive_completion(&socket, vec![0; READING_LEN], Continuations::Inline);
        if run_with("--block") {
            // The exercise: wait for the body here, as Listing 3-1 does.
            let _ = done.send(decode(header, body.wait()));
            return;
        }
        body.on_completed(move |body| {
            let _ = done.send(decode(header, body));
        });
        // ...and returns at once, so the I/O thread can deliver the body.
    });
}
// ANCHOR_END: consumer

/// A sensor sends one reading, header first; the body follows once the
/// server is waiting for it.
fn scenario() -> io::Result<Reading> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let frame = Reading {
        sensor: 7,
        sequence: 1,
        millidegrees: 21_500,
    }
    .encode();
    let (done, result) = mpsc::channel();

    receive_reading(socket.clone(), done); // returns once the continuation is registered
    let header_receive = socket.last_receive().expect("the header's receive started");
    sensor.write_all(&frame[..HEADER_LEN])?;
    assert!(socket.wait_for_pending_receive_after(header_receive, Duration::from_secs(5)));
    sensor.write_all(&frame[HEADER_LEN..])?;

    let waits_for = WaitsFor::Thread(IO_THREAD_NAME.into());
    waits::blocking("`Receiver::recv`", waits_for, || result.recv()).map_err(io::Error::other)?
}

/// True when the program runs with `-- <flag>`: the chapter's exercises use
/// it to change one thing.
fn run_with(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

fn main() {
    println!("the sensor sends a header, then the body once the server waits for it");
    let limit = if run_with("--block") {
        awd::watchdog::DEADLOCK_LIMIT
    } else {
        Duration::from_secs(5)
    };
    let reading = awd::watchdog::run("server", limit, scenario);
    match reading {
        Ok(reading) => println!("received {reading}"),
        Err(e) => println!("failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn the_reading_arrives_every_time() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..20 {
            let outcome = watch("server", Duration::from_secs(5), scenario);
            let reading = outcome.completed().expect("completes").expect("a reading");
            assert_eq!(reading.millidegrees, 21_500);
        }
    }
}
