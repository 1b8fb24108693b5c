//! sensorlib's raw bindings: the C declarations of `c/sensorlib.h`, written
//! out by hand for Rust, and nothing safe yet (Listing 12-2 wraps them).
//!
//! The C library is compiled and linked by this crate's build script, so a
//! crate that depends on this one gets the library too. Every item mirrors
//! the header one for one; the tests below check the library's behaviours
//! through these bindings, with `extern "C"` callbacks of their own.

// The names are the header's, so that each binding can be checked against it.
#![allow(non_camel_case_types)]

use std::ffi::{c_int, c_uint, c_void};

/// The device: opaque, as in the header.
#[repr(C)]
pub struct sensor_device {
    _opaque: [u8; 0],
}

/// The callback's type: called once per submitted transfer, on the device's
/// event thread, with the device's lock held.
pub type sensor_transfer_cb = unsafe extern "C" fn(transfer: *mut sensor_transfer);

/// `struct sensor_transfer`, field for field.
#[repr(C)]
pub struct sensor_transfer {
    pub device: *mut sensor_device,
    pub direction: c_int,
    pub buffer: *mut u8,
    pub length: c_int,
    pub actual_length: c_int,
    pub status: c_int,
    pub callback: Option<sensor_transfer_cb>,
    pub user_data: *mut c_void,
    /// The library's own.
    pub state_: c_int,
    /// The library's own.
    pub next_: *mut sensor_transfer,
}

pub const SENSOR_TRANSFER_COMPLETED: c_int = 0;
pub const SENSOR_TRANSFER_ERROR: c_int = 1;
pub const SENSOR_TRANSFER_CANCELLED: c_int = 2;
pub const SENSOR_TRANSFER_NO_DEVICE: c_int = 3;

pub const SENSOR_IN: c_int = 0;
pub const SENSOR_OUT: c_int = 1;

pub const SENSOR_SUCCESS: c_int = 0;
pub const SENSOR_ERROR_INVALID_PARAM: c_int = -2;
pub const SENSOR_ERROR_NO_DEVICE: c_int = -4;
pub const SENSOR_ERROR_NOT_FOUND: c_int = -5;
pub const SENSOR_ERROR_BUSY: c_int = -6;

extern "C" {
    pub fn sensor_open(fd: c_int) -> *mut sensor_device;
    pub fn sensor_close(device: *mut sensor_device);
    pub fn sensor_alloc_transfer() -> *mut sensor_transfer;
    pub fn sensor_free_transfer(transfer: *mut sensor_transfer);
    pub fn sensor_submit_transfer(transfer: *mut sensor_transfer) -> c_int;
    pub fn sensor_cancel_transfer(transfer: *mut sensor_transfer) -> c_int;
    pub fn sensor_debug_set_submit_delay(device: *mut sensor_device, microseconds: c_uint);
}

#[cfg(test)]
mod tests {
    //! Each behaviour the chapter attributes to sensorlib, checked through
    //! the raw bindings: the callbacks here are plain `extern "C"` functions
    //! that report what they saw through a channel passed as `user_data`.

    use super::*;
    use awd::watchdog::TestLimit;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsRawFd;
    use std::sync::mpsc::{self, Receiver, Sender};
    use std::thread::{self, ThreadId};
    use std::time::{Duration, Instant};

    /// What a callback saw.
    #[derive(Debug)]
    struct Seen {
        status: c_int,
        actual_length: c_int,
        thread: ThreadId,
        at: Instant,
    }

    /// A callback that reports what it saw; a transfer's `user_data` is a
    /// `&Sender<Seen>` that outlives it.
    unsafe extern "C" fn report(transfer: *mut sensor_transfer) {
        // SAFETY: the library passes the transfer it completes, valid for
        // the call; the tests set `user_data` to a `Sender` they keep alive
        // until every callback has run.
        let (status, actual_length, sender) = unsafe {
            let t = &*transfer;
            (
                t.status,
                t.actual_length,
                &*(t.user_data as *const Sender<Seen>),
            )
        };
        let _ = sender.send(Seen {
            status,
            actual_length,
            thread: thread::current().id(),
            at: Instant::now(),
        });
    }

    /// Like `report`, but holds the callback (and the library's lock) for
    /// 200 ms first.
    unsafe extern "C" fn report_slowly(transfer: *mut sensor_transfer) {
        thread::sleep(Duration::from_millis(200));
        // SAFETY: as in `report`, whose contract this shares.
        unsafe { report(transfer) }
    }

    /// A device on one end of a loopback connection; the other end is the
    /// sensor.
    fn device() -> (*mut sensor_device, TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let sensor = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        // SAFETY: a connected socket that the test keeps open until after
        // `sensor_close`.
        let device = unsafe { sensor_open(server.as_raw_fd()) };
        assert!(!device.is_null());
        (device, server, sensor)
    }

    /// A transfer of `buffer` on `device`, reporting to `sender`.
    fn transfer(
        device: *mut sensor_device,
        direction: c_int,
        buffer: &mut [u8],
        sender: &Sender<Seen>,
        callback: sensor_transfer_cb,
    ) -> *mut sensor_transfer {
        // SAFETY: allocation has no precondition; the fields are set before
        // the transfer is submitted, as the header asks.
        unsafe {
            let t = sensor_alloc_transfer();
            assert!(!t.is_null());
            (*t).device = device;
            (*t).direction = direction;
            (*t).buffer = buffer.as_mut_ptr();
            (*t).length = buffer.len() as c_int;
            (*t).callback = Some(callback);
            (*t).user_data = sender as *const Sender<Seen> as *mut c_void;
            t
        }
    }

    fn next(seen: &Receiver<Seen>) -> Seen {
        seen.recv_timeout(Duration::from_secs(5))
            .expect("a callback within 5 s")
    }

    #[test]
    fn a_transfer_completes_on_the_event_thread() {
        let _limit = TestLimit::seconds(20);
        let (device, _server, mut sensor) = device();
        let (sender, seen) = mpsc::channel();
        let mut buffer = [0u8; 10];
        let t = transfer(device, SENSOR_IN, &mut buffer, &sender, report);
        // SAFETY: a filled-in transfer, and its buffer and sender outlive it.
        assert_eq!(unsafe { sensor_submit_transfer(t) }, SENSOR_SUCCESS);
        sensor.write_all(b"0123456789").unwrap();
        let done = next(&seen);
        assert_eq!(done.status, SENSOR_TRANSFER_COMPLETED);
        assert_eq!(done.actual_length, 10);
        assert_ne!(done.thread, thread::current().id());
        assert_eq!(&buffer, b"0123456789");
        // SAFETY: the callback has run, so the transfer is no longer in
        // flight, and the device is closed once.
        unsafe {
            sensor_free_transfer(t);
            sensor_close(device);
        }
    }

    #[test]
    fn the_event_thread_carries_the_name_sensorlib_gave_it() {
        let _limit = TestLimit::seconds(20);
        let (device, _server, _sensor) = device();
        let names: Vec<String> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .collect();
        // SAFETY: the device was opened above and is closed once.
        unsafe { sensor_close(device) };
        assert!(names.iter().any(|n| n == "sensorlib-event"), "{names:?}");
    }

    #[test]
    fn an_out_transfer_writes_the_whole_buffer() {
        let _limit = TestLimit::seconds(20);
        let (device, _server, mut sensor) = device();
        let (sender, seen) = mpsc::channel();
        let mut bytes = *b"hello, sensor";
        let t = transfer(device, SENSOR_OUT, &mut bytes, &sender, report);
        // SAFETY: as above.
        assert_eq!(unsafe { sensor_submit_transfer(t) }, SENSOR_SUCCESS);
        let done = next(&seen);
        assert_eq!(
            (done.status, done.actual_length),
            (SENSOR_TRANSFER_COMPLETED, 13)
        );
        let mut got = [0u8; 13];
        sensor.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello, sensor");
        // SAFETY: as above.
        unsafe {
            sensor_free_transfer(t);
            sensor_close(device);
        }
    }

    #[test]
    fn a_cancelled_transfer_still_calls_back_with_cancelled() {
        let _limit = TestLimit::seconds(20);
        let (device, _server, _sensor) = device();
        let (sender, seen) = mpsc::channel();
        let mut buffer = [0u8; 10];
        let t = transfer(device, SENSOR_IN, &mut buffer, &sender, report);
        // SAFETY: as above; the transfer stays allocated until freed below.
        unsafe {
            assert_eq!(sensor_submit_transfer(t), SENSOR_SUCCESS);
            assert_eq!(sensor_submit_transfer(t), SENSOR_ERROR_BUSY);
            assert_eq!(sensor_cancel_transfer(t), SENSOR_SUCCESS);
            assert_eq!(sensor_cancel_transfer(t), SENSOR_ERROR_NOT_FOUND);
        }
        let done = next(&seen);
        assert_eq!(done.status, SENSOR_TRANSFER_CANCELLED);
        assert!(seen.recv_timeout(Duration::from_millis(100)).is_err());
        // SAFETY: the callback has run; after it, the transfer is idle.
        unsafe {
            assert_eq!(sensor_cancel_transfer(t), SENSOR_ERROR_NOT_FOUND);
            sensor_free_transfer(t);
            sensor_close(device);
        }
    }

    #[test]
    fn close_ends_every_transfer_in_flight_with_no_device() {
        let _limit = TestLimit::seconds(20);
        let (device, _server, _sensor) = device();
        let (sender, seen) = mpsc::channel();
        let (mut a, mut b) = ([0u8; 4], [0u8; 4]);
        let first = transfer(device, SENSOR_IN, &mut a, &sender, report);
        let second = transfer(device, SENSOR_IN, &mut b, &sender, report);
        // SAFETY: as above; `sensor_close` returns after both callbacks.
        unsafe {
            assert_eq!(sensor_submit_transfer(first), SENSOR_SUCCESS);
            assert_eq!(sensor_submit_transfer(second), SENSOR_SUCCESS);
            sensor_close(device);
        }
        let statuses: Vec<c_int> = seen.try_iter().map(|s| s.status).collect();
        assert_eq!(
            statuses,
            [SENSOR_TRANSFER_NO_DEVICE, SENSOR_TRANSFER_NO_DEVICE]
        );
        // SAFETY: both callbacks ran before `sensor_close` returned.
        unsafe {
            sensor_free_transfer(first);
            sensor_free_transfer(second);
        }
    }

    #[test]
    fn callbacks_run_with_the_device_lock_held() {
        let _limit = TestLimit::seconds(20);
        let (device, _server, mut sensor) = device();
        let (sender, seen) = mpsc::channel();
        let (mut a, mut b) = ([0u8; 1], [0u8; 1]);
        let slow = transfer(device, SENSOR_IN, &mut a, &sender, report_slowly);
        let other = transfer(device, SENSOR_IN, &mut b, &sender, report);
        // SAFETY: as above.
        unsafe {
            assert_eq!(sensor_submit_transfer(slow), SENSOR_SUCCESS);
            assert_eq!(sensor_submit_transfer(other), SENSOR_SUCCESS);
        }
        sensor.write_all(b"x").unwrap(); // completes `slow`, whose callback sleeps
        thread::sleep(Duration::from_millis(50)); // it is inside its callback now
                                                  // SAFETY: `other` is in flight and allocated.
        let cancelled = unsafe { sensor_cancel_transfer(other) };
        let cancel_returned = Instant::now();
        assert_eq!(cancelled, SENSOR_SUCCESS);
        let slow_done = next(&seen);
        assert_eq!(slow_done.status, SENSOR_TRANSFER_COMPLETED);
        // The cancel had to wait for the lock until the callback returned.
        assert!(cancel_returned >= slow_done.at, "{slow_done:?}");
        assert_eq!(next(&seen).status, SENSOR_TRANSFER_CANCELLED);
        // SAFETY: both callbacks have run.
        unsafe {
            sensor_free_transfer(slow);
            sensor_free_transfer(other);
            sensor_close(device);
        }
    }

    #[test]
    fn a_transfer_can_finish_while_it_is_being_submitted() {
        let _limit = TestLimit::seconds(20);
        let (device, _server, mut sensor) = device();
        sensor.write_all(b"ready").unwrap(); // the bytes are there already
        thread::sleep(Duration::from_millis(20));
        let (sender, seen) = mpsc::channel();
        let mut buffer = [0u8; 5];
        let t = transfer(device, SENSOR_IN, &mut buffer, &sender, report);
        // SAFETY: as above.
        let returned = unsafe {
            sensor_debug_set_submit_delay(device, 100_000);
            assert_eq!(sensor_submit_transfer(t), SENSOR_SUCCESS);
            Instant::now()
        };
        let done = next(&seen);
        assert_eq!(done.status, SENSOR_TRANSFER_COMPLETED);
        assert!(
            done.at < returned,
            "the callback ran before submit returned"
        );
        // SAFETY: the callback has run.
        unsafe {
            sensor_free_transfer(t);
            sensor_close(device);
        }
    }

    #[test]
    fn an_empty_transfer_completes_and_a_closed_connection_is_an_error() {
        let _limit = TestLimit::seconds(20);
        let (device, _server, sensor) = device();
        let (sender, seen) = mpsc::channel();
        let mut empty = [0u8; 0];
        let mut buffer = [0u8; 4];
        let nothing = transfer(device, SENSOR_IN, &mut empty, &sender, report);
        let t = transfer(device, SENSOR_IN, &mut buffer, &sender, report);
        // SAFETY: as above.
        unsafe { assert_eq!(sensor_submit_transfer(nothing), SENSOR_SUCCESS) };
        assert_eq!(next(&seen).status, SENSOR_TRANSFER_COMPLETED);
        drop(sensor); // the sensor hangs up
                      // SAFETY: as above.
        unsafe { assert_eq!(sensor_submit_transfer(t), SENSOR_SUCCESS) };
        let done = next(&seen);
        assert_eq!(
            (done.status, done.actual_length),
            (SENSOR_TRANSFER_ERROR, 0)
        );
        // SAFETY: both callbacks have run.
        unsafe {
            sensor_free_transfer(nothing);
            sensor_free_transfer(t);
            sensor_close(device);
        }
    }
}
