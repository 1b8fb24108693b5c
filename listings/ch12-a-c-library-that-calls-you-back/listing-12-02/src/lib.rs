//! A safe wrapper around sensorlib (Listing 12-1): transfers as callbacks
//! and as futures, with the rules of the C library kept by the types.
//!
//! - Each submitted transfer is an [`InFlight`] behind an `Arc`. One strong
//!   reference goes to C as `user_data` and comes back exactly once: in the
//!   callback, whatever the status (completed, cancelled, ended by
//!   [`Sensor`]'s drop), or at once when the submit fails. [`user_data_counts`]
//!   counts both ends.
//! - The buffer lives in the `InFlight`, which C's reference keeps alive, so
//!   it cannot be freed while the library may still write to it.
//! - The callback catches every panic: nothing unwinds into C. A transfer
//!   with a waiting side gets an error naming the panic.
//! - A call into sensorlib from inside one of its callbacks, which holds the
//!   device's lock, is recorded for the watchdog before it blocks.
//!
//! At the end of the file, [`main`] is what `cargo run -p listing-12-02`
//! runs: one transfer of each kind, and the counts.

use std::any::Any;
use std::cell::Cell;
use std::ffi::{c_int, c_void};
use std::future::Future;
use std::io::{self, ErrorKind};
use std::marker::PhantomData;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use awd::completion_source::{completion_source, Completion, Continuations};
use awd::waits::{self, WaitsFor};
use listing_12_01 as sys;

/// A device opened on a connected socket, with sensorlib's event thread.
pub struct Sensor {
    device: NonNull<sys::sensor_device>,
    /// What the event thread is called in the watchdog's reports.
    event_thread: String,
    /// The socket the device borrows: closed after the device.
    _connection: TcpStream,
}

// SAFETY: sensorlib's functions lock the device, so any thread may call them
// with the same device; the one exception, a call from inside a callback,
// locks again a mutex its thread holds: with glibc's default mutex that
// waits forever, a deadlock, not a data race (POSIX leaves it undefined), and
// it is recorded (see `into_c`). Dropping the last handle inside a callback
// closes the device on another thread instead (`Drop for Sensor`).
unsafe impl Send for Sensor {}
// SAFETY: as for `Send`: `&Sensor` only calls sensorlib's locking functions.
unsafe impl Sync for Sensor {}

/// Which way a transfer moves bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the sensor: the buffer is filled.
    In,
    /// To the sensor: the buffer is sent.
    Out,
}

/// How a transfer ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Completed,
    Error,
    Cancelled,
    NoDevice,
}

/// A finished transfer: how it ended, and its buffer, given back.
#[derive(Debug)]
pub struct Done {
    pub status: Status,
    /// For `In`, the bytes received (maybe fewer than asked, unless
    /// `Completed`); for `Out`, the bytes that were to be sent.
    pub buffer: Vec<u8>,
}

impl Done {
    /// The buffer if the transfer completed, or why not.
    pub fn into_result(self) -> io::Result<Vec<u8>> {
        match self.status {
            Status::Completed => Ok(self.buffer),
            Status::Error => Err(io::Error::new(
                ErrorKind::BrokenPipe,
                "the connection failed",
            )),
            Status::Cancelled => Err(io::Error::new(ErrorKind::Interrupted, "cancelled")),
            Status::NoDevice => Err(io::Error::new(ErrorKind::NotConnected, "the device closed")),
        }
    }
}

static USER_DATA_GIVEN: AtomicU64 = AtomicU64::new(0);
static USER_DATA_RECLAIMED: AtomicU64 = AtomicU64::new(0);
static TRANSFERS_FREED: AtomicU64 = AtomicU64::new(0);

/// How many `user_data` references went to C, how many came back, and how
/// many transfers were freed, since the process started.
pub fn user_data_counts() -> (u64, u64, u64) {
    (
        USER_DATA_GIVEN.load(SeqCst),
        USER_DATA_RECLAIMED.load(SeqCst),
        TRANSFERS_FREED.load(SeqCst),
    )
}

type OnDone = Box<dyn FnOnce(Done) + Send>;
type OnPanic = Box<dyn FnOnce(String) + Send>;

/// One submitted transfer, shared by C (through `user_data`) and Rust.
struct InFlight {
    transfer: NonNull<sys::sensor_transfer>,
    /// Shown in reports: "transfer #3".
    number: u64,
    /// The buffer whose heap memory C writes or reads until the callback.
    buffer: Mutex<Option<Vec<u8>>>,
    on_done: Mutex<Option<OnDone>>,
    on_panic: Mutex<Option<OnPanic>>,
}

// SAFETY: the transfer pointer is only passed to sensorlib's functions,
// which lock the device, and freed once, in `drop`; the rest is `Send`.
unsafe impl Send for InFlight {}
// SAFETY: as for `Send`; every other field is behind a mutex.
unsafe impl Sync for InFlight {}

impl Drop for Sensor {
    fn drop(&mut self) {
        if in_callback() {
            // The last handle was dropped inside a callback (a handle moved
            // into `on_done`, say): closing here would lock the device the
            // event thread holds while it runs this callback, and wait for
            // itself. Close on a thread of its own, which takes the lock once
            // the callback has returned.
            let closing = Closing {
                device: self.device,
                _connection: self._connection.try_clone().ok(),
            };
            let closer = std::thread::Builder::new()
                .name("sensorlib-close".into())
                .spawn(move || closing.close());
            if closer.is_err() {
                eprintln!("sensorlib: no thread to close the device; it stays open");
            }
            return;
        }
        // SAFETY: every `Submitted` borrowed `self`, so none is left; the
        // transfers still in flight end with NO_DEVICE, their callbacks run
        // before this returns, and the device is closed once.
        unsafe { sys::sensor_close(self.device.as_ptr()) }
    }
}

/// A device to close away from the event thread (see `Drop for Sensor`).
struct Closing {
    device: NonNull<sys::sensor_device>,
    /// Kept open until the device is closed, as `Sensor` keeps it.
    _connection: Option<TcpStream>,
}

// SAFETY: the device pointer moves to the closing thread, the only one that
// uses it from then on: the `Sensor` it came from has been dropped.
unsafe impl Send for Closing {}

impl Closing {
    fn close(self) {
        // SAFETY: as in `Drop for Sensor`: no handle is left, and the device
        // is closed once, here, after the callback that dropped the last
        // handle has returned and released the device's lock.
        unsafe { sys::sensor_close(self.device.as_ptr()) }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        // SAFETY: the last reference is gone, and C held one until its
        // callback (or the submit failed): the transfer is not in flight,
        // and nothing else will touch it.
        unsafe { sys::sensor_free_transfer(self.transfer.as_ptr()) };
        TRANSFERS_FREED.fetch_add(1, SeqCst);
    }
}

fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

thread_local! {
    /// Set while this thread runs a sensorlib callback, that is, while it
    /// holds the device's lock (sensorlib.h: callbacks run with it held).
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

/// Whether the panic guard is on. Only the chapter's demonstration of an
/// unguarded callback (`-- --no-guard`) turns it off.
static PANIC_GUARD: AtomicBool = AtomicBool::new(true);

fn panic_message(payload: &(dyn Any + Send)) -> String {
    match (
        payload.downcast_ref::<&str>(),
        payload.downcast_ref::<String>(),
    ) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic with a non-string payload".to_string(),
    }
}

// ANCHOR: trampoline
/// The one callback sensorlib ever gets. It runs on the event thread, with
/// the device's lock held.
unsafe extern "C" fn transfer_done(transfer: *mut sys::sensor_transfer) {
    // SAFETY: sensorlib passes the transfer it completes, valid for this
    // call; its `user_data` is the `Arc` that `into_c` leaked for this
    // submit, and sensorlib calls back once per submit, so this is the
    // only `from_raw` for that `into_raw`.
    let (in_flight, status, actual) = unsafe {
        let t = &*transfer;
        let in_flight = Arc::from_raw(t.user_data as *const InFlight);
        (in_flight, t.status, t.actual_length)
    };
    USER_DATA_RECLAIMED.fetch_add(1, SeqCst);
    let _activity = waits::activity(format!(
        "sensorlib's callback of transfer #{}",
        in_flight.number
    ));
    let mut buffer = take(&in_flight.buffer).expect("taken once, here");
    buffer.truncate(usize::try_from(actual).unwrap_or(0)); // C is done with it
    let done = Done {
        status: match status {
            sys::SENSOR_TRANSFER_COMPLETED => Status::Completed,
            sys::SENSOR_TRANSFER_CANCELLED => Status::Cancelled,
            sys::SENSOR_TRANSFER_NO_DEVICE => Status::NoDevice,
            _ => Status::Error,
        },
        buffer,
    };
    let on_done = take(&in_flight.on_done).expect("taken once, here");
    IN_CALLBACK.with(|c| c.set(true));
    if !PANIC_GUARD.load(SeqCst) {
        on_done(done); // a panic here cannot unwind out: the process aborts
    } else if let Err(payload) = catch_unwind(AssertUnwindSafe(|| on_done(done))) {
        let message = panic_message(payload.as_ref());
        let report = take(&in_flight.on_panic).expect("taken once, here");
        if let Err(again) = catch_unwind(AssertUnwindSafe(|| report(message))) {
            eprintln!(
                "a sensorlib callback panicked while reporting a panic: {}",
                panic_message(again.as_ref())
            );
        }
    }
    IN_CALLBACK.with(|c| c.set(false));
    // Dropping `in_flight` may free the transfer: sensorlib allows that in
    // the callback and does not touch the transfer after it.
}
// ANCHOR_END: trampoline

/// True on a thread that is running a sensorlib callback.
pub fn in_callback() -> bool {
    IN_CALLBACK.with(Cell::get)
}

/// Runs `call`, a sensorlib function that takes the device's lock. Inside a
/// callback this thread already holds that lock, and a call blocks for good:
/// the watchdog is told so first.
fn locking<T>(what: &str, call: impl FnOnce() -> T) -> T {
    if !in_callback() {
        return call();
    }
    let waits_for = WaitsFor::Lock {
        lock: "sensorlib's device lock".into(),
        holder: waits::thread_name(),
    };
    waits::blocking(what, waits_for, call)
}

/// A transfer that was submitted: it can be cancelled until its callback
/// has run. It borrows the `Sensor`, so the device outlives it.
pub struct Submitted<'s> {
    in_flight: Arc<InFlight>,
    sensor: PhantomData<&'s Sensor>,
}

impl Submitted<'_> {
    /// Asks sensorlib to cancel. True if it will: the callback still comes,
    /// with `Status::Cancelled`. False if the transfer is no longer in flight
    /// (its callback ran, or is running) or a cancel was asked already.
    pub fn cancel(&self) -> bool {
        let transfer = self.in_flight.transfer.as_ptr();
        // SAFETY: `self.in_flight` keeps the transfer allocated, and the
        // borrow of the `Sensor` keeps its device open; sensorlib checks
        // under its lock whether the transfer is in flight.
        locking("`sensor_cancel_transfer`", || unsafe {
            sys::sensor_cancel_transfer(transfer)
        }) == sys::SENSOR_SUCCESS
    }

    /// Shown in reports: "transfer #3".
    pub fn number(&self) -> u64 {
        self.in_flight.number
    }
}

impl Sensor {
    /// Opens a device on `connection` and starts its event thread.
    pub fn open(connection: TcpStream) -> io::Result<Sensor> {
        // SAFETY: a connected socket, which the `Sensor` keeps open until
        // after `sensor_close`.
        let device = unsafe { sys::sensor_open(connection.as_raw_fd()) };
        let device = NonNull::new(device).ok_or_else(io::Error::last_os_error)?;
        let mut sensor = Sensor {
            device,
            event_thread: String::new(),
            _connection: connection,
        };
        // An empty transfer completes at once, on the event thread, whose
        // callback says what that thread is called.
        let (name, named) = std::sync::mpsc::channel();
        sensor.submit(
            Direction::In,
            Vec::new(),
            move |_| {
                let _ = name.send(waits::thread_name());
            },
            |_| {},
        )?;
        let timeout = std::time::Duration::from_secs(5);
        sensor.event_thread = named
            .recv_timeout(timeout)
            .map_err(|_| io::Error::new(ErrorKind::TimedOut, "no event thread"))?;
        Ok(sensor)
    }

    /// The event thread's name, as the watchdog's reports give it.
    pub fn event_thread(&self) -> &str {
        &self.event_thread
    }

    /// Makes sensorlib's `submit` take this long to return after queueing
    /// a transfer (its test hook), so a transfer can finish mid-submit.
    pub fn delay_submits(&self, delay: std::time::Duration) {
        let micros = u32::try_from(delay.as_micros()).unwrap_or(u32::MAX);
        // SAFETY: the device is open; the call only sets a field under its lock.
        unsafe { sys::sensor_debug_set_submit_delay(self.device.as_ptr(), micros) }
    }

    // ANCHOR: submit
    /// Submits a transfer of `buffer`. `on_done` runs once, on sensorlib's
    /// event thread, with the device's lock held; `on_panic` runs there
    /// instead with the message if `on_done` panics.
    pub fn submit(
        &self,
        direction: Direction,
        mut buffer: Vec<u8>,
        on_done: impl FnOnce(Done) + Send + 'static,
        on_panic: impl FnOnce(String) + Send + 'static,
    ) -> io::Result<Submitted<'_>> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let length = c_int::try_from(buffer.len())
            .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "too long"))?;
        // SAFETY: no precondition; a null result is checked.
        let transfer = NonNull::new(unsafe { sys::sensor_alloc_transfer() })
            .ok_or_else(|| io::Error::new(ErrorKind::OutOfMemory, "no transfer"))?;
        let data = buffer.as_mut_ptr(); // the heap memory does not move
        let in_flight = Arc::new(InFlight {
            transfer,
            number: NEXT.fetch_add(1, SeqCst),
            buffer: Mutex::new(Some(buffer)),
            on_done: Mutex::new(Some(Box::new(on_done))),
            on_panic: Mutex::new(Some(Box::new(on_panic))),
        });
        let user_data = Arc::into_raw(Arc::clone(&in_flight));
        USER_DATA_GIVEN.fetch_add(1, SeqCst);
        let t = transfer.as_ptr();
        // SAFETY: a fresh transfer, filled in before it is submitted; its
        // buffer is `data`, kept alive by the `InFlight` that `user_data`
        // holds; the device is open while `self` is borrowed.
        let result = locking("`sensor_submit_transfer`", || unsafe {
            (*t).device = self.device.as_ptr();
            (*t).direction = match direction {
                Direction::In => sys::SENSOR_IN,
                Direction::Out => sys::SENSOR_OUT,
            };
            (*t).buffer = data;
            (*t).length = length;
            (*t).callback = Some(transfer_done);
            (*t).user_data = user_data as *mut c_void;
            sys::sensor_submit_transfer(t)
        });
        // From here the callback may already have run, on the event thread.
        if result != sys::SENSOR_SUCCESS {
            // SAFETY: the submit failed, so no callback will come: this is
            // the only `from_raw` for the `into_raw` above.
            drop(unsafe { Arc::from_raw(user_data) });
            USER_DATA_RECLAIMED.fetch_add(1, SeqCst);
            return Err(io::Error::other(format!(
                "sensor_submit_transfer: {result}"
            )));
        }
        Ok(Submitted {
            in_flight,
            sensor: PhantomData,
        })
    }
    // ANCHOR_END: submit

    // ANCHOR: transfer
    /// A transfer whose result `then` turns into a value, on the event
    /// thread; the value (or the error naming a panic in `then`) completes
    /// a completion source with these `continuations`.
    pub fn transfer_then<T: Send + 'static>(
        &self,
        direction: Direction,
        buffer: Vec<u8>,
        continuations: Continuations,
        then: impl FnOnce(Done) -> io::Result<T> + Send + 'static,
    ) -> Transfer<'_, T> {
        let (source, completion) = completion_source(continuations);
        // Only the event thread completes it, for the watchdog's reports.
        source.completes(WaitsFor::Thread(self.event_thread.clone()));
        let on_panic = source.clone();
        let submitted = self.submit(
            direction,
            buffer,
            move |done| {
                let _ = source.set_result(then(done));
            },
            move |message| {
                let error = format!("the transfer's callback panicked: {message}");
                let _ = on_panic.set_result(Err(io::Error::other(error)));
            },
        );
        match submitted {
            Ok(submitted) => Transfer {
                completion: Some(completion),
                submitted: Some(submitted),
            },
            Err(e) => {
                let (failed, completion) = completion_source(Continuations::Inline);
                let _ = failed.set_result(Err(e));
                Transfer {
                    completion: Some(completion),
                    submitted: None,
                }
            }
        }
    }

    /// Reads `length` bytes.
    pub fn read(&self, length: usize) -> Transfer<'_, Vec<u8>> {
        let buffer = vec![0; length];
        self.transfer_then(
            Direction::In,
            buffer,
            Continuations::Inline,
            Done::into_result,
        )
    }

    /// Writes `bytes`.
    pub fn write(&self, bytes: Vec<u8>) -> Transfer<'_, Vec<u8>> {
        self.transfer_then(
            Direction::Out,
            bytes,
            Continuations::Inline,
            Done::into_result,
        )
    }
}

/// A transfer as a future. Dropping it before it finishes cancels it; the
/// buffer stays with C until the callback that follows, which frees it.
pub struct Transfer<'s, T: Send + 'static> {
    completion: Option<Completion<io::Result<T>>>,
    submitted: Option<Submitted<'s>>,
}

impl<T: Send + 'static> Future for Transfer<'_, T> {
    type Output = io::Result<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        let completion = self.completion.as_mut().expect("not polled after Ready");
        let result = std::task::ready!(Pin::new(completion).poll(cx));
        self.completion = None;
        Poll::Ready(result.unwrap_or_else(|abandoned| {
            Err(io::Error::new(ErrorKind::ConnectionAborted, abandoned))
        }))
    }
}

impl<'s, T: Send + 'static> Transfer<'s, T> {
    /// The completion and the submitted transfer, for code that registers a
    /// continuation or blocks instead of awaiting.
    pub fn into_parts(mut self) -> (Completion<io::Result<T>>, Option<Submitted<'s>>) {
        let completion = self.completion.take().expect("not finished");
        (completion, self.submitted.take())
    }
}
// ANCHOR_END: transfer

impl<T: Send + 'static> Drop for Transfer<'_, T> {
    fn drop(&mut self) {
        let unfinished = self.completion.as_ref().is_some_and(|c| !c.is_complete());
        if let (true, Some(submitted)) = (unfinished, &self.submitted) {
            submitted.cancel();
        }
    }
}

/// Turns the guard of [`transfer_done`] off, for the demonstration of what
/// happens without it.
pub fn remove_the_panic_guard() {
    PANIC_GUARD.store(false, SeqCst);
}

/// A sensor's connection to a device: the sensor's end, and the device.
pub fn connected_sensor() -> io::Result<(Sensor, TcpStream)> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let sensor = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    Ok((Sensor::open(server)?, sensor))
}

// ANCHOR: main
/// One transfer ended each way: completed, cancelled, ended by a panic in
/// its callback, ended by the close; then the counts.
pub fn main() {
    use std::io::Write;
    if std::env::args().any(|a| a == "--no-guard") {
        remove_the_panic_guard();
    }
    // Say where a panic happened, in one line that is the same every run.
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let message = panic_message(info.payload());
        eprintln!("a panic on thread {:?}: {message}", thread.name());
    }));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let (sensor, mut peer) = connected_sensor().expect("a loopback sensor");
        peer.write_all(b"21.5 C").expect("the sensor sends");
        let reading = sensor.read(6).await.expect("six bytes");
        println!("completed: {:?}", String::from_utf8_lossy(&reading));

        let (completion, submitted) = sensor.read(6).into_parts();
        let asked = submitted.is_some_and(|s| s.cancel());
        let result = completion.await.expect("completed by the callback");
        println!("cancel asked: {asked}; then {:?}", result.unwrap_err());

        let parse = |done: Done| -> io::Result<u32> { panic!("cannot parse {:?}", done.buffer) };
        let panicking =
            sensor.transfer_then(Direction::In, vec![0; 4], Continuations::Inline, parse);
        peer.write_all(b"oops").expect("the sensor sends");
        println!("{}", panicking.await.unwrap_err());

        let (completion, _) = sensor.read(6).into_parts();
        drop(sensor); // sensor_close: the transfer in flight ends with NO_DEVICE
        println!(
            "closed: {:?}",
            completion.await.expect("completed").unwrap_err()
        );
    });
    let (given, reclaimed, freed) = user_data_counts();
    println!("user_data: {given} given to C, {reclaimed} reclaimed; {freed} transfers freed");
}
// ANCHOR_END: main

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;
    use std::io::Write;
    use std::time::Duration;

    /// The counts are per process and tests run in parallel: each test
    /// holds this lock, so that a test's counts are its own.
    static COUNTING: Mutex<()> = Mutex::new(());

    fn counting() -> std::sync::MutexGuard<'static, ()> {
        COUNTING.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime")
    }

    #[test]
    fn user_data_comes_back_exactly_once_on_every_path() {
        let _limit = TestLimit::seconds(30);
        let _counting = counting();
        let before = user_data_counts();
        const EACH: u64 = 200;
        let ended = runtime().block_on(async {
            let (sensor, mut peer) = connected_sensor().unwrap();
            let mut ended = [0u64; 4]; // completed, cancelled, closed, failed
            for _ in 0..EACH {
                peer.write_all(b"x").unwrap();
                assert_eq!(sensor.read(1).await.unwrap(), b"x");
                ended[0] += 1;
                let (completion, submitted) = sensor.read(1).into_parts();
                assert!(submitted.unwrap().cancel());
                let error = completion.await.unwrap().unwrap_err();
                assert_eq!(error.kind(), ErrorKind::Interrupted);
                ended[1] += 1;
            }
            let pending: Vec<_> = (0..EACH).map(|_| sensor.read(1).into_parts().0).collect();
            drop(sensor);
            for completion in pending {
                let error = completion.await.unwrap().unwrap_err();
                assert_eq!(error.kind(), ErrorKind::NotConnected);
                ended[2] += 1;
            }
            ended
        });
        let after = user_data_counts();
        let (given, reclaimed, freed) =
            (after.0 - before.0, after.1 - before.1, after.2 - before.2);
        // One more each for the empty transfer `open` submits.
        assert_eq!(ended, [EACH, EACH, EACH, 0]);
        assert_eq!(given, 3 * EACH + 1);
        assert_eq!(reclaimed, given);
        assert_eq!(freed, given);
        println!("{given} given, {reclaimed} reclaimed, {freed} freed");
    }

    #[test]
    fn a_dropped_future_cancels_and_the_callback_still_frees() {
        let _limit = TestLimit::seconds(20);
        let _counting = counting();
        let before = user_data_counts();
        runtime().block_on(async {
            let (sensor, _peer) = connected_sensor().unwrap();
            let read = sensor.read(64);
            let timed_out = tokio::time::timeout(Duration::from_millis(20), read).await;
            assert!(timed_out.is_err()); // the future was dropped in flight
                                         // The cancel's callback frees the transfer and its buffer.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while user_data_counts().2 - before.2 < 2 {
                assert!(std::time::Instant::now() < deadline, "never freed");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        let after = user_data_counts();
        assert_eq!((after.0 - before.0, after.1 - before.1), (2, 2));
    }

    #[test]
    fn the_last_handle_dropped_inside_a_callback_closes_the_device_elsewhere() {
        let _limit = TestLimit::seconds(20);
        use std::io::Write;
        let (sensor, mut peer) = connected_sensor().unwrap();
        let sensor = Arc::new(sensor);
        let last = Arc::clone(&sensor);
        let (finished, after_drop) = std::sync::mpsc::channel();
        let submitted = sensor.submit(
            Direction::In,
            vec![0; 1],
            move |_| {
                drop(last); // the last handle, on the event thread, lock held
                let _ = finished.send(());
            },
            |_| {},
        );
        assert!(submitted.is_ok());
        drop(submitted);
        drop(sensor);
        peer.write_all(b"x").unwrap();
        after_drop
            .recv_timeout(Duration::from_secs(5))
            .expect("the callback went on after dropping the last handle");
    }

    #[test]
    fn a_submit_that_fails_reclaims_at_once() {
        let _limit = TestLimit::seconds(20);
        let _counting = counting();
        let (sensor, _peer) = connected_sensor().unwrap();
        let before = user_data_counts();
        let too_long = vec![0; c_int::MAX as usize + 1];
        assert!(sensor
            .submit(Direction::In, too_long, |_| {}, |_| {})
            .is_err());
        assert_eq!(user_data_counts(), before, "nothing was given");
        drop(sensor);
    }

    /// A callback racing a cancel: the sensor's byte and the cancel arrive
    /// together, thousands of times; either may win, and each transfer ends
    /// exactly once, with exactly one reclaim.
    #[test]
    fn a_callback_racing_a_cancel_ends_each_transfer_once() {
        let _limit = TestLimit::seconds(60);
        let _counting = counting();
        let before = user_data_counts();
        const ROUNDS: u64 = 2_000;
        let (completed, cancelled) = runtime().block_on(async {
            let (sensor, peer) = connected_sensor().unwrap();
            let peer = Arc::new(Mutex::new(peer));
            let (mut completed, mut cancelled) = (0, 0);
            for _ in 0..ROUNDS {
                let (completion, submitted) = sensor.read(1).into_parts();
                let writer = Arc::clone(&peer);
                let send = std::thread::spawn(move || writer.lock().unwrap().write_all(b"r"));
                let asked = submitted.unwrap().cancel();
                send.join().unwrap().unwrap();
                match completion.await.unwrap() {
                    Ok(bytes) => {
                        assert!(!asked || bytes == b"r");
                        completed += 1;
                    }
                    Err(e) => {
                        assert_eq!(e.kind(), ErrorKind::Interrupted);
                        assert!(asked, "cancelled although the cancel came too late");
                        cancelled += 1;
                        // The byte is still on its way: take it, so the
                        // next round starts empty.
                        assert_eq!(sensor.read(1).await.unwrap(), b"r");
                    }
                }
            }
            (completed, cancelled)
        });
        let after = user_data_counts();
        let given = after.0 - before.0;
        assert_eq!(completed + cancelled, ROUNDS);
        assert_eq!(after.1 - before.1, given);
        assert_eq!(after.2 - before.2, given);
        println!(
            "{completed} completed first, {cancelled} cancelled first; {given} reclaimed once each"
        );
    }

    #[test]
    fn a_transfer_that_finishes_mid_submit_is_handled() {
        let _limit = TestLimit::seconds(20);
        let _counting = counting();
        runtime().block_on(async {
            let (sensor, mut peer) = connected_sensor().unwrap();
            peer.write_all(b"early").unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            sensor.delay_submits(Duration::from_millis(100));
            let (finished, in_submit) = std::sync::mpsc::channel();
            let submitted = sensor.submit(
                Direction::In,
                vec![0; 5],
                move |done| finished.send(done).unwrap(),
                |_| {},
            );
            // The callback ran on the event thread before `submit` returned.
            let done = in_submit.try_recv().expect("done before submit returned");
            assert_eq!(done.into_result().unwrap(), b"early");
            assert!(!submitted.unwrap().cancel(), "no longer in flight");
        });
    }

    #[test]
    fn a_panic_in_the_callback_reaches_the_awaiting_task_as_an_error() {
        let _limit = TestLimit::seconds(20);
        let _counting = counting();
        runtime().block_on(async {
            let (sensor, mut peer) = connected_sensor().unwrap();
            let read = sensor.transfer_then(
                Direction::In,
                vec![0; 2],
                Continuations::Inline,
                |done| -> io::Result<()> { panic!("bad frame {:?}", done.buffer) },
            );
            peer.write_all(b"no").unwrap();
            let error = read.await.unwrap_err();
            assert_eq!(
                error.to_string(),
                "the transfer's callback panicked: bad frame [110, 111]"
            );
            // The event thread is still alive and serving.
            peer.write_all(b"ok").unwrap();
            assert_eq!(sensor.read(2).await.unwrap(), b"ok");
        });
    }

    #[test]
    fn the_event_thread_has_no_runtime_context() {
        let _limit = TestLimit::seconds(20);
        let _counting = counting();
        runtime().block_on(async {
            let (sensor, mut peer) = connected_sensor().unwrap();
            let read =
                sensor.transfer_then(Direction::In, vec![0; 1], Continuations::Inline, |_| {
                    Ok(tokio::runtime::Handle::current())
                });
            peer.write_all(b"h").unwrap();
            let error = read.await.unwrap_err().to_string();
            assert!(
                error.contains("must be called from the context of a Tokio 1.x runtime"),
                "{error}"
            );
            // A handle captured here, on the runtime, works there.
            let handle = tokio::runtime::Handle::current();
            let read = sensor.transfer_then(
                Direction::In,
                vec![0; 1],
                Continuations::Inline,
                move |done| Ok(handle.spawn(async move { done.buffer })),
            );
            peer.write_all(b"i").unwrap();
            assert_eq!(read.await.unwrap().await.unwrap(), b"i");
        });
    }
}
