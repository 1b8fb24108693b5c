//! A Rust future is woken, not run: the code after each `.await` runs where
//! the executor polls the task, never inside the I/O thread's callback.

use std::io::{self, Write};
use std::thread;
use std::time::Duration;

use awd::bridge::receive;
use awd::frame::{Reading, HEADER_LEN, READING_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread};
use awd::waits;

// ANCHOR: woken
/// The header, then the body, with the bridge of Listing 2-3. Returns the
/// reading and the thread the code after the first `.await` ran on.
async fn receive_reading(socket: &CallbackSocket) -> io::Result<(Reading, String)> {
    let header = receive(socket, vec![0; HEADER_LEN]).await?;
    let after_await = waits::thread_name(); // the code after `.await` runs here
    header.result?;
    let body = receive(socket, vec![0; READING_LEN]).await?;
    let bytes = body.result?;
    Ok((Reading::decode(&body.buffer[..bytes])?, after_await))
}
// ANCHOR_END: woken

#[tokio::main(flavor = "current_thread")]
async fn main() -> io::Result<()> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let waiting = socket.clone();
    let sending = thread::spawn(move || -> io::Result<()> {
        let frame = Reading {
            sensor: 7,
            sequence: 1,
            millidegrees: 21_500,
        }
        .encode();
        assert!(waiting.wait_for_pending_receive(Duration::from_secs(5)));
        let header = waiting.last_receive().expect("started"); // before the body's
        sensor.write_all(&frame[..HEADER_LEN])?;
        assert!(waiting.wait_for_pending_receive_after(header, Duration::from_secs(5)));
        sensor.write_all(&frame[HEADER_LEN..])
    });
    let (reading, after_await) = receive_reading(&socket).await?;
    sending.join().expect("the sensor thread")?;
    println!("received {reading}; the code after `.await` ran on `{after_await}`");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn the_code_after_await_never_runs_on_the_io_thread() {
        let _limit = TestLimit::seconds(10);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("runtime")
            .build()
            .unwrap();
        let io = IoThread::start().unwrap();
        for _ in 0..20 {
            let (socket, mut sensor) = loopback_pair(&io).unwrap();
            let task = runtime.spawn(async move { receive_reading(&socket).await });
            std::thread::sleep(Duration::from_millis(1));
            let frame = Reading {
                sensor: 1,
                sequence: 2,
                millidegrees: 3,
            }
            .encode();
            sensor.write_all(&frame[..HEADER_LEN]).unwrap();
            std::thread::sleep(Duration::from_millis(1));
            sensor.write_all(&frame[HEADER_LEN..]).unwrap();
            let (reading, on) = runtime.block_on(task).unwrap().unwrap();
            assert_eq!(reading.millidegrees, 3);
            assert_eq!(on, "runtime");
        }
    }
}
