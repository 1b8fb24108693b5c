//! The lost completion: a receive's result is only looked for in its
//! callback, so a receive that finishes at once is never seen, and the code
//! waits forever for a callback that will not come.

use std::io::Write;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use awd::frame::{Reading, FRAME_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received};
use awd::waits::{self, WaitsFor};
use awd::watchdog::DEADLOCK_LIMIT;

// ANCHOR: lost
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

    /// Receives once and waits for the callback's report.
    /// WRONG: the `Start` is thrown away, so a receive that finishes at once
    /// (`Start::Ready`) is lost, and nothing ever arrives on the channel.
    fn receive(&self) -> Received {
        let completed = self.completed.clone();
        let _ = self.socket.receive(vec![0; 64], move |received| {
            let _ = completed.send(received);
        });
        // Tell the watchdog which receive this thread is about to wait for.
        let receive = WaitsFor::Receive(self.socket.last_receive().expect("just started"));
        waits::blocking("`Receiver::recv`", receive, || self.completions.recv())
            .expect("the connection keeps a sender alive")
    }
}
// ANCHOR_END: lost

const WAIT: Duration = Duration::from_secs(5);

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
    println!("the sensor's reading is already buffered when the receive starts");
    let reading = awd::watchdog::run("server", DEADLOCK_LIMIT, || scenario(true));
    println!("received {reading:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::waits::Verdict;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn a_receive_that_waits_is_seen() {
        let _limit = TestLimit::seconds(10);
        let outcome = watch("server", Duration::from_secs(5), || scenario(false));
        let reading = outcome
            .completed()
            .expect("the callback reports a pending receive");
        assert_eq!(reading.map(|r| r.millidegrees), Some(21_500));
    }

    #[test]
    fn a_receive_that_finishes_at_once_is_lost() {
        let _limit = TestLimit::seconds(10);
        let outcome = watch("server", DEADLOCK_LIMIT, || scenario(true));
        assert_eq!(
            outcome.verdict(),
            Some(Verdict::LostCompletion),
            "{outcome:?}"
        );
    }
}
