//! A synchronous step that must block, moved off the executor's thread with
//! `spawn_blocking`: the async code awaits it, and the executor keeps
//! running its other tasks meanwhile.

use std::cell::Cell;
use std::io::{self, Write};
use std::rc::Rc;
use std::thread;
use std::time::Duration;

use awd::bridge::receive;
use awd::frame::{Reading, FRAME_LEN, HEADER_LEN};
use awd::socket::{loopback_pair, CallbackSocket, IoThread};

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

// ANCHOR: spawn_blocking
/// A synchronous handler from a library we cannot change: it blocks until
/// it has a reading. On a blocking-pool thread, `Handle::block_on` is
/// allowed: that thread drives no runtime. On a `current_thread` runtime it
/// cannot drive I/O or timers either; the I/O thread completes this read.
fn refresh_synchronously(
    runtime: tokio::runtime::Handle,
    socket: CallbackSocket,
) -> io::Result<Reading> {
    runtime.block_on(receive_reading(socket))
}

/// The async side hands the blocking call to tokio's blocking pool and
/// awaits it, so this thread's executor keeps running.
async fn on_refresh_clicked(socket: CallbackSocket) -> io::Result<Reading> {
    let runtime = tokio::runtime::Handle::current();
    if run_with("--block-here") {
        // The exercise: call the blocking function right here instead.
        return refresh_synchronously(runtime, socket);
    }
    tokio::task::spawn_blocking(move || refresh_synchronously(runtime, socket)).await?
}
// ANCHOR_END: spawn_blocking

/// The `ui` thread runs a ticker task beside the handler.
fn scenario() -> io::Result<(Reading, u32)> {
    let io = IoThread::start()?;
    let (socket, mut sensor) = loopback_pair(&io)?;
    let waiting = socket.clone();
    let sending = thread::spawn(move || -> io::Result<_> {
        assert!(waiting.wait_for_pending_receive(Duration::from_secs(5)));
        thread::sleep(Duration::from_millis(50));
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
        let reading = on_refresh_clicked(socket).await?;
        Ok((reading, ticks.get()))
    });
    sending.join().expect("the sensor thread")?;
    result
}

/// True when the program runs with `-- <flag>`: the chapter's exercises use
/// it to change one thing.
fn run_with(flag: &str) -> bool {
    std::env::args().any(|a| a == flag)
}

fn main() {
    if run_with("--block-here") {
        // The watchdog reports a panic's message; skip the default report,
        // whose file and line say where inside tokio it panicked.
        std::panic::set_hook(Box::new(|_| {}));
    }
    match awd::watchdog::run("ui", Duration::from_secs(5), scenario) {
        Ok((reading, ticks)) => println!(
            "received {reading}; the ui thread's other tasks kept running: {}",
            ticks > 0
        ),
        Err(e) => println!("failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::{watch, TestLimit};

    #[test]
    fn the_executor_keeps_running_while_the_blocking_call_waits() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..10 {
            let outcome = watch("ui", Duration::from_secs(5), scenario);
            let (reading, ticks) = outcome.completed().expect("completes").expect("a reading");
            assert_eq!(reading.millidegrees, 21_500);
            assert!(ticks > 0, "the ticker ran while the handler waited");
        }
    }
}
