//! The thread timelines in `src/figures/` are drawn from recorded runs of
//! their listings. This test redraws each one from a fresh run and checks
//! that it still says the same things (the same events, the same threads,
//! the same verdict; times and the order of simultaneous events may differ),
//! and that every figure is shown by a chapter.
//! `cargo run -p book-tools --bin book -- figures --into-book` redraws them
//! (without `--into-book`, it draws them into `target/figures/`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use awd::watchdog::TestLimit;
use book_tools::timeline;

fn root() -> PathBuf {
    book_tools::repo::root()
}

fn figures() -> Vec<String> {
    book_tools::repo::figures(&root())
}

#[test]
fn every_figure_says_what_a_fresh_run_records() {
    let _limit = TestLimit::seconds(600);
    let mut stale = Vec::new();
    for package in figures() {
        let stored = fs::read_to_string(root().join(format!("src/figures/{package}.svg")))
            .expect("a figure");
        let fresh = timeline::draw_from_a_fresh_run(
            Path::new(env!("CARGO")),
            &root(),
            &package,
            Duration::from_secs(300),
        )
        .unwrap_or_else(|why| panic!("{why}"));
        let (stored, fresh) = (timeline::statements(&stored), timeline::statements(&fresh));
        if stored != fresh {
            stale.push(format!(
                "src/figures/{package}.svg\n  in the figure only: {:?}\n  in a fresh run only: {:?}",
                stored.iter().filter(|s| !fresh.contains(s)).collect::<Vec<_>>(),
                fresh.iter().filter(|s| !stored.contains(s)).collect::<Vec<_>>(),
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "these figures no longer match their listings; redraw them with \
         `cargo run -p book-tools --bin book -- figures --into-book`:\n{}",
        stale.join("\n")
    );
}

#[test]
fn every_figure_is_shown() {
    let _limit = TestLimit::seconds(10);
    let mut book = String::new();
    for entry in fs::read_dir(root().join("src")).expect("src/").flatten() {
        if entry.path().extension().is_some_and(|e| e == "md") {
            book.push_str(&fs::read_to_string(entry.path()).expect("a chapter"));
        }
    }
    for package in figures() {
        assert!(
            book.contains(&format!("{{{{#include figures/{package}.svg}}}}")),
            "src/figures/{package}.svg is not shown by any chapter"
        );
    }
}
