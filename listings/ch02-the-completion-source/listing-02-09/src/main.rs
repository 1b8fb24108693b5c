//! An exercise's solution: a time limit on the bridge. The timeout drops
//! the completion, but not the receive: it stays pending in the socket until
//! bytes arrive or the socket is closed.

use std::io::{self, ErrorKind};
use std::time::Duration;

use awd::bridge::receive;
use awd::socket::{loopback_pair, CallbackSocket, IoThread, Received, Start};

// ANCHOR: within
/// Listing 2-3's bridge, given `limit` to complete.
async fn receive_within(
    socket: &CallbackSocket,
    buffer: Vec<u8>,
    limit: Duration,
) -> io::Result<Received> {
    match tokio::time::timeout(limit, receive(socket, buffer)).await {
        Ok(received) => received,
        Err(_elapsed) => Err(io::Error::new(ErrorKind::TimedOut, "no bytes in time")),
    }
}
// ANCHOR_END: within

/// What a receive started now reports at once, if anything.
fn at_once(socket: &CallbackSocket) -> String {
    match socket.receive(vec![0; 8], |_| {}) {
        Start::Ready(received) => match received.result {
            Ok(n) => format!("{n} bytes"),
            Err(e) => format!("{:?}: {e}", e.kind()),
        },
        Start::Pending => "pending".to_string(),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let io = IoThread::start()?;
    let (socket, _silent_sensor) = loopback_pair(&io)?;
    let limit = Duration::from_millis(50);
    match receive_within(&socket, vec![0; 8], limit).await {
        Ok(_) => println!("received bytes from a silent sensor?"),
        Err(e) => println!("receive_within: {:?}: {e}", e.kind()),
    }
    println!("a receive started after the timeout: {}", at_once(&socket));
    socket.close(); // completes the abandoned receive with an error
    println!("after closing the socket: {}", at_once(&socket));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[tokio::test]
    async fn a_timed_out_receive_keeps_the_socket_busy() {
        let _limit = TestLimit::seconds(10);
        let io = IoThread::start().unwrap();
        let (socket, _sensor) = loopback_pair(&io).unwrap();
        let error = receive_within(&socket, vec![0; 8], Duration::from_millis(20))
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::TimedOut);
        assert!(at_once(&socket).starts_with("ResourceBusy"));
    }
}
