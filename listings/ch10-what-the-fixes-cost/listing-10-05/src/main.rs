//! An exercise's solution: Listing 3-1's consumer on the zero-hop socket.
//! The inline continuation now runs in the socket's driver task on the
//! runtime's only thread, and blocking there stops that thread, which is
//! also the thread that runs the reactor.

use std::io::{self, Write};
use std::thread;
use std::time::Duration;

use awd::completion_source::{completion_source, Completion, Continuations};
use awd::frame::{Reading, HEADER_LEN, READING_LEN};
use awd::reactor_socket::{self, ReactorSocket};
use awd::socket::{Received, Start};
use awd::waits::{self, WaitsFor};
use awd::watchdog::DEADLOCK_LIMIT;
use tokio::sync::oneshot;

/// Listing 3-1's bridge, on the zero-hop socket.
fn receive_completion(socket: &ReactorSocket, length: usize) -> Completion<Received> {
    let (source, completion) = completion_source(Continuations::Inline);
    let completer = source.clone();
    if let Start::Ready(received) = socket.receive(vec![0; length], move |received| {
        let _ = completer.set_result(received);
    }) {
        let _ = source.set_result(received);
    }
    completion
}

// ANCHOR: consumer
/// Listing 3-1's consumer: the header's inline continuation waits for the
/// body. Here it runs on the runtime's only thread, in the socket's driver
/// task.
fn receive_reading(socket: ReactorSocket, done: oneshot::Sender<io::Result<Reading>>) {
    receive_completion(&socket, HEADER_LEN).on_completed(move |header| {
        let body = receive_completion(&socket, READING_LEN);
        let this_thread = WaitsFor::Thread(waits::thread_name()); // the runtime's only thread
        let body = waits::blocking("`Completion::wait`", this_thread, || body.wait());
        let reading = match (header, body) {
            (Ok(_), Ok(body)) => {
                Reading::decode(body.bytes().unwrap_or_default()).map_err(io::Error::from)
            }
            _ => Err(io::Error::other("a receive was abandoned")),
        };
        let _ = done.send(reading);
    });
}
// ANCHOR_END: consumer

fn scenario() -> io::Result<Reading> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let server = thread::current().id();
    runtime.block_on(async move {
        let (socket, mut sensor) = reactor_socket::loopback_pair()?;
        let (done, reading) = oneshot::channel();
        receive_reading(socket, done);
        let frame = Reading {
            sensor: 7,
            sequence: 1,
            millidegrees: 21_500,
        }
        .encode();
        thread::spawn(move || {
            let _ = sensor.write_all(&frame[..HEADER_LEN]);
            if waits::wait_until_blocked(server, Duration::from_secs(5)) {
                let _ = sensor.write_all(&frame[HEADER_LEN..]);
            }
            thread::sleep(Duration::from_secs(5));
        });
        reading.await.map_err(io::Error::other)?
    })
}

fn main() {
    let reading = awd::watchdog::run("server", DEADLOCK_LIMIT, scenario);
    println!("received {reading:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn blocking_in_the_driver_task_stops_the_runtime() {
        let _limit = TestLimit::seconds(10);
        let outcome = watch("server", DEADLOCK_LIMIT, scenario);
        assert!(outcome.is_deadlock(), "{outcome:?}");
    }
}
