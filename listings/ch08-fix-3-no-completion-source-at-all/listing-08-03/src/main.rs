//! "Poll the future where you block" (in .NET, a pumping wait such as
//! `JoinableTaskFactory.Run`): a synchronous handler blocks on the future
//! itself instead of handing its rest to the thread's executor. It completes
//! because the I/O thread, outside that executor, completes the future; it
//! freezes the executor while it waits.

use std::cell::Cell;
use std::io::{self, Write};
use std::rc::Rc;
use std::thread;
use std::time::Duration;

use awd::bridge::receive;
use awd::frame::{Reading, FRAME_LEN, HEADER_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread, IO_THREAD_NAME};
use awd::waits::{self, WaitsFor};

/// Receives one reading with the bridge of Listing 2-3.
async fn receive_reading(socket: CallbackSocket) -> io::Result<Reading> {
    let received = receive(&socket, vec![0; FRAME_LEN]).await?;
    let bytes = received.result?;
    Ok(Reading::decode(
        received.buffer[..bytes]
            .get(HEADER_LEN..)
            .unwrap_or_default(),
    )?)
}

// ANCHOR: poll_here
/// The synchronous handler polls the future itself, in the blocking call:
/// the I/O thread's wake-up unparks this thread directly, and nothing is
/// handed to this thread's executor.
fn on_refresh_clicked(socket: CallbackSocket) -> io::Result<Reading> {
    let delivered_by = WaitsFor::Thread(IO_THREAD_NAME.into());
    waits::blocking("`futures::executor::block_on`", delivered_by, || {
        futures::executor::block_on(receive_reading(socket))
    })
}
// ANCHOR_END: poll_here

/// The `ui` thread runs a ticker task beside the handler; returns the
/// reading and how often the ticker ran while the handler waited.
fn scenario() -> io::Result<(Reading, u32)> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let ui = thread::current().id();
    let sending = thread::spawn(move || -> io::Result<_> {
        assert!(waits::wait_until_blocked(ui, Duration::from_secs(5)));
        thread::sleep(Duration::from_millis(50)); // long enough for ten ticks
        sensor.write_all(
            &Reading {
                sensor: 7,
                sequence: 1,
                millidegrees: 21_500,
            }
            .encode(),
        )?;
        Ok(sensor)
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, async move {
        let ticks = Rc::new(Cell::new(0u32));
        let counted = Rc::clone(&ticks);
        tokio::task::spawn_local(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(5)).await;
                counted.set(counted.get() + 1);
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await; // the ticker is running
        let before = ticks.get();
        let reading = on_refresh_clicked(socket)?;
        Ok((reading, ticks.get() - before))
    });
    sending.join().expect("the sensor thread")?;
    result
}

fn main() {
    match awd::watchdog::run("ui", Duration::from_secs(5), scenario) {
        Ok((reading, ticks)) => {
            println!("received {reading}; the ui thread's other tasks ran {ticks} times meanwhile")
        }
        Err(e) => println!("failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit, DEADLOCK_LIMIT};
    use tokio::io::AsyncReadExt;

    #[test]
    fn it_completes_and_freezes_the_executor() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..10 {
            let outcome = watch("ui", Duration::from_secs(5), scenario);
            let (reading, ticks) = outcome.completed().expect("completes").expect("a reading");
            assert_eq!((reading.millidegrees, ticks), (21_500, 0));
        }
    }

    /// With tokio's own socket on a `current_thread` runtime, the same trick
    /// hangs: the runtime's I/O driver runs on the thread that is blocked.
    #[test]
    fn with_tokio_sockets_the_blocked_thread_was_the_reactor() {
        let _limit = TestLimit::seconds(10);
        let outcome = watch("ui", DEADLOCK_LIMIT, || {
            let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
            let mut sensor = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (accepted, _) = listener.accept().unwrap();
            accepted.set_nonblocking(true).unwrap();
            let ui = thread::current().id();
            thread::spawn(move || {
                assert!(waits::wait_until_blocked(ui, Duration::from_secs(5)));
                sensor.write_all(&[0; FRAME_LEN]).unwrap();
                thread::sleep(Duration::from_secs(5));
            });
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut stream = tokio::net::TcpStream::from_std(accepted).unwrap();
                let mut frame = [0u8; FRAME_LEN];
                let waits_for = WaitsFor::Thread(waits::thread_name());
                waits::blocking("`futures::executor::block_on`", waits_for, || {
                    futures::executor::block_on(stream.read_exact(&mut frame)).is_ok()
                })
            })
        });
        assert!(outcome.is_deadlock(), "{outcome:?}");
    }
}
