//! The support crate of *Await Without Deadlock*.
//!
//! Every listing that needs more than tokio depends on this one crate, the way
//! readers of the Rust book depend on `trpl`. It holds what the chapters build
//! on rather than what they teach:
//!
//! - [`watchdog`]: runs a scenario on a thread of its own and reports, within a
//!   bounded time, either its result or that it deadlocked; also the per-test
//!   time limit every test in the book's repository starts with.

pub mod watchdog;
