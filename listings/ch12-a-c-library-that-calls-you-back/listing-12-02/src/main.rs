//! `cargo run -p listing-12-02`: the program at the end of the wrapper's
//! file (src/lib.rs), which the book shows as Listing 12-2.

fn main() {
    listing_12_02::main();
}
