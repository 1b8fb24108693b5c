//! One test per stored listing output (`listings/**/output.txt`): the listing
//! is run with the command the book shows and its output compared.
//! `BOOK_BLESS=1 cargo test --test outputs` stores fresh outputs instead.

mod harness;

include!(concat!(env!("OUT_DIR"), "/output-tests.rs"));
