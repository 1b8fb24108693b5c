//! "Receive until the buffer is full", repaired: a receive of 0 bytes before
//! the frame is complete is the end of the stream, and an error.

use std::io::{self, Write};

use awd::bridge::receive; // the bridge of Listing 2-3
use awd::frame::{FrameError, Reading, FRAME_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread};

// ANCHOR: exact
/// Fills `frame` with the next bytes of the stream, or fails with
/// `UnexpectedEof` if the stream ends first.
async fn receive_frame(socket: &CallbackSocket, frame: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < frame.len() {
        let received = receive(socket, vec![0; frame.len() - filled]).await?;
        let n = received.result?;
        if n == 0 && !run_with("--no-eof-check") {
            return Err(FrameError::Truncated { received: filled }.into());
        }
        awd::waits::busy("receive"); // counted, so the watchdog can see a spin
        frame[filled..filled + n].copy_from_slice(&received.buffer[..n]);
        filled += n;
    }
    Ok(())
}
// ANCHOR_END: exact

/// True when the program runs with `-- <flag>`: the chapter's exercises use
/// it to change one thing.
fn run_with(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

fn main() -> io::Result<()> {
    // With the check switched off, the watchdog stops the spin.
    awd::watchdog::run("server", awd::watchdog::DEADLOCK_LIMIT, || {
        tokio::runtime::Builder::new_current_thread()
            .build()?
            .block_on(serve())
    })
}

async fn serve() -> io::Result<()> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let reading = Reading {
        sensor: 7,
        sequence: 1,
        millidegrees: 21_500,
    };
    sensor.write_all(&reading.encode())?;
    sensor.write_all(&reading.encode()[..5])?;
    drop(sensor);
    let mut frame = [0; FRAME_LEN];
    for _ in 0..2 {
        match receive_frame(&socket, &mut frame).await {
            Ok(()) => println!(
                "a frame: {}",
                Reading::decode(&frame[2..]).map_err(io::Error::from)?
            ),
            Err(e) => println!("{:?}: {e}", e.kind()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[tokio::test]
    async fn the_end_of_the_stream_is_an_error_at_once() {
        let _limit = TestLimit::seconds(10);
        let io = IoThread::start().unwrap();
        let (socket, sensor) = loopback_pair(&io).unwrap();
        drop(sensor);
        let error = receive_frame(&socket, &mut [0; 4]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_zero_length_frame_needs_no_receive() {
        let _limit = TestLimit::seconds(10);
        let io = IoThread::start().unwrap();
        let (socket, _sensor) = loopback_pair(&io).unwrap();
        receive_frame(&socket, &mut []).await.unwrap();
    }
}
