//! The lost completion, ported naively to the bridge: the `Start` is
//! ignored. In Rust the dropped callback drops the completion source with
//! it, and the waiter gets an error instead of hanging.

use std::io::{self, ErrorKind, Write};
use std::time::Duration;

use awd::completion_source::{completion_source, Continuations};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received};

// ANCHOR: lost
/// Receives into `buffer`.
/// WRONG: ignores how the receive started, and always awaits the callback.
pub async fn receive(socket: &CallbackSocket, buffer: Vec<u8>) -> io::Result<Received> {
    let (source, completion) = completion_source(Continuations::Asynchronous);
    let _ = socket.receive(buffer, move |received| {
        let _ = source.set_result(received);
    });
    completion
        .await
        .map_err(|abandoned| io::Error::new(ErrorKind::ConnectionAborted, abandoned))
}
// ANCHOR_END: lost

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let io = IoThread::start()?;
    let (socket, mut peer) = loopback_pair(&io)?;
    peer.write_all(b"21.5")?;
    assert!(socket.wait_until_readable(Duration::from_secs(5)));
    println!("the reading is already buffered when the receive starts");
    match receive(&socket, vec![0; 16]).await {
        Ok(received) => println!("received {:?}", received.bytes()),
        Err(e) => println!("the receive failed at once: {e}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[tokio::test]
    async fn the_loss_surfaces_as_an_error() {
        let _limit = TestLimit::seconds(10);
        let io = IoThread::start().unwrap();
        let (socket, mut peer) = loopback_pair(&io).unwrap();
        peer.write_all(b"x").unwrap();
        assert!(socket.wait_until_readable(Duration::from_secs(5)));
        let error = receive(&socket, vec![0; 4]).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::ConnectionAborted);
    }
}
