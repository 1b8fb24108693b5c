//! The support crate of *Await Without Deadlock*.
//!
//! Every listing that needs more than tokio depends on this one crate, the way
//! readers of the Rust book depend on `trpl`. It holds what the chapters build
//! on rather than what they teach:
//!
//! - [`completion_source`]: the hand-written `TaskCompletionSource`
//!   counterpart, with inline or asynchronous continuations (chapter 2);
//! - [`bridge`]: the receive bridges built on it (chapters 2 and 3);
//! - [`socket`]: a completion-style socket API on real loopback TCP, with one
//!   I/O thread that runs every callback (chapter 1 introduces it);
//! - [`reactor_socket`]: the same receive contract driven by tokio's own
//!   reactor, with callbacks on the runtime's thread and no I/O thread
//!   (chapter 10);
//! - [`contract`]: the contract both sockets keep, stated once, and the
//!   refusals they share;
//! - [`message_loop`]: a UI thread's message loop, the counterpart of a .NET
//!   `SynchronizationContext`, and `.Result` on it (chapter 4);
//! - [`pool`]: a thread pool that adds threads slowly, as .NET's does, where
//!   asynchronous continuations run and where Listing 3-5's completions
//!   starve (chapter 3);
//! - [`frame`]: the sensor protocol, a length-prefixed reading per frame;
//! - [`watchdog`]: runs a scenario on a thread of its own and reports, within a
//!   bounded time, either its result or why it is stuck; also the per-test
//!   time limit every test in the book's repository starts with;
//! - [`waits`]: who waits for whom, recorded as the program runs, which is
//!   what the watchdog's diagnosis and the book's timelines are made of.

pub mod bridge;
pub mod completion_source;
pub mod contract;
pub mod frame;
pub mod message_loop;
pub mod pool;
pub mod reactor_socket;
pub mod socket;
pub mod waits;
pub mod watchdog;
