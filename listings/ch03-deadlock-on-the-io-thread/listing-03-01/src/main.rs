//! The inline-continuation deadlock: the I/O thread completes the header's
//! receive, the completion source runs the waiting code right there, and that
//! code blocks for the body, which only the I/O thread can deliver.

use std::io::{self, Write};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use awd::completion_source::{completion_source, Abandoned, Completion, Continuations};
use awd::frame::{payload_length, Reading, HEADER_LEN, READING_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start, IO_THREAD_NAME};
use awd::waits::{self, WaitsFor};
use awd::watchdog::DEADLOCK_LIMIT;

// ANCHOR: deadlock
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
            // Tell the watchdog which receive this completion stands for.
            if let Some(id) = waits::last_receive_started_here() {
                source.completes(WaitsFor::Receive(id));
            }
        }
    }
    completion
}

/// Receives one reading: first its header; the code after that, the
/// continuation, receives the body and waits for it.
fn receive_reading(socket: CallbackSocket, done: Sender<io::Result<Reading>>) {
    let header = receive_completion(&socket, vec![0; HEADER_LEN], Continuations::Inline);
    header.on_completed(move |header| {
        // Inline mode: this runs inside `set_result`, on the I/O thread.
        let body = receive_completion(&socket, vec![0; READING_LEN], Continuations::Inline);
        let body = body.wait(); // blocks this thread until the body arrives
        let _ = done.send(decode(header, body));
    });
}
// ANCHOR_END: deadlock

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
    if run_with("--together") {
        sensor.write_all(&frame)?; // the exercise: header and body at once
    } else {
        let header_receive = socket.last_receive().expect("the header's receive started");
        sensor.write_all(&frame[..HEADER_LEN])?;
        assert!(socket.wait_for_pending_receive_after(header_receive, Duration::from_secs(5)));
        sensor.write_all(&frame[HEADER_LEN..])?;
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
    if run_with("--together") {
        println!("the sensor sends the header and the body together");
    } else {
        println!("the sensor sends a header, then the body once the server waits for it");
    }
    let reading = awd::watchdog::run("server", DEADLOCK_LIMIT, scenario);
    println!("received {reading:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn the_io_thread_deadlocks_every_time() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..3 {
            let outcome = watch("server", DEADLOCK_LIMIT, scenario);
            assert!(outcome.is_deadlock(), "{outcome:?}");
        }
    }
}
