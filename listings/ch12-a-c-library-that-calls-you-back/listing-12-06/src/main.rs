//! The re-entrancy deadlock fixed: the callback only completes the
//! transfer's source; the task awaits it and submits the next transfer from
//! a thread of the runtime, which holds no lock of sensorlib's.

use std::io::{self, Write};

use awd::frame::{Reading, FRAME_LEN, HEADER_LEN};
use listing_12_02::{connected_sensor, Sensor};

// ANCHOR: stream
/// Streams `count` readings: each is submitted after the previous one was
/// awaited, by the task, never by a callback.
async fn stream(sensor: &Sensor, count: usize) -> io::Result<Vec<Reading>> {
    let mut readings = Vec::new();
    while readings.len() < count {
        let frame = sensor.read(FRAME_LEN).await?; // submitted here, on the runtime
        let reading = Reading::decode(&frame[HEADER_LEN..])?;
        println!("reading {}: {:.1} °C", reading.sequence, reading.celsius());
        readings.push(reading);
    }
    Ok(readings)
}
// ANCHOR_END: stream

async fn scenario() -> io::Result<Vec<Reading>> {
    let (sensor, mut peer) = connected_sensor()?;
    for sequence in 1..=3 {
        let frame = Reading {
            sensor: 7,
            sequence,
            millidegrees: 21_500 + 100 * sequence as i32,
        };
        peer.write_all(&frame.encode())?;
    }
    stream(&sensor, 3).await
}

#[tokio::main]
async fn main() -> io::Result<()> {
    let readings = scenario().await?;
    println!("received {} readings", readings.len());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[tokio::test]
    async fn the_task_streams_every_reading() {
        let _limit = TestLimit::seconds(20);
        for _ in 0..10 {
            let readings = scenario().await.unwrap();
            let sequences: Vec<u32> = readings.iter().map(|r| r.sequence).collect();
            assert_eq!(sequences, [1, 2, 3]);
        }
    }
}
