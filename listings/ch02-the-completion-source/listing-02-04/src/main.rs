//! The same bridge with `tokio::sync::oneshot`: the channel is the
//! completion source, and its types rule out completing twice.

use std::io::{self, ErrorKind, Write};
use std::thread;
use std::time::Duration;

use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start};
use tokio::sync::oneshot;

// ANCHOR: bridge
/// Receives into `buffer`: at once if the bytes are already there, or when
/// the I/O thread runs the callback.
pub async fn receive(socket: &CallbackSocket, buffer: Vec<u8>) -> io::Result<Received> {
    let (sender, result) = oneshot::channel();
    let start = socket.receive(buffer, move |received| {
        // `send` takes the sender by value: a second send cannot compile.
        let _ = sender.send(received);
    });
    match start {
        Start::Ready(received) => Ok(received),
        Start::Pending => result.await.map_err(|dropped| {
            // The callback was dropped without sending.
            io::Error::new(ErrorKind::ConnectionAborted, dropped)
        }),
    }
}
// ANCHOR_END: bridge

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let io = IoThread::start()?;
    let (socket, mut peer) = loopback_pair(&io)?;
    peer.write_all(b"21.5")?;
    assert!(socket.wait_until_readable(Duration::from_secs(5)));
    let first = receive(&socket, vec![0; 16]).await?;

    let waiting = socket.clone();
    let sender = thread::spawn(move || -> io::Result<()> {
        assert!(waiting.wait_for_pending_receive(Duration::from_secs(5)));
        peer.write_all(b"21.7")
    });
    let second = receive(&socket, vec![0; 16]).await?;
    sender.join().expect("the sending thread")?;

    for received in [first, second] {
        println!(
            "{:?}",
            String::from_utf8_lossy(received.bytes().unwrap_or_default())
        );
    }
    println!("callbacks run: {}", socket.receive_callbacks());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[tokio::test]
    async fn a_dropped_sender_is_an_error_not_a_hang() {
        let _limit = TestLimit::seconds(10);
        let (sender, result) = oneshot::channel::<u32>();
        drop(sender);
        assert!(result.await.is_err());
    }

    #[tokio::test]
    async fn closing_with_a_receive_pending_is_an_error_through_the_bridge() {
        let _limit = TestLimit::seconds(10);
        let io = IoThread::start().unwrap();
        let (socket, _peer) = loopback_pair(&io).unwrap();
        let closer = socket.clone();
        let closing = thread::spawn(move || {
            assert!(closer.wait_for_pending_receive(Duration::from_secs(5)));
            closer.close();
        });
        let received = receive(&socket, vec![0; 8]).await.unwrap();
        assert_eq!(
            received.result.unwrap_err().kind(),
            ErrorKind::ConnectionAborted
        );
        closing.join().unwrap();
    }
}
