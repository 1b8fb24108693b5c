//! Listing captions: the `<Listing>` tag a chapter wraps around a code block,
//! checked against the repository and rendered as a `<figure>`.
//!
//! ````text
//! <Listing number="3-2" file="listings/ch03-deadlock-on-the-io-thread/listing-03-02/src/main.rs"
//!          caption="The continuation blocks the I/O thread">
//!
//! ```rust,deadlocks
//! {{#rustdoc_include ../listings/ch03-deadlock-on-the-io-thread/listing-03-02/src/main.rs:consumer}}
//! ```
//!
//! </Listing>
//! ````
//!
//! (The tag is written on one line.) Optional attributes: `run="cargo test -p …"`
//! when the listing is run another way than `cargo run -p <package>`, and
//! `not-run="why"` for a listing whose block is compiled but not run.
//!
//! The caption shows the number (a link to `#listing-3-2`), the file, the
//! command that runs it, and the one-line description. Everything that can be
//! derived is derived, and everything written twice is checked: the number
//! against the directory and the chapter file, the package against the
//! directory, the file against the include inside the tag.

use std::fmt;
use std::path::Path;

/// One `<Listing>` tag and the lines it spans.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listing {
    /// "3-2".
    pub number: String,
    /// Path from the book root, e.g. `listings/ch03-…/listing-03-02/src/main.rs`.
    pub file: String,
    /// The one-line description.
    pub caption: String,
    /// The command shown to run it.
    pub run: String,
    /// Why the block is compiled but not run, if it is not run.
    pub not_run: Option<String>,
    /// 1-based line of the opening tag.
    pub line: usize,
    /// 1-based line of `</Listing>`.
    pub end_line: usize,
}

impl Listing {
    /// The HTML id and link target, e.g. `listing-3-2`.
    pub fn id(&self) -> String {
        format!("listing-{}", self.number)
    }

    /// The crate directory: the part of `file` up to `listing-…/`.
    pub fn crate_dir(&self) -> Option<&str> {
        let start = self.file.find("/listing-")? + 1;
        let end = self.file[start..].find('/').map(|e| start + e)?;
        Some(&self.file[..end])
    }

    /// The package name, which is the crate directory's name.
    pub fn package(&self) -> Option<&str> {
        self.crate_dir().and_then(|d| d.rsplit('/').next())
    }
}

/// A caption problem, with where it was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptionError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for CaptionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

fn attribute(tag: &str, name: &str) -> Option<String> {
    let key = format!(" {name}=\"");
    let start = tag.find(&key)? + key.len();
    let end = tag[start..].find('"')? + start;
    Some(tag[start..end].to_string())
}

/// Every `<Listing>` of a chapter, or what is wrong with the markup.
pub fn parse(markdown: &str) -> Result<Vec<Listing>, Vec<CaptionError>> {
    let mut listings = Vec::new();
    let mut errors = Vec::new();
    let mut open: Option<Listing> = None;
    for (index, raw) in markdown.lines().enumerate() {
        let line = index + 1;
        let text = raw.trim();
        if text.starts_with("<Listing") {
            if open.is_some() {
                errors.push(CaptionError {
                    line,
                    message: "a <Listing> opens before the previous one closed".into(),
                });
            }
            if !text.ends_with('>') {
                errors.push(CaptionError {
                    line,
                    message: "write the <Listing …> tag on one line".into(),
                });
                continue;
            }
            let mut missing = |name: &str| {
                attribute(text, name).unwrap_or_else(|| {
                    errors.push(CaptionError {
                        line,
                        message: format!("<Listing> needs {name}=\"…\""),
                    });
                    String::new()
                })
            };
            let number = missing("number");
            let file = missing("file");
            let caption = missing("caption");
            let mut listing = Listing {
                number,
                file,
                caption,
                run: String::new(),
                not_run: attribute(text, "not-run"),
                line,
                end_line: 0,
            };
            listing.run = attribute(text, "run")
                .unwrap_or_else(|| format!("cargo run -p {}", listing.package().unwrap_or("?")));
            open = Some(listing);
        } else if text == "</Listing>" {
            match open.take() {
                Some(mut listing) => {
                    listing.end_line = line;
                    listings.push(listing);
                }
                None => errors.push(CaptionError {
                    line,
                    message: "</Listing> without an opening tag".into(),
                }),
            }
        }
    }
    if let Some(listing) = open {
        errors.push(CaptionError {
            line: listing.line,
            message: "<Listing> is never closed".into(),
        });
    }
    if errors.is_empty() {
        Ok(listings)
    } else {
        Err(errors)
    }
}

/// The chapter number a chapter file carries (`ch03-….md` → 3).
pub fn chapter_number(file_name: &str) -> Option<u32> {
    file_name.strip_prefix("ch")?.get(..2)?.parse().ok()
}

/// Checks the listings of one chapter against the repository at `book_root`.
/// `chapter_file` is the chapter's file name (`ch03-….md`).
pub fn check(markdown: &str, chapter_file: &str, book_root: &Path) -> Vec<CaptionError> {
    let listings = match parse(markdown) {
        Ok(listings) => listings,
        Err(errors) => return errors,
    };
    let lines: Vec<&str> = markdown.lines().collect();
    let mut errors = Vec::new();
    for listing in &listings {
        let mut error = |message: String| {
            errors.push(CaptionError {
                line: listing.line,
                message,
            })
        };
        let Some((chapter, number)) = listing.number.split_once('-') else {
            error(format!(
                "number \"{}\" is not of the form 3-2",
                listing.number
            ));
            continue;
        };
        let (Ok(chapter), Ok(number)) = (chapter.parse::<u32>(), number.parse::<u32>()) else {
            error(format!(
                "number \"{}\" is not of the form 3-2",
                listing.number
            ));
            continue;
        };
        if chapter_number(chapter_file) != Some(chapter) {
            error(format!(
                "Listing {} is in {chapter_file}: a listing's first number is its chapter's",
                listing.number
            ));
        }
        let Some(package) = listing.package() else {
            error(format!(
                "file \"{}\" is not inside a listings/chNN-…/listing-NN-MM/ crate",
                listing.file
            ));
            continue;
        };
        let own = format!("listing-{chapter:02}-{number:02}");
        let shared = package.starts_with(&format!("{own}-and-"))
            || (package.starts_with(&format!("listing-{chapter:02}-"))
                && package.ends_with(&format!("-and-{number:02}")));
        if package != own && !shared {
            error(format!(
                "Listing {} lives in {package}; its crate must be {own} (or a shared \
                 listing-{chapter:02}-MM-and-NN)",
                listing.number
            ));
        }
        let dir = listing.crate_dir().unwrap_or_default();
        let chapter_dir = dir.rsplit('/').nth(1).unwrap_or_default();
        if !chapter_dir.starts_with(&format!("ch{chapter:02}-")) {
            error(format!(
                "the crate of Listing {} must sit in listings/ch{chapter:02}-…/",
                listing.number
            ));
        }
        if !book_root.join(&listing.file).is_file() {
            error(format!("file \"{}\" does not exist", listing.file));
        }
        match std::fs::read_to_string(book_root.join(dir).join("Cargo.toml")) {
            Ok(manifest) if manifest.contains(&format!("name = \"{package}\"")) => {}
            Ok(_) => error(format!(
                "{dir}/Cargo.toml must name its package \"{package}\""
            )),
            Err(_) => error(format!("{dir}/Cargo.toml is missing")),
        }
        if !listing.run.contains(&format!(" -p {package}")) {
            error(format!(
                "run=\"{}\" must run this listing's package ({package})",
                listing.run
            ));
        }
        let body = &lines[listing.line..listing.end_line - 1];
        if !body.iter().any(|l| l.contains(&listing.file)) {
            error(format!(
                "the code inside Listing {} must include its file \"{}\"",
                listing.number, listing.file
            ));
        }
        if body.first().is_some_and(|l| !l.trim().is_empty())
            || body.last().is_some_and(|l| !l.trim().is_empty())
        {
            error("leave a blank line after <Listing …> and before </Listing>".into());
        }
    }
    let mut ids: Vec<String> = listings.iter().map(Listing::id).collect();
    ids.sort();
    for pair in ids.windows(2) {
        if pair[0] == pair[1] {
            errors.push(CaptionError {
                line: 0,
                message: format!("two listings carry the number {}", pair[0]),
            });
        }
    }
    errors
}

/// The 1-based lines inside listings that carry a `not-run` reason.
pub fn not_run_lines(markdown: &str) -> Vec<usize> {
    parse(markdown)
        .unwrap_or_default()
        .iter()
        .filter(|l| l.not_run.is_some())
        .flat_map(|l| l.line..=l.end_line)
        .collect()
}

/// Escapes text for HTML and turns `code` spans into `<code>`.
fn inline_html(text: &str) -> String {
    let escaped = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let mut out = String::new();
    for (i, part) in escaped.split('`').enumerate() {
        if i % 2 == 1 {
            out.push_str("<code>");
            out.push_str(part);
            out.push_str("</code>");
        } else {
            out.push_str(part);
        }
    }
    out
}

/// Replaces every `<Listing>` tag of a chapter by its caption markup. Lines
/// are replaced one for one, so the chapter keeps its line numbers.
pub fn render(markdown: &str) -> Result<String, Vec<CaptionError>> {
    let listings = parse(markdown)?;
    let mut out = String::with_capacity(markdown.len() + 512 * listings.len());
    for (index, line) in markdown.lines().enumerate() {
        let number = index + 1;
        if let Some(l) = listings.iter().find(|l| l.line == number) {
            out.push_str(&format!(
                "<figure class=\"listing\" id=\"{id}\"><div class=\"listing-head\">\
                 <span class=\"listing-file\" title=\"File\">{file}</span>\
                 <span class=\"listing-run\" title=\"Run it\"><code>{run}</code></span></div>",
                id = l.id(),
                file = inline_html(&l.file),
                run = inline_html(&l.run),
            ));
        } else if let Some(l) = listings.iter().find(|l| l.end_line == number) {
            let not_run = l
                .not_run
                .as_deref()
                .map(|why| {
                    format!(
                        " <span class=\"listing-not-run\">Compiled by the tests, not run: {}</span>",
                        inline_html(why)
                    )
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "<figcaption><a class=\"listing-number\" href=\"#{id}\">Listing {n}</a>: \
                 {caption}{not_run}</figcaption></figure>",
                id = l.id(),
                n = l.number,
                caption = inline_html(&l.caption),
            ));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    const CHAPTER: &str = "\
Text.

<Listing number=\"0-1\" file=\"listings/ch00-introduction/listing-00-01/src/main.rs\" caption=\"A `oneshot` hand-off\">

```rust
{{#rustdoc_include ../listings/ch00-introduction/listing-00-01/src/main.rs}}
```

</Listing>
";

    #[test]
    fn parses_and_derives_the_command() {
        let _limit = TestLimit::seconds(5);
        let listings = parse(CHAPTER).unwrap();
        assert_eq!(listings.len(), 1);
        assert_eq!(listings[0].id(), "listing-0-1");
        assert_eq!(listings[0].package(), Some("listing-00-01"));
        assert_eq!(listings[0].run, "cargo run -p listing-00-01");
        assert_eq!((listings[0].line, listings[0].end_line), (3, 9));
    }

    #[test]
    fn renders_line_for_line() {
        let _limit = TestLimit::seconds(5);
        let html = render(CHAPTER).unwrap();
        assert_eq!(html.lines().count(), CHAPTER.lines().count());
        assert!(html.contains("id=\"listing-0-1\""));
        assert!(html.contains("<a class=\"listing-number\" href=\"#listing-0-1\">Listing 0-1</a>"));
        assert!(html.contains("A <code>oneshot</code> hand-off"));
    }

    #[test]
    fn a_wrong_number_is_caught() {
        let _limit = TestLimit::seconds(5);
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let wrong = CHAPTER.replace("number=\"0-1\"", "number=\"0-2\"");
        let errors = check(&wrong, "ch00-introduction.md", &root);
        assert!(
            errors
                .iter()
                .any(|e| e.message.contains("must be listing-00-02")),
            "{errors:?}"
        );
        assert!(check(CHAPTER, "ch00-introduction.md", &root).is_empty());
        assert!(!check(CHAPTER, "ch01-callbacks.md", &root).is_empty());
    }

    #[test]
    fn unclosed_tags_are_errors() {
        let _limit = TestLimit::seconds(5);
        let broken = CHAPTER.replace("</Listing>", "");
        assert!(parse(&broken).is_err());
    }
}
