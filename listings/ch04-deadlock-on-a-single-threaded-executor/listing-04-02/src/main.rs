//! tokio's guard rails: blocking calls that would stop the thread driving the
//! runtime panic with an explanation; `futures::executor::block_on` does not
//! check, and blocks.

use std::panic;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// Runs `attempt` and says whether it panicked, with tokio's message.
fn try_it(name: &str, attempt: impl FnOnce()) {
    match panic::catch_unwind(panic::AssertUnwindSafe(attempt)) {
        Ok(()) => println!("{name}: returned, no check"),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("a panic");
            println!("{name}: panicked:\n    {message}");
        }
    }
}

// ANCHOR: guard_rails
#[tokio::main(flavor = "current_thread")]
async fn main() {
    panic::set_hook(Box::new(|_| {})); // the messages are printed below
    try_it("Handle::block_on", || {
        Handle::current().block_on(async {});
    });
    try_it("oneshot::Receiver::blocking_recv", || {
        let (_sender, receiver) = oneshot::channel::<u32>();
        let _ = receiver.blocking_recv();
    });
    try_it("task::block_in_place", || {
        tokio::task::block_in_place(|| {});
    });
    try_it("futures::executor::block_on", || {
        futures::executor::block_on(async {}); // ready at once, so it returns
    });
}
// ANCHOR_END: guard_rails

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    fn panics(attempt: impl FnOnce()) -> bool {
        panic::catch_unwind(panic::AssertUnwindSafe(attempt)).is_err()
    }

    #[test]
    fn tokio_refuses_to_block_its_own_thread_and_futures_does_not() {
        let _limit = TestLimit::seconds(10);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            assert!(panics(|| Handle::current().block_on(async {})));
            assert!(panics(|| drop(oneshot::channel::<u32>().1.blocking_recv())));
            assert!(panics(|| tokio::task::block_in_place(|| {})));
            assert!(!panics(|| futures::executor::block_on(async {})));
        });
    }
}
