//! The receive bridge: a callback-style receive turned into a future with a
//! completion source, and a sensor connection served with plain `.await`s.

use std::io::{self, ErrorKind, Write};
use std::thread;
use std::time::Duration;

use awd::completion_source::{completion_source, Continuations};
use awd::frame::{Decoder, Reading};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start};

// ANCHOR: bridge
/// Receives into `buffer`: at once if the bytes are already there, or when
/// the I/O thread runs the callback.
pub async fn receive(socket: &CallbackSocket, buffer: Vec<u8>) -> io::Result<Received> {
    // The mode decides where a registered continuation runs; this bridge
    // registers none (it awaits), so either mode would do.
    let (source, completion) = completion_source(Continuations::Asynchronous);
    let start = socket.receive(buffer, move |received| {
        // On the I/O thread: store the result and wake the task. Nothing
        // else runs here.
        let _ = source.set_result(received);
    });
    match start {
        // Finished while starting: no callback will come, so nothing to
        // await. Spend a unit of tokio's budget anyway, as an await would:
        // a loop of receives that are always ready then still yields.
        Start::Ready(received) => {
            tokio::task::coop::consume_budget().await;
            Ok(received)
        }
        Start::Pending => completion.await.map_err(|abandoned| {
            // The socket broke its contract and dropped the callback.
            io::Error::new(ErrorKind::ConnectionAborted, abandoned)
        }),
    }
}
// ANCHOR_END: bridge

// ANCHOR: serve
/// Reads readings until the peer closes the stream.
async fn serve(socket: &CallbackSocket) -> io::Result<Vec<Reading>> {
    let mut decoder = Decoder::new();
    let mut readings = Vec::new();
    loop {
        let received = receive(socket, vec![0; 256]).await?;
        let n = received.result?;
        if n == 0 {
            decoder.finish()?; // an error if the stream ended mid-frame
            return Ok(readings);
        }
        decoder.push(&received.buffer[..n]);
        while let Some(reading) = decoder.next_reading() {
            readings.push(reading?);
        }
    }
}
// ANCHOR_END: serve

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let sending = thread::spawn(move || -> io::Result<()> {
        for sequence in 1..=5 {
            let reading = Reading {
                sensor: 7,
                sequence,
                millidegrees: 21_000 + sequence as i32,
            };
            sensor.write_all(&reading.encode())?;
            thread::sleep(Duration::from_millis(2)); // some arrive while the server waits
        }
        Ok(()) // dropping the stream closes it
    });
    let readings = serve(&socket).await?;
    // A blocking join on the runtime's only thread: harmless here, since the
    // sensor has finished sending and no other task needs this thread.
    sending.join().expect("the sensor thread")?;
    for reading in &readings {
        println!("{reading}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[tokio::test]
    async fn both_paths_of_the_bridge_deliver_the_bytes() {
        let _limit = TestLimit::seconds(10);
        let io = IoThread::start().unwrap();
        let (socket, mut peer) = loopback_pair(&io).unwrap();
        // Already buffered: the bridge returns without awaiting.
        peer.write_all(b"ab").unwrap();
        assert!(socket.wait_until_buffered(2, Duration::from_secs(5)));
        let received = receive(&socket, vec![0; 8]).await.unwrap();
        assert_eq!(received.bytes(), Some(&b"ab"[..]));
        assert_eq!(socket.receive_callbacks(), 0);
        // Not buffered: the callback completes the source.
        let for_peer = socket.clone();
        let writer = thread::spawn(move || {
            assert!(for_peer.wait_for_pending_receive(Duration::from_secs(5)));
            peer.write_all(b"cd").unwrap();
            peer
        });
        let received = receive(&socket, vec![0; 8]).await.unwrap();
        assert_eq!(received.bytes(), Some(&b"cd"[..]));
        assert_eq!(socket.receive_callbacks(), 1);
        drop(writer.join());
    }

    #[tokio::test]
    async fn a_reset_and_a_closed_socket_are_errors_not_hangs() {
        let _limit = TestLimit::seconds(10);
        let io = IoThread::start().unwrap();
        let (socket, peer) = loopback_pair(&io).unwrap();
        socket.close();
        let error = receive(&socket, vec![0; 8])
            .await
            .unwrap()
            .result
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::NotConnected);
        drop(peer);
        let (socket, peer) = loopback_pair(&io).unwrap();
        let closer = socket.clone();
        let closing = thread::spawn(move || {
            assert!(closer.wait_for_pending_receive(Duration::from_secs(5)));
            closer.close();
        });
        let error = receive(&socket, vec![0; 8])
            .await
            .unwrap()
            .result
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ConnectionAborted);
        closing.join().unwrap();
        drop(peer);
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_error() {
        let _limit = TestLimit::seconds(10);
        let io = IoThread::start().unwrap();
        let (socket, mut peer) = loopback_pair(&io).unwrap();
        peer.write_all(&[0, 10, 1]).unwrap();
        drop(peer);
        let error = serve(&socket).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::UnexpectedEof);
    }
}
