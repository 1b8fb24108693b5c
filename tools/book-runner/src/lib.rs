//! The book's local runner: the Run button of every Rust block, served from
//! the reader's own machine. A page sends the lines the reader sees (edited
//! or not); the runner puts them back into the listing's full source,
//! builds it offline against the workspace's warm build, runs it under the
//! listing's watchdog, and streams what it prints, the compiler's messages,
//! a verdict against the block's fence and, for a listing that records its
//! threads' waits, the thread timeline of this very run.
//!
//! ```text
//! cargo run -p book-runner -- --open     # the book and the runner
//! ```
//!
//! # Threat model
//!
//! The runner executes code: whoever can make it run a request can run
//! code as the reader. It must therefore answer the reader's own book pages
//! and nothing else.
//!
//! - **Other machines.** It binds 127.0.0.1 only ([`server::bind`]).
//! - **Web pages on other sites** (a browser will send requests to
//!   127.0.0.1 for any page it shows). A cross-site page cannot read the
//!   secret (below). It cannot pass the `Origin` check: every request a
//!   browser makes from another origin carries that origin, and the runner
//!   refuses any `Origin` but the book's ([`server::Access::origins`]);
//!   preflights from other origins get no CORS grant.
//! - **DNS rebinding**: a page of `evil.example` whose name is made to
//!   resolve to 127.0.0.1 is same-origin with itself, so its requests carry
//!   `Host: evil.example:3001`; the runner answers only `127.0.0.1:<port>`
//!   and `localhost:<port>`.
//! - **Other local users and processes** can reach 127.0.0.1 too. Every
//!   request must carry a secret ([`new_secret`]: 32 bytes from the kernel's
//!   random source, made at each start, never written to disk unless asked
//!   and then only into a file only the reader can read). The reader's
//!   browser gets it from the address the runner prints in its terminal, or
//!   opens through a file readable only by the reader (so the secret never
//!   appears on a command line, where `ps` would show it): the fragment
//!   `#awd-runner=127.0.0.1:<port>/<secret>`, which a browser never sends to
//!   any server. The page keeps it in `localStorage` of the book's origin.
//!   A process running as the reader is not kept out: it could read the
//!   browser's storage, or run code itself.
//!
//! What a request may carry: at most 64 KiB of body; a block id that is
//! looked up in the book's own list of blocks ([`catalog`]), so nothing a
//! request carries becomes a path; program arguments only as the book shows
//! them for that listing. What a run may do: 30 s of wall time, 1 MiB of
//! output (then it is cut, with a notice, and stopped), 2 GiB of address
//! space, a bounded number of processes ([`limits`]); it runs in a process
//! group of its own, killed whole on timeout, on Stop, when the page goes
//! away (its response is closed) and when the runner exits. At most one
//! build per core runs at a time; the others wait in a queue and are told
//! their place ([`queue`]).

pub mod catalog;
pub mod diagnostics;
pub mod limits;
pub mod queue;
pub mod run;
pub mod server;
pub mod verdict;

use std::io::Read;

/// A new secret: 32 random bytes from the kernel (`/dev/urandom`), in hex.
pub fn new_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The address a reader opens: the book's page with the runner's address
/// and secret in the fragment.
pub fn book_link(book: &str, port: u16, secret: &str) -> String {
    format!(
        "{}/#awd-runner=127.0.0.1:{port}/{secret}",
        book.trim_end_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn each_start_makes_a_new_secret() {
        let _limit = TestLimit::seconds(5);
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(book_link("http://localhost:3000/", 3001, &a)
            .starts_with("http://localhost:3000/#awd-runner=127.0.0.1:3001/"));
    }
}
