//! "Receive until the buffer is full", without looking for the end of the
//! stream: once the peer has closed, every receive returns 0 bytes at once,
//! and the loop asks again, forever, at full speed.

use std::io::{self, Write};

use awd::bridge::receive; // the bridge of Listing 2-3
use awd::frame::{Reading, FRAME_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread};
use awd::waits;
use awd::watchdog::DEADLOCK_LIMIT;

// ANCHOR: spin
/// Fills `frame` with the next bytes of the stream.
/// WRONG: a receive of 0 bytes (the end of the stream) adds nothing, and the
/// loop receives again, and again.
async fn receive_frame(socket: &CallbackSocket, frame: &mut [u8]) -> io::Result<()> {
    let mut filled = 0;
    while filled < frame.len() {
        let received = receive(socket, vec![0; frame.len() - filled]).await?;
        let n = received.result?;
        frame[filled..filled + n].copy_from_slice(&received.buffer[..n]);
        filled += n;
        waits::busy("receive"); // counted, so the watchdog can see a spin
    }
    Ok(())
}
// ANCHOR_END: spin

fn main() {
    let result = awd::watchdog::run("server", DEADLOCK_LIMIT, || {
        let runtime = tokio::runtime::Builder::new_current_thread().build()?;
        runtime.block_on(async {
            let io = IoThread::start()?;
            let (socket, mut sensor) = loopback_pair(&io)?;
            let frame = Reading {
                sensor: 7,
                sequence: 1,
                millidegrees: 21_500,
            }
            .encode();
            sensor.write_all(&frame[..5])?;
            drop(sensor);
            println!(
                "the sensor sent 5 bytes of a {FRAME_LEN}-byte frame, then closed the connection"
            );
            let mut buffer = [0; FRAME_LEN];
            receive_frame(&socket, &mut buffer).await
        })
    });
    println!("receive_frame returned {result:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::waits::Verdict;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn the_end_of_the_stream_makes_it_spin() {
        let _limit = TestLimit::seconds(10);
        let outcome = watch("server", DEADLOCK_LIMIT, || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(async {
                    let io = IoThread::start().unwrap();
                    let (socket, sensor) = loopback_pair(&io).unwrap();
                    drop(sensor);
                    receive_frame(&socket, &mut [0; 4]).await
                })
        });
        assert_eq!(outcome.verdict(), Some(Verdict::Spinning), "{outcome:?}");
    }
}
