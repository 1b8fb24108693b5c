//! The mdBook preprocessor that turns `<Listing>` tags into captions (see
//! `book_tools::listing`). mdBook runs it as `cargo run -p book-tools --bin
//! mdbook-listings` (book.toml); it reads `[context, book]` as JSON on stdin and
//! writes the book back. A caption that disagrees with the repository fails
//! the build.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::Value;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("supports") {
        // Captions are HTML; other renderers get the tags as they are.
        return if args.get(2).map(String::as_str) == Some("html") {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mdbook-listings: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("cannot read the book from stdin: {e}"))?;
    let value: Value =
        serde_json::from_str(&input).map_err(|e| format!("the input is not JSON: {e}"))?;
    let [context, book] = <[Value; 2]>::try_from(
        value
            .as_array()
            .ok_or("expected [context, book] on stdin")?
            .clone(),
    )
    .map_err(|_| "expected [context, book] on stdin")?;
    let root = PathBuf::from(context["root"].as_str().ok_or("context has no root")?);
    let mut book = book;
    let mut errors = Vec::new();
    if let Some(sections) = book.get_mut("sections").and_then(Value::as_array_mut) {
        for item in sections {
            visit(item, &root, &mut errors);
        }
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    serde_json::to_writer(std::io::stdout(), &book).map_err(|e| e.to_string())
}

fn visit(item: &mut Value, root: &Path, errors: &mut Vec<String>) {
    let Some(chapter) = item.get_mut("Chapter") else {
        return;
    };
    let source = chapter["source_path"].as_str().unwrap_or("").to_string();
    if let Some(content) = chapter.get_mut("content") {
        let text = content.as_str().unwrap_or_default().to_string();
        let file = Path::new(&source)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        let problems = book_tools::listing::check(&text, file, root);
        errors.extend(problems.iter().map(|p| format!("src/{source}: {p}")));
        match book_tools::listing::render(&text) {
            Ok(html) => *content = Value::String(html),
            Err(problems) => {
                errors.extend(problems.iter().map(|p| format!("src/{source}: {p}")));
            }
        }
    }
    if let Some(children) = chapter.get_mut("sub_items").and_then(Value::as_array_mut) {
        for child in children {
            visit(child, root, errors);
        }
    }
}
