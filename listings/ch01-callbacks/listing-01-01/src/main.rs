//! Both ways a receive can end: at once, because the bytes were already
//! buffered (no callback), or later, with the callback on the I/O thread.

use std::io::Write;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use awd::socket::{loopback_pair, IoThread, Received, Start};

const WAIT: Duration = Duration::from_secs(5);

/// The received bytes as text, or the error.
fn text(received: &Received) -> String {
    match received.bytes() {
        Some(bytes) => format!("{:?}", String::from_utf8_lossy(bytes)),
        None => format!("{:?}", received.result),
    }
}

fn thread_name() -> String {
    thread::current().name().unwrap_or("unnamed").to_string()
}

fn main() -> std::io::Result<()> {
    let io = IoThread::start()?;
    let (socket, mut peer) = loopback_pair(&io)?;

    // ANCHOR: both_paths
    // 1. The bytes are already buffered: the receive finishes as it starts.
    peer.write_all(b"21.5")?;
    assert!(socket.wait_until_readable(WAIT));
    let first = socket.receive(vec![0; 64], |_| {
        println!("never printed: a receive that is Ready calls no callback");
    });
    match first {
        Start::Ready(received) => {
            println!(
                "receive 1 finished at once, on `{}`: {}",
                thread_name(),
                text(&received)
            );
        }
        Start::Pending => println!("receive 1 is pending"),
    }

    // 2. Nothing is buffered: the receive waits; the callback reports later.
    let (done, finished) = mpsc::channel();
    let second = socket.receive(vec![0; 64], move |received| {
        println!(
            "receive 2 completed in its callback, on `{}`: {}",
            thread_name(),
            text(&received)
        );
        let _ = done.send(());
    });
    match second {
        Start::Ready(received) => println!("receive 2 finished at once: {}", text(&received)),
        Start::Pending => println!("receive 2 is pending: its callback will run later"),
    }
    // ANCHOR_END: both_paths

    // Send only once the receive is registered, so it really waits.
    assert!(socket.wait_for_pending_receive(WAIT));
    peer.write_all(b"21.7")?;
    finished
        .recv_timeout(WAIT)
        .expect("the callback of a pending receive runs exactly once");
    Ok(())
}
