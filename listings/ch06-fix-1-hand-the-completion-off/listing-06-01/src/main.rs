//! Fix 1 for the inline-continuation deadlock: the callback hands the
//! completion to another thread, the `Task.Run` analogue, so the I/O thread
//! returns at once and the inline continuation runs (and blocks) elsewhere.

use std::io::{self, Write};
use std::sync::mpsc::{self, Sender};
use std::thread;
use std::time::Duration;

use awd::completion_source::{completion_source, Abandoned, Completion, Continuations};
use awd::frame::{payload_length, Reading, HEADER_LEN, READING_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start, IO_THREAD_NAME};
use awd::waits::{self, WaitsFor};
use tokio::runtime::Handle;

// ANCHOR: hand_off
/// Where the callback hands the completion.
#[derive(Clone)]
pub enum HandOff {
    /// A new thread, named `handed-off`.
    Thread,
    /// tokio's blocking pool: `spawn_blocking`.
    SpawnBlocking(Handle),
    /// A tokio task: `spawn`.
    Spawn(Handle),
    /// No hand-off: complete right here, on the I/O thread (Listing 3-1).
    Nowhere,
}

/// Listing 3-1's bridge, with the completion handed off: the callback only
/// moves the result elsewhere, and `set_result` (and any inline
/// continuation) runs there.
pub fn receive_completion(
    socket: &CallbackSocket,
    buffer: Vec<u8>,
    continuations: Continuations,
    hand_off: HandOff,
) -> Completion<Received> {
    let (source, completion) = completion_source(continuations);
    let completer = source.clone();
    let start = socket.receive(buffer, move |received| {
        // On the I/O thread: hand the completion off, and return.
        let complete = move || {
            let _ = completer.set_result(received);
        };
        match hand_off {
            HandOff::Thread => {
                thread::Builder::new()
                    .name("handed-off".into())
                    .spawn(complete)
                    .expect("a thread");
            }
            HandOff::SpawnBlocking(runtime) => drop(runtime.spawn_blocking(complete)),
            HandOff::Spawn(runtime) => drop(runtime.spawn(async move { complete() })),
            HandOff::Nowhere => complete(),
        }
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
// ANCHOR_END: hand_off

/// Listing 3-1's consumer, unchanged but for the hand-off: the header's
/// inline continuation receives the body and blocks for it. Reports the
/// reading and the thread the continuation ran on.
fn receive_reading(
    socket: CallbackSocket,
    hand_off: HandOff,
    done: Sender<io::Result<(Reading, String)>>,
) {
    let header = receive_completion(
        &socket,
        vec![0; HEADER_LEN],
        Continuations::Inline,
        hand_off.clone(),
    );
    header.on_completed(move |header| {
        let body = receive_completion(
            &socket,
            vec![0; READING_LEN],
            Continuations::Inline,
            hand_off,
        );
        let reading = decode(header, body.wait());
        let _ = done.send(reading.map(|r| (r, waits::thread_name())));
    });
}

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

/// Listing 3-1's scenario: the header, then the body once the continuation
/// waits for it.
fn scenario(hand_off: HandOff) -> io::Result<(Reading, String)> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let frame = Reading {
        sensor: 7,
        sequence: 1,
        millidegrees: 21_500,
    }
    .encode();
    let (done, result) = mpsc::channel();
    receive_reading(socket.clone(), hand_off, done);
    let header_receive = socket.last_receive().expect("started");
    sensor.write_all(&frame[..HEADER_LEN])?;
    assert!(socket.wait_for_pending_receive_after(header_receive, Duration::from_secs(5)));
    sensor.write_all(&frame[HEADER_LEN..])?;
    let waits_for = WaitsFor::Thread(IO_THREAD_NAME.into());
    waits::blocking("`Receiver::recv`", waits_for, || result.recv()).map_err(io::Error::other)?
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("runtime")
        .enable_all()
        .build()
        .expect("a runtime")
}

/// True when the program runs with `-- <flag>`: the chapter's exercises use
/// it to change one thing.
fn run_with(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

fn main() {
    if run_with("--no-hand-off") {
        // The exercise: the same consumer, with nothing handed off.
        let reading = awd::watchdog::run("server", awd::watchdog::DEADLOCK_LIMIT, || {
            scenario(HandOff::Nowhere)
        });
        println!("received {reading:?}");
        return;
    }
    let runtime = runtime();
    let hand_offs = [
        ("a new thread", HandOff::Thread),
        (
            "spawn_blocking",
            HandOff::SpawnBlocking(runtime.handle().clone()),
        ),
        ("a tokio task", HandOff::Spawn(runtime.handle().clone())),
    ];
    for (name, hand_off) in hand_offs {
        match awd::watchdog::run("server", Duration::from_secs(5), move || scenario(hand_off)) {
            Ok((reading, on)) => {
                println!("handed off to {name}: received {reading}; the continuation ran on `{on}`")
            }
            Err(e) => println!("handed off to {name}: failed: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn every_hand_off_cures_the_inline_continuation_deadlock() {
        let _limit = TestLimit::seconds(30);
        let runtime = runtime();
        for _ in 0..10 {
            for hand_off in [
                HandOff::Thread,
                HandOff::SpawnBlocking(runtime.handle().clone()),
                HandOff::Spawn(runtime.handle().clone()),
            ] {
                let outcome = watch("server", Duration::from_secs(5), move || scenario(hand_off));
                let (reading, on) = outcome.completed().expect("completes").expect("a reading");
                assert_eq!(reading.millidegrees, 21_500);
                assert_ne!(on, IO_THREAD_NAME, "the continuation left the I/O thread");
            }
        }
    }
}
