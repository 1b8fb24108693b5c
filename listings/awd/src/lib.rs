//! The support crate of *Await Without Deadlock*.
//!
//! Every listing that needs more than tokio depends on this one crate, the way
//! readers of the Rust book depend on `trpl`. It holds what the chapters build
//! on rather than what they teach:
//!
//! - [`completion_source`]: the hand-written `TaskCompletionSource`
//!   counterpart, with inline or asynchronous continuations (chapter 2);
//! - [`socket`]: a completion-style socket API on real loopback TCP, with one
//!   I/O thread that runs every callback (chapter 1 introduces it);
//! - [`watchdog`]: runs a scenario on a thread of its own and reports, within a
//!   bounded time, either its result or that it deadlocked; also the per-test
//!   time limit every test in the book's repository starts with.

pub mod completion_source;
pub mod socket;
pub mod watchdog;
