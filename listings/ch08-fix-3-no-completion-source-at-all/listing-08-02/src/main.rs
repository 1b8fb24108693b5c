//! Fix 3 alone does not cure the single-threaded executor deadlock: with
//! tokio's own socket, and no completion source anywhere, a handler that
//! blocks the executor's only thread still waits forever, even when the
//! reading is already in the kernel's buffer.

use std::io::{self, Read, Write};
use std::thread;
use std::time::Duration;

use awd::frame::{Reading, FRAME_LEN, HEADER_LEN};
use awd::message_loop::{result_of, MessageLoop};
use awd::waits;
use awd::watchdog::DEADLOCK_LIMIT;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

// ANCHOR: still_blocking
/// Reads one frame with tokio: no callback, no completion source.
async fn read_reading(mut stream: TcpStream) -> io::Result<Reading> {
    let mut frame = [0u8; FRAME_LEN];
    stream.read_exact(&mut frame).await?;
    Ok(Reading::decode(&frame[HEADER_LEN..])?)
}

/// Listing 4-1's synchronous handler, now on tokio's socket.
fn on_refresh_clicked(stream: TcpStream) -> io::Result<Reading> {
    result_of(read_reading(stream))
}
// ANCHOR_END: still_blocking

/// The `ui` thread's message loop; the reading is buffered before the handler
/// runs, or sent once the thread is blocked.
fn scenario(already_buffered: bool) -> io::Result<Reading> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let mut sensor = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (accepted, _) = listener.accept()?;
    let frame = Reading {
        sensor: 7,
        sequence: 1,
        millidegrees: 21_500,
    }
    .encode();
    if already_buffered {
        sensor.write_all(&frame)?;
        let mut peek = [0u8; FRAME_LEN];
        while accepted.peek(&mut peek)? < FRAME_LEN {
            thread::sleep(Duration::from_millis(1));
        }
    }
    let ui = thread::current().id();
    let sending = thread::spawn(move || -> io::Result<_> {
        if !already_buffered {
            assert!(waits::wait_until_blocked(ui, Duration::from_secs(5)));
            sensor.write_all(&frame)?;
        }
        let _ = sensor.read(&mut [0u8; 1]); // keeps the connection open
        Ok(())
    });
    accepted.set_nonblocking(true)?;
    let reading =
        MessageLoop::run_until(async move { on_refresh_clicked(TcpStream::from_std(accepted)?) })?;
    drop(sending);
    reading
}

fn main() {
    println!("the reading is already in the kernel's buffer when the handler runs");
    let reading = awd::watchdog::run("ui", DEADLOCK_LIMIT, || scenario(true));
    println!("received {reading:?}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn blocking_the_runtime_thread_deadlocks_whatever_the_timing() {
        let _limit = TestLimit::seconds(10);
        for already_buffered in [true, false] {
            let outcome = watch("ui", DEADLOCK_LIMIT, move || scenario(already_buffered));
            assert!(outcome.is_deadlock(), "{already_buffered}: {outcome:?}");
        }
    }
}
