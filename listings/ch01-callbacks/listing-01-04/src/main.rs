//! The lost completion repaired: a receive that finishes at once is taken
//! from its `Start::Ready`, and only a pending one waits for the callback.

use std::io::Write;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use awd::frame::{Reading, FRAME_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start};
use awd::waits::{self, WaitsFor};

// ANCHOR: handled
/// One connection, with one long-lived channel that every receive's callback
/// reports to, the way a reused `SocketAsyncEventArgs` keeps one handler.
struct Connection {
    socket: CallbackSocket,
    completed: Sender<Received>,
    completions: Receiver<Received>,
}

impl Connection {
    fn new(socket: CallbackSocket) -> Connection {
        let (completed, completions) = mpsc::channel();
        Connection {
            socket,
            completed,
            completions,
        }
    }

    /// Receives once: takes the result now if the receive finished at once,
    /// and waits for the callback's report only if it is pending.
    fn receive(&self) -> Received {
        let completed = self.completed.clone();
        let start = self.socket.receive(vec![0; 64], move |received| {
            let _ = completed.send(received);
        });
        match start {
            // Finished while starting: no callback will ever come.
            Start::Ready(received) if !run_with("--ignore-ready") => received,
            _ => {
                let receive = WaitsFor::Receive(self.socket.last_receive().expect("just started"));
                waits::blocking("`Receiver::recv`", receive, || self.completions.recv())
                    .expect("the connection keeps a sender alive")
            }
        }
    }
}
// ANCHOR_END: handled

const WAIT: Duration = Duration::from_secs(5);

/// True when the program runs with `-- <flag>`: the exercises use it to
/// switch the repair off.
fn run_with(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

/// One sensor reading arrives, already buffered or not; the server receives it.
fn scenario(already_buffered: bool) -> Option<Reading> {
    let io = IoThread::start().expect("an I/O thread");
    let (socket, mut peer) = loopback_pair(&io).expect("a loopback pair");
    let frame = Reading {
        sensor: 7,
        sequence: 1,
        millidegrees: 21_500,
    }
    .encode();
    let connection = Connection::new(socket.clone());
    let sender = if already_buffered {
        peer.write_all(&frame).expect("the frame is sent");
        assert!(socket.wait_until_buffered(FRAME_LEN, WAIT));
        None
    } else {
        // Send only once the receive is waiting for bytes.
        Some(std::thread::spawn(move || {
            assert!(socket.wait_for_pending_receive(WAIT));
            peer.write_all(&frame).expect("the frame is sent");
            peer
        }))
    };
    let received = connection.receive();
    drop(sender.map(|s| s.join()));
    received
        .bytes()
        .and_then(|bytes| Reading::decode(bytes.get(2..)?).ok())
}

fn main() {
    // With the repair switched off, the watchdog has a deadlock's patience.
    let limit = if run_with("--ignore-ready") {
        awd::watchdog::DEADLOCK_LIMIT
    } else {
        WAIT
    };
    for already_buffered in [true, false] {
        let reading = awd::watchdog::run("server", limit, move || scenario(already_buffered))
            .expect("a reading");
        let path = if already_buffered {
            "finished at once"
        } else {
            "completed in its callback"
        };
        println!("{path}: {reading}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn both_paths_deliver_the_reading() {
        let _limit = TestLimit::seconds(20);
        for already_buffered in [true, false] {
            for _ in 0..20 {
                let outcome = watch("server", WAIT, move || scenario(already_buffered));
                let reading = outcome.completed().expect("completes").expect("a reading");
                assert_eq!(reading.millidegrees, 21_500);
            }
        }
    }
}
