//! The runner's list of blocks against the book itself: every Rust block of
//! every chapter can run from its page, a block of a listing gives its file
//! back when its shown lines are sent unedited, and every switch a chapter
//! shows for a listing that runs is offered in the page.

mod common;

use awd::watchdog::TestLimit;
use book_runner::catalog::{Catalog, Source};
use book_tools::fences::Expectation;
use common::root;

#[test]
fn every_rust_block_of_the_book_is_in_the_list() {
    let _limit = TestLimit::seconds(20);
    let catalog = Catalog::load(&root()).unwrap();
    let mut fences = 0;
    for entry in std::fs::read_dir(root().join("src")).unwrap().flatten() {
        if entry.path().extension().is_some_and(|e| e == "md") {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            fences += book_tools::fences::scan(&text)
                .iter()
                .filter(|f| f.is_rust())
                .count();
        }
    }
    assert_eq!(catalog.blocks.len(), fences);
    assert!(
        !catalog.chapter("index").is_empty(),
        "index.html is the first chapter"
    );
}

#[test]
fn unedited_lines_give_each_listing_file_back() {
    let _limit = TestLimit::seconds(20);
    let catalog = Catalog::load(&root()).unwrap();
    for block in catalog.blocks.values() {
        let Source::Include(include) = &block.source else {
            continue;
        };
        let file = std::fs::read_to_string(include.crate_dir.join(&include.file)).unwrap();
        let shown = include.shown(&file);
        assert!(!shown.trim().is_empty(), "{} shows nothing", block.id);
        let spliced = include.splice(&file, &shown);
        // The same program: only marker lines inside the shown part go.
        let program = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.contains("ANCHOR:") && !l.contains("ANCHOR_END:"))
                .map(String::from)
                .collect()
        };
        assert_eq!(program(&spliced.text), program(&file), "{}", block.id);
        let shown_lines = spliced.shown_line.iter().flatten().count();
        assert_eq!(shown_lines, shown.lines().count(), "{}", block.id);
    }
}

#[test]
fn every_switch_a_chapter_shows_is_offered() {
    let _limit = TestLimit::seconds(20);
    let catalog = Catalog::load(&root()).unwrap();
    let mut book = String::new();
    for entry in std::fs::read_dir(root().join("src")).unwrap().flatten() {
        book.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
    }
    for block in catalog.blocks.values() {
        let Some(package) = &block.package else {
            continue;
        };
        if matches!(
            block.expect,
            Expectation::CompilesOnly | Expectation::CompileFails
        ) {
            assert_eq!(block.variants, vec![Vec::<String>::new()], "{}", block.id);
            continue;
        }
        let shown = book_runner::catalog::variants_in(package, std::slice::from_ref(&book));
        for variant in shown {
            assert!(
                block.variants.contains(&variant),
                "{}: `-- {}` is not offered",
                block.id,
                variant.join(" ")
            );
        }
    }
    let listing_3_1 = &catalog.blocks["ch03-deadlock-on-the-io-thread/1"];
    assert!(listing_3_1
        .variants
        .contains(&vec!["--together".to_string()]));
}
