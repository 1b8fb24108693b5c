//! A reading delivered by a callback on another thread, awaited by a task.

use std::thread;

use tokio::sync::oneshot;

/// One sensor reading.
#[derive(Debug)]
struct Reading {
    sensor: u16,
    celsius: f32,
}

/// Stands in for a callback-based API: it calls `on_done` later, from a
/// thread of its own, the way an I/O completion thread would. Run with
/// `-- --forget` to make it a buggy API that drops `on_done` uncalled.
fn read_sensor_with_callback(sensor: u16, on_done: impl FnOnce(Reading) + Send + 'static) {
    let forget = std::env::args().any(|a| a == "--forget");
    thread::spawn(move || {
        if forget {
            drop(on_done);
            return;
        }
        on_done(Reading {
            sensor,
            celsius: 21.5,
        })
    });
}

// ANCHOR: bridge
/// The bridge: a callback completes a `oneshot`, and the task awaits it.
async fn read_sensor(sensor: u16) -> Result<Reading, oneshot::error::RecvError> {
    let (completion, result) = oneshot::channel();
    read_sensor_with_callback(sensor, move |reading| {
        // Completing only wakes the awaiting task; it never runs it here.
        let _ = completion.send(reading);
    });
    result.await
}
// ANCHOR_END: bridge

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match read_sensor(7).await {
        Ok(reading) => {
            println!("sensor {} reads {:.1} °C", reading.sensor, reading.celsius);
            std::process::ExitCode::SUCCESS
        }
        Err(dropped) => {
            println!("no reading: {dropped}");
            std::process::ExitCode::FAILURE
        }
    }
}
