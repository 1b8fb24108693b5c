//! Expands the book exactly as mdBook does for the reader, then generates one
//! test per Rust block (skeptic) and one per stored listing output.
//!
//! - mdBook's own `links` preprocessor runs (through the mdbook library, same
//!   version as the binary), so `{{#include}}`, `{{#rustdoc_include}}`, anchors
//!   and line ranges give the tested text the reader sees.
//! - Each expanded chapter is written twice to `OUT_DIR`: as expanded (the
//!   rule checks in `tests/rules.rs` read it) and as the copy skeptic reads
//!   (`book_tools::fences::skeptic_copy`: fences mapped to what they promise,
//!   admonitions opened up, line numbers kept).
//! - skeptic's generated tests are routed through `tests/harness/mod.rs`, which
//!   bounds every run and checks the promised outcome.

use std::fs;
use std::path::{Path, PathBuf};

use mdbook::book::BookItem;
use mdbook::renderer::{RenderContext, Renderer};
use mdbook::MDBook;

/// A renderer that renders nothing: it only gives `preprocess_book` a name, so
/// the preprocessors limited to `html` (admonish, captions) stay out.
struct Expand;

impl Renderer for Expand {
    fn name(&self) -> &str {
        "skeptic"
    }

    fn render(&self, _: &RenderContext) -> mdbook::errors::Result<()> {
        Ok(())
    }
}

/// Writes only when the content changed, so cargo does not see a change.
fn write_if_changed(path: &Path, contents: &str) {
    if fs::read_to_string(path).ok().as_deref() != Some(contents) {
        fs::write(path, contents)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    for watched in ["src", "listings", "book.toml"] {
        println!("cargo:rerun-if-changed={watched}");
    }

    let book = MDBook::load(&root).unwrap_or_else(|e| panic!("mdBook cannot load the book: {e:#}"));
    let (expanded, _) = book
        .preprocess_book(&Expand)
        .unwrap_or_else(|e| panic!("mdBook cannot expand the book: {e:#}"));

    let expanded_dir = out.join("expanded");
    let skeptic_dir = out.join("skeptic");
    fs::create_dir_all(&expanded_dir).expect("OUT_DIR is writable");
    fs::create_dir_all(&skeptic_dir).expect("OUT_DIR is writable");
    let mut copies = Vec::new();
    for item in expanded.iter() {
        let BookItem::Chapter(chapter) = item else {
            continue;
        };
        let Some(source) = &chapter.source_path else {
            continue; // a draft chapter: no page yet
        };
        // Chapters in different folders may share a file name: flatten the path.
        let flat = source.to_string_lossy().replace(['/', '\\'], "__");
        write_if_changed(&expanded_dir.join(&flat), &chapter.content);
        let copy = skeptic_dir.join(&flat);
        write_if_changed(&copy, &book_tools::fences::skeptic_copy(&chapter.content));
        write_if_changed(
            &skeptic_dir.join(format!("{flat}.skt.md")),
            &book_tools::fences::skeptic_templates(),
        );
        copies.push(copy);
    }
    skeptic::generate_doc_tests(&copies);

    // Every run goes through the harness, which bounds it and checks the
    // outcome the fence promised; the table of runs lets it start them all
    // ahead of libtest.
    let generated = fs::read_to_string(out.join("skeptic-tests.rs")).unwrap_or_default();
    write_if_changed(
        &out.join("snippet-tests.rs"),
        &routed_through_harness(&generated),
    );

    let mut tests = String::new();
    let mut table = String::from("static OUTPUTS: &[(&str, &str)] = &[\n");
    for relative in book_tools::repo::stored_outputs(&root) {
        let path = root.join(&relative);
        let relative = path.strip_prefix(&root).expect("under the root");
        let crate_dir = relative.parent().expect("in a crate");
        let chapter = crate_dir
            .parent()
            .and_then(Path::file_name)
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let chapter = chapter.split('-').next().unwrap_or_default().to_string();
        let name = crate_dir
            .file_name()
            .map(|n| n.to_string_lossy().replace('-', "_"))
            .unwrap_or_default();
        // `output.txt` → `…_output`, `output-inline.txt` → `…_output_inline`.
        let variant = path
            .file_stem()
            .map(|n| n.to_string_lossy().replace('-', "_"))
            .unwrap_or_default();
        let test = format!("{chapter}_{name}_{variant}");
        tests.push_str(&format!(
            "#[test]\nfn {test}() {{\n    crate::harness::output(OUTPUTS, {test:?});\n}}\n\n"
        ));
        table.push_str(&format!(
            "    ({test:?}, {:?}),\n",
            relative.to_string_lossy()
        ));
    }
    table.push_str("];\n\n");
    write_if_changed(&out.join("output-tests.rs"), &(table + &tests));
}

/// skeptic's generated tests with each run handed to the harness
/// (`crate::harness::snippet`), named, with the table of every such test.
/// skeptic writes each test as `#[test] fn NAME() {` … `}` from the start of
/// a line, its run as one
/// `skeptic::rt::run_test(` call; compile-only tests stay as they are.
fn routed_through_harness(generated: &str) -> String {
    // At the start of a line: a block's own text is indented, or has its
    // attributes on lines of their own.
    const TEST: &str = "\n#[test] fn ";
    const RUN: &str = "skeptic::rt::run_test(";
    let mut routed = String::new();
    let mut table = String::from("static SNIPPETS: &[(&str, fn())] = &[\n");
    let mut rest = generated;
    while let Some(at) = rest.find(TEST) {
        let name_end = rest[at + TEST.len()..]
            .find('(')
            .map(|n| at + TEST.len() + n)
            .expect("skeptic writes `fn NAME()`");
        let name = &rest[at + TEST.len()..name_end];
        let end = rest[name_end..]
            .find(TEST)
            .map_or(rest.len(), |n| name_end + n);
        let item = &rest[..end];
        if item.contains(RUN) {
            routed.push_str(&item.replace(
                RUN,
                &format!("crate::harness::snippet(SNIPPETS, {name:?}, "),
            ));
            table.push_str(&format!("    ({name:?}, {name}),\n"));
        } else {
            routed.push_str(item);
        }
        rest = &rest[end..];
    }
    routed.push_str(rest);
    table.push_str("];\n\n");
    table + &routed
}
