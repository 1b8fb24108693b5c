//! The other way to mishandle a receive that finishes at once: handle it by
//! calling the handler, which starts the next receive, which finishes at
//! once... Every buffered frame nests one call deeper, until the stack runs
//! out.

use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use awd::frame::{Reading, FRAME_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start};

/// The server thread's stack: 1 MiB, so the run is the same on every machine.
const STACK: usize = 1024 * 1024;

thread_local! {
    /// How many `receive_next` calls are on this thread's stack right now.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

struct Connection {
    socket: CallbackSocket,
    handled: AtomicUsize,
    deepest: AtomicUsize,
    ended: Sender<()>,
}

impl Connection {
    /// Counts a reading; false at the end of the stream or on an error.
    fn handle(&self, received: Received) -> bool {
        match received.result {
            Ok(n) if n > 0 => {
                self.handled.fetch_add(1, Ordering::SeqCst);
                true
            }
            _ => {
                let _ = self.ended.send(());
                false
            }
        }
    }
}

// ANCHOR: recursive
/// Starts the next receive of one frame.
/// WRONG: a receive that finished at once is handled by calling
/// `on_received`, which calls `receive_next` again: one level deeper for
/// every frame that was already buffered.
fn receive_next(connection: Arc<Connection>) {
    let depth = DEPTH.with(|d| d.replace(d.get() + 1)) + 1;
    connection.deepest.fetch_max(depth, Ordering::SeqCst);

    let for_callback = Arc::clone(&connection);
    let start = connection
        .socket
        .receive(vec![0; FRAME_LEN], move |received| {
            on_received(for_callback, received)
        });
    if let Start::Ready(received) = start {
        on_received(Arc::clone(&connection), received);
    }

    DEPTH.with(|d| d.set(d.get() - 1));
}

fn on_received(connection: Arc<Connection>, received: Received) {
    if connection.handle(received) {
        receive_next(connection);
    }
}
// ANCHOR_END: recursive

/// Buffers `frames` frames, then starts receiving on a thread with a 1 MiB
/// stack. Returns (frames handled, deepest nesting of `receive_next`).
fn run(frames: u32) -> (usize, usize) {
    let io = IoThread::start().expect("an I/O thread");
    let (socket, mut peer) = loopback_pair(&io).expect("a loopback pair");
    let bytes: Vec<u8> = (1..=frames)
        .flat_map(|sequence| {
            Reading {
                sensor: 7,
                sequence,
                millidegrees: 21_000,
            }
            .encode()
        })
        .collect();
    peer.write_all(&bytes).expect("the frames are sent");
    assert!(
        socket.wait_until_buffered(bytes.len(), Duration::from_secs(5)),
        "the kernel did not buffer all {frames} frames"
    );
    let (ended, end) = mpsc::channel();
    let connection = Arc::new(Connection {
        socket,
        handled: AtomicUsize::new(0),
        deepest: AtomicUsize::new(0),
        ended,
    });
    let server = Arc::clone(&connection);
    thread::Builder::new()
        .name("server".into())
        .stack_size(STACK)
        .spawn(move || receive_next(server))
        .expect("the server thread")
        .join()
        .expect("the server thread finished");
    drop(peer); // the end of the stream: the last, pending receive completes
    end.recv_timeout(Duration::from_secs(5))
        .expect("the end of the stream is reported");
    (
        connection.handled.load(Ordering::SeqCst),
        connection.deepest.load(Ordering::SeqCst),
    )
}

fn main() {
    let frames = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("the number of frames"))
        .unwrap_or(100);
    let (handled, deepest) = run(frames);
    println!(
        "{frames} frames buffered, {handled} handled; receive_next nested {deepest} calls deep"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn nesting_grows_with_every_buffered_frame() {
        let _limit = TestLimit::seconds(20);
        for frames in [1, 10, 100] {
            assert_eq!(run(frames), (frames as usize, frames as usize + 1));
        }
    }

    #[test]
    fn enough_buffered_frames_overflow_the_stack() {
        let _limit = TestLimit::seconds(60);
        // In a child process: a stack overflow aborts the whole process.
        let output = std::process::Command::new(env!("CARGO"))
            .args(["run", "--quiet", "-p", "listing-01-05", "--", "8000"])
            .output()
            .expect("cargo runs the listing");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(
            stderr.contains("thread 'server'") && stderr.contains("has overflowed its stack"),
            "{stderr}"
        );
        assert!(
            stderr.contains("fatal runtime error: stack overflow"),
            "{stderr}"
        );
        // The whole process aborts (SIGABRT, which a shell reports as 134),
        // not only the thread that overflowed.
        #[cfg(unix)]
        {
            use std::os::unix::process::ExitStatusExt;
            const SIGABRT: i32 = 6;
            assert_eq!(output.status.signal(), Some(SIGABRT), "{stderr}");
        }
    }
}
