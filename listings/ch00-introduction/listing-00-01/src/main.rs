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
/// thread of its own, the way an I/O completion thread would.
fn read_sensor_with_callback(sensor: u16, on_done: impl FnOnce(Reading) + Send + 'static) {
    thread::spawn(move || {
        on_done(Reading {
            sensor,
            celsius: 21.5,
        })
    });
}

// ANCHOR: bridge
/// The bridge: a callback completes a `oneshot`, and the task awaits it.
async fn read_sensor(sensor: u16) -> Reading {
    let (completion, result) = oneshot::channel();
    read_sensor_with_callback(sensor, move |reading| {
        // Completing only wakes the awaiting task; it never runs it here.
        let _ = completion.send(reading);
    });
    result.await.expect("the callback dropped its completion")
}
// ANCHOR_END: bridge

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let reading = read_sensor(7).await;
    println!("sensor {} reads {:.1} °C", reading.sensor, reading.celsius);
}
