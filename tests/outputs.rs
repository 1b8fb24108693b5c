//! One test per stored listing output (`listings/**/output.txt`): the listing
//! is run with the command the book shows and its output compared.
//! `BOOK_BLESS=1 cargo test --test outputs` stores fresh outputs instead.

mod harness;

include!(concat!(env!("OUT_DIR"), "/output-tests.rs"));

/// The pool runs ahead exactly the tests libtest runs: its reading of
/// libtest's filters, checked against libtest's own rules.
#[test]
fn the_checks_run_ahead_are_the_ones_libtest_selects() {
    let _limit = awd::watchdog::TestLimit::seconds(10);
    let names = ["ch03_a_output", "ch03_b_output", "ch13_a_output"];
    let select = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        harness::ahead::selected(&names, &args)
    };
    assert_eq!(select(&[]), Some(names.to_vec()));
    assert_eq!(
        select(&["ch03"]),
        Some(vec!["ch03_a_output", "ch03_b_output"])
    );
    assert_eq!(
        select(&["ch03", "--skip", "b_"]),
        Some(vec!["ch03_a_output"])
    );
    assert_eq!(select(&["--skip=ch03"]), Some(vec!["ch13_a_output"]));
    assert_eq!(select(&["--exact", "ch03"]), Some(vec![]));
    assert_eq!(
        select(&["--exact", "ch13_a_output", "--test-threads", "1"]),
        Some(vec!["ch13_a_output"])
    );
    // Options it does not know turn running ahead off; libtest decides alone.
    assert_eq!(select(&["--list"]), None);
    assert_eq!(select(&["--ignored"]), None);
}
