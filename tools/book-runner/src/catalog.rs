//! The book's own list of Rust blocks, read from `src/*.md` when the runner
//! starts: for each block, where its code comes from, what its fence promises
//! and which program arguments the book shows for it. A request names a block
//! by its id; an id not in this list is refused, so nothing a request carries
//! ever becomes a path.
//!
//! Most blocks are `{{#rustdoc_include file:anchor}}` of a listing crate.
//! mdBook expands such a block into the whole file, with the lines outside the
//! anchor hidden (`# `) and every `ANCHOR` marker line dropped
//! (`take_rustdoc_include_anchored_lines` in mdBook 0.4.51's
//! `src/utils/string.rs`). [`Include::shown`] gives the lines a reader sees,
//! and [`Include::splice`] is the inverse: it puts the lines the reader sent
//! back between the anchor's markers, keeping every hidden line and marker,
//! and says which line of the result is which line of the block as shown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use book_tools::fences::{self, Expectation};

/// Where a block's code comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `{{#rustdoc_include …}}` of a file in a listing crate.
    Include(Include),
    /// Code written in the chapter itself (a skeptic-style program).
    Inline {
        /// The block's lines as written, hidden `# ` lines included.
        text: String,
    },
}

/// A block that shows (part of) a listing's file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Include {
    /// The listing crate's directory (absolute).
    pub crate_dir: PathBuf,
    /// The included file, relative to `crate_dir` (e.g. `src/main.rs`).
    pub file: PathBuf,
    /// The anchor shown, if any; `None` shows the whole file.
    pub anchor: Option<String>,
}

/// What a line of a listing's file is on the page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// An `ANCHOR:` or `ANCHOR_END:` line: not on the page at all.
    Marker,
    /// Hidden (`# `): compiled, not shown.
    Hidden,
    /// Shown to the reader.
    Shown,
    /// The opening or closing marker of the shown anchor.
    Bound,
}

/// The name an `ANCHOR:` (or `ANCHOR_END:`, with `end`) line opens, as
/// mdBook's regexes `ANCHOR:\s*([\w_-]+)` read it.
fn anchor_name(line: &str, end: bool) -> Option<&str> {
    let key = if end { "ANCHOR_END:" } else { "ANCHOR:" };
    let at = line.find(key)? + key.len();
    let rest = line[at..].trim_start();
    let len = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(rest.len());
    (len > 0).then(|| &rest[..len])
}

/// The role of every line of `text` when the block shows `anchor`.
fn roles(text: &str, anchor: Option<&str>) -> Vec<Role> {
    let Some(anchor) = anchor else {
        return text.lines().map(|_| Role::Shown).collect();
    };
    let mut inside = false;
    let mut roles = Vec::new();
    for line in text.lines() {
        let start = anchor_name(line, false);
        let end = anchor_name(line, true);
        let role = if inside {
            match end {
                Some(name) if name == anchor => {
                    inside = false;
                    Role::Bound
                }
                Some(_) => Role::Marker,
                None if start.is_some() => Role::Marker,
                None => Role::Shown,
            }
        } else if start == Some(anchor) {
            inside = true;
            Role::Bound
        } else if start.is_some() || end.is_some() {
            Role::Marker
        } else {
            Role::Hidden
        };
        roles.push(role);
    }
    roles
}

/// A listing file rebuilt around the lines a reader sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spliced {
    /// The file's new text.
    pub text: String,
    /// For each line of `text` (index 0 is line 1), its line in the block as
    /// the reader sees it, or `None` for a hidden or marker line.
    pub shown_line: Vec<Option<usize>>,
}

impl Include {
    /// The lines of `file_text` a reader sees, joined with `\n`, as mdBook
    /// shows them (no trailing newline).
    pub fn shown(&self, file_text: &str) -> String {
        let roles = roles(file_text, self.anchor.as_deref());
        file_text
            .lines()
            .zip(roles)
            .filter(|(_, r)| *r == Role::Shown)
            .map(|(l, _)| l)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `file_text` with the shown lines replaced by `code`: hidden lines and
    /// the anchor markers outside the shown part stay where they were.
    pub fn splice(&self, file_text: &str, code: &str) -> Spliced {
        let roles = roles(file_text, self.anchor.as_deref());
        let mut text = String::with_capacity(file_text.len() + code.len());
        let mut shown_line = Vec::new();
        let mut placed = false;
        let mut closed = false;
        let place = |text: &mut String, shown_line: &mut Vec<Option<usize>>| {
            for (index, line) in code.lines().enumerate() {
                text.push_str(line);
                text.push('\n');
                shown_line.push(Some(index + 1));
            }
        };
        for (line, role) in file_text.lines().zip(roles) {
            match role {
                Role::Shown => {
                    if !placed {
                        place(&mut text, &mut shown_line);
                        placed = true;
                    }
                }
                Role::Bound if placed || self.anchor.is_none() => {
                    closed = true;
                    text.push_str(line);
                    text.push('\n');
                    shown_line.push(None);
                }
                Role::Bound => {
                    // The opening marker: the code follows it, even when the
                    // anchor was empty.
                    text.push_str(line);
                    text.push('\n');
                    shown_line.push(None);
                    place(&mut text, &mut shown_line);
                    placed = true;
                }
                // A marker of another anchor inside the shown part: where
                // it stood in the reader's edit is unknown, and no page
                // shows it; it goes.
                Role::Marker if placed && !closed => {}
                Role::Hidden | Role::Marker => {
                    text.push_str(line);
                    text.push('\n');
                    shown_line.push(None);
                }
            }
        }
        if !placed {
            place(&mut text, &mut shown_line);
        }
        Spliced { text, shown_line }
    }
}

/// Lines a reader sees of an inline block: every line that mdBook does not
/// hide (a line whose first non-blank character is `#` followed by a space
/// or nothing is hidden; `##` shows as `#`).
pub fn inline_shown(text: &str) -> String {
    text.lines()
        .filter_map(|line| {
            let rest = line.trim_start();
            let indent = &line[..line.len() - rest.len()];
            match rest.strip_prefix('#') {
                Some(r) if r.is_empty() || r.starts_with(' ') => None,
                Some(r) if r.starts_with('#') => Some(format!("{indent}{r}")),
                _ => Some(line.to_string()),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// True when an inline block has hidden lines (it is then run as written).
pub fn inline_has_hidden_lines(text: &str) -> bool {
    inline_shown(text).lines().count() != text.lines().count()
}

/// One Rust block of the book.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// `<chapter file stem>/<n>`, n counting the chapter's Rust blocks from 1.
    pub id: String,
    /// The chapter's file stem (`ch03-deadlock-on-the-io-thread`).
    pub chapter: String,
    /// The listing crate's package, for an included block.
    pub package: Option<String>,
    /// The number of the `<Listing>` the block sits in ("3-1"), if any.
    pub listing: Option<String>,
    /// What the fence promises.
    pub expect: Expectation,
    /// Why the block is not run, for a `no_run` listing.
    pub not_run: Option<String>,
    /// Where its code comes from.
    pub source: Source,
    /// The argument lists the book shows for it (always starts with `[]`).
    pub variants: Vec<Vec<String>>,
    /// The terminal command that runs it.
    pub command: String,
}

impl Block {
    /// The text of the block as a reader sees it, reading the listing file
    /// from disk as it is now.
    pub fn shown(&self) -> std::io::Result<String> {
        match &self.source {
            Source::Include(include) => {
                let text = std::fs::read_to_string(include.crate_dir.join(&include.file))?;
                Ok(include.shown(&text))
            }
            Source::Inline { text } => Ok(inline_shown(text)),
        }
    }

    /// True when the reader may edit the block in the page.
    pub fn editable(&self) -> bool {
        match &self.source {
            Source::Include(_) => true,
            Source::Inline { text } => !inline_has_hidden_lines(text),
        }
    }

    /// How the block is named to a reader: "Listing 3-1", or "this code".
    pub fn name(&self) -> String {
        match &self.listing {
            Some(number) => format!("Listing {number}"),
            None => "this code".to_string(),
        }
    }
}

/// Every Rust block of the book, by id.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Blocks by id.
    pub blocks: BTreeMap<String, Block>,
    /// The book's root directory.
    pub root: PathBuf,
    /// The first chapter of `SUMMARY.md`, which mdBook also renders as
    /// `index.html`.
    pub first_chapter: Option<String>,
}

/// A word of a program argument the runner passes on: no path, no shell.
fn plain_argument(word: &str) -> bool {
    !word.is_empty()
        && word.len() <= 40
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':'))
}

/// The argument lists shown for `package` in `texts`: every
/// `cargo run -p <package> -- <args>`, up to a backtick, quote, bracket or
/// `#`. A list with a word that could be a path (or anything but letters,
/// digits and `-_.:`) is left out.
pub fn variants_in(package: &str, texts: &[String]) -> Vec<Vec<String>> {
    let mut found: Vec<Vec<String>> = vec![Vec::new()];
    let key = format!("cargo run -p {package} -- ");
    for text in texts {
        for (at, _) in text.match_indices(&key) {
            let rest = &text[at + key.len()..];
            let end = rest
                .find(['`', '"', ')', '(', '<', '>', '#', '\n', '\''])
                .unwrap_or(rest.len());
            let words: Vec<String> = rest[..end].split_whitespace().map(String::from).collect();
            if !words.is_empty()
                && words.len() <= 4
                && words.iter().all(|w| plain_argument(w))
                && !found.contains(&words)
            {
                found.push(words);
            }
        }
    }
    found
}

impl Catalog {
    /// Reads every chapter of the book at `root`.
    pub fn load(root: &Path) -> Result<Catalog, String> {
        let root = root
            .canonicalize()
            .map_err(|e| format!("cannot find the book at {}: {e}", root.display()))?;
        let src = root.join("src");
        let mut chapters: Vec<PathBuf> = std::fs::read_dir(&src)
            .map_err(|e| format!("cannot read {}: {e}", src.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "md"))
            .collect();
        chapters.sort();
        let mut texts = Vec::new();
        for chapter in &chapters {
            texts.push(
                std::fs::read_to_string(chapter)
                    .map_err(|e| format!("cannot read {}: {e}", chapter.display()))?,
            );
        }
        let summary = std::fs::read_to_string(src.join("SUMMARY.md")).unwrap_or_default();
        let first_chapter = summary.split("](").nth(1).and_then(|rest| {
            let link = &rest[..rest.find(')')?];
            Some(link.strip_suffix(".md")?.to_string())
        });
        let mut catalog = Catalog {
            blocks: BTreeMap::new(),
            root: root.clone(),
            first_chapter,
        };
        for (chapter, markdown) in chapters.iter().zip(&texts) {
            let stem = chapter
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let listings = book_tools::listing::parse(markdown).unwrap_or_default();
            let lines: Vec<&str> = markdown.lines().collect();
            let rust = fences::scan(markdown).into_iter().filter(|f| f.is_rust());
            for (index, fence) in rust.enumerate() {
                let id = format!("{stem}/{}", index + 1);
                let end = fence.close_line.unwrap_or(lines.len() + 1) - 1;
                let body = lines[fence.line..end.max(fence.line)].join("\n");
                let listing = listings
                    .iter()
                    .find(|l| l.line < fence.line && fence.line < l.end_line);
                let expect = fence.expectation().unwrap_or(Expectation::Runs);
                let source = match include_of(&body, &src, &root)? {
                    Some(include) => Source::Include(include),
                    None => Source::Inline { text: body },
                };
                let package = match &source {
                    Source::Include(i) => i
                        .crate_dir
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned()),
                    Source::Inline { .. } => None,
                };
                let mut sources = texts.clone();
                if let Some(Source::Include(i)) = Some(&source) {
                    sources.extend(output_commands(&i.crate_dir));
                }
                let variants = match (&package, expect) {
                    (Some(_), Expectation::CompilesOnly | Expectation::CompileFails) => {
                        vec![Vec::new()]
                    }
                    (Some(p), _) => variants_in(p, &sources),
                    (None, _) => vec![Vec::new()],
                };
                let command = match (&package, listing) {
                    (_, Some(l)) => l.run.clone(),
                    (Some(p), None) => format!("cargo run -p {p}"),
                    (None, None) => "cargo test --test snippets".to_string(),
                };
                catalog.blocks.insert(
                    id.clone(),
                    Block {
                        id,
                        chapter: stem.clone(),
                        package,
                        listing: listing.map(|l| l.number.clone()),
                        expect,
                        not_run: listing.and_then(|l| l.not_run.clone()),
                        source,
                        variants,
                        command,
                    },
                );
            }
        }
        Ok(catalog)
    }

    /// The blocks of one chapter, in page order. `index` (or nothing) is
    /// the first chapter.
    pub fn chapter(&self, stem: &str) -> Vec<&Block> {
        let stem = match (stem, &self.first_chapter) {
            ("index" | "", Some(first)) => first.as_str(),
            _ => stem,
        };
        let mut blocks: Vec<&Block> = self.blocks.values().filter(|b| b.chapter == stem).collect();
        blocks.sort_by_key(|b| {
            b.id.rsplit('/')
                .next()
                .and_then(|n| n.parse::<usize>().ok())
        });
        blocks
    }
}

/// The commands on the first line of a crate's stored outputs.
fn output_commands(crate_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(crate_dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("output") && name.ends_with(".txt")
        })
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|text| text.lines().next().map(str::to_string))
        .collect()
}

/// The include a block consists of, if it is one `{{#rustdoc_include}}` of
/// a file inside a listing crate (`listings/chNN-…/listing-…/`).
fn include_of(body: &str, src: &Path, root: &Path) -> Result<Option<Include>, String> {
    let line = body.trim();
    let Some(inner) = line
        .strip_prefix("{{#rustdoc_include ")
        .and_then(|l| l.strip_suffix("}}"))
    else {
        return Ok(None);
    };
    let (path, anchor) = match inner.trim().split_once(':') {
        Some((path, anchor)) => (path, Some(anchor.to_string())),
        None => (inner.trim(), None),
    };
    if anchor
        .as_deref()
        .is_some_and(|a| a.chars().next().is_some_and(|c| c.is_ascii_digit()))
    {
        return Err(format!(
            "{line}: line ranges are not supported, only anchors"
        ));
    }
    let file = src
        .join(path)
        .canonicalize()
        .map_err(|e| format!("{line}: {e}"))?;
    let listings = root.join("listings");
    let relative = file
        .strip_prefix(&listings)
        .map_err(|_| format!("{line}: not a file of a listing"))?;
    let parts: Vec<_> = relative.components().collect();
    if parts.len() < 3 {
        return Err(format!("{line}: not inside a listing crate"));
    }
    let crate_dir = listings
        .join(parts[0].as_os_str())
        .join(parts[1].as_os_str());
    if !crate_dir.join("Cargo.toml").is_file() {
        return Err(format!("{line}: {} has no Cargo.toml", crate_dir.display()));
    }
    let file = file
        .strip_prefix(&crate_dir)
        .expect("inside the crate")
        .to_path_buf();
    Ok(Some(Include {
        crate_dir,
        file,
        anchor,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    const FILE: &str = "\
use a;
// ANCHOR: all
// ANCHOR: part
fn shown() {}
// ANCHOR_END: part
fn also() {}
// ANCHOR_END: all
fn hidden() {}
";

    fn include(anchor: Option<&str>) -> Include {
        Include {
            crate_dir: PathBuf::from("/x"),
            file: PathBuf::from("src/main.rs"),
            anchor: anchor.map(String::from),
        }
    }

    #[test]
    fn shown_lines_are_mdbooks() {
        let _limit = TestLimit::seconds(5);
        assert_eq!(include(Some("part")).shown(FILE), "fn shown() {}");
        assert_eq!(
            include(Some("all")).shown(FILE),
            "fn shown() {}\nfn also() {}"
        );
        assert_eq!(include(None).shown(FILE), FILE.trim_end());
    }

    #[test]
    fn splicing_the_shown_lines_gives_the_file_back() {
        let _limit = TestLimit::seconds(5);
        let part = include(Some("part"));
        let spliced = part.splice(FILE, &part.shown(FILE));
        assert_eq!(spliced.text, FILE);
        assert_eq!(spliced.shown_line[3], Some(1));
        assert_eq!(spliced.shown_line[0], None);
    }

    #[test]
    fn an_edit_lands_between_the_markers() {
        let _limit = TestLimit::seconds(5);
        let all = include(Some("all"));
        let spliced = all.splice(FILE, "fn a() {}\nfn b() {}\nfn c() {}");
        assert_eq!(
            spliced.text,
            "use a;\n// ANCHOR: all\nfn a() {}\nfn b() {}\nfn c() {}\n// ANCHOR_END: all\nfn hidden() {}\n"
        );
        assert_eq!(
            spliced.shown_line,
            vec![None, None, Some(1), Some(2), Some(3), None, None]
        );
    }

    #[test]
    fn inline_blocks_hide_hash_lines() {
        let _limit = TestLimit::seconds(5);
        let text = "# fn main() {\nlet x = 1;\n    #[derive(Debug)]\n## not hidden\n# }";
        assert_eq!(
            inline_shown(text),
            "let x = 1;\n    #[derive(Debug)]\n# not hidden"
        );
        assert!(inline_has_hidden_lines(text));
        assert!(!inline_has_hidden_lines("fn main() {}"));
    }

    #[test]
    fn variants_are_the_books_plain_switches() {
        let _limit = TestLimit::seconds(5);
        let texts = vec![
            "run `cargo run -p listing-03-01 -- --together` now".to_string(),
            "$ cargo run -p listing-03-01 -- --together  # exits with status 0".to_string(),
            "`cargo run -p listing-10-04 -- src/charts/costs.tsv`".to_string(),
            "`cargo run -p listing-03-05 -- --min-threads 2`".to_string(),
        ];
        assert_eq!(
            variants_in("listing-03-01", &texts),
            vec![Vec::<String>::new(), vec!["--together".to_string()]]
        );
        assert_eq!(variants_in("listing-10-04", &texts).len(), 1);
        assert_eq!(
            variants_in("listing-03-05", &texts)[1],
            vec!["--min-threads".to_string(), "2".to_string()]
        );
    }
}
