//! The rules that keep every piece of code a reader sees checked:
//! captions agree with the repository, every fence says what it promises, no
//! include is left unresolved, every Rust block became a test, every listing
//! crate is shown and every stored output is shown, and every test in the
//! repository starts with a time limit.

use std::fs;
use std::path::{Path, PathBuf};

use awd::watchdog::TestLimit;
use book_tools::{fences, listing};

fn root() -> PathBuf {
    book_tools::repo::root()
}

fn out_dir() -> PathBuf {
    PathBuf::from(env!("OUT_DIR"))
}

/// The chapter files SUMMARY.md links (draft chapters have no file).
fn chapters() -> Vec<String> {
    book_tools::repo::chapters(&root())
}

fn files_under(dir: &Path, extension: &str, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() && path.file_name().is_some_and(|n| n != "target") {
            files_under(&path, extension, found);
        } else if path.extension().is_some_and(|e| e == extension) {
            found.push(path);
        }
    }
}

#[test]
fn every_chapter_is_a_real_page() {
    let _limit = TestLimit::seconds(10);
    for chapter in chapters() {
        let text = fs::read_to_string(root().join("src").join(&chapter))
            .unwrap_or_else(|_| panic!("SUMMARY.md links src/{chapter}, which does not exist"));
        let words = text.split_whitespace().count();
        assert!(
            chapter == "SUMMARY.md" || words >= 150,
            "src/{chapter} has {words} words: list it as a draft chapter `- [Title]()` until it is written"
        );
    }
}

#[test]
fn every_chapter_ends_with_exercises_and_folded_answers() {
    let _limit = TestLimit::seconds(10);
    let mut missing = Vec::new();
    for chapter in chapters() {
        if !chapter.starts_with("ch") {
            continue; // appendices have no exercises
        }
        let text = fs::read_to_string(root().join("src").join(&chapter)).expect("a chapter");
        let Some((_, exercises)) = text.split_once("\n## Exercises\n") else {
            missing.push(format!("src/{chapter} has no `## Exercises` section"));
            continue;
        };
        let questions = exercises
            .lines()
            .filter(|l| {
                let number = l.trim_start_matches(|c: char| c.is_ascii_digit());
                number.len() < l.len() && number.starts_with(". **")
            })
            .count();
        let answers = exercises.matches("admonish tip collapsible=true").count();
        if questions == 0 || answers != questions {
            missing.push(format!(
                "src/{chapter}: {questions} exercises but {answers} folded answers"
            ));
        }
    }
    assert!(missing.is_empty(), "\n{}", missing.join("\n"));
}

#[test]
fn captions_and_fences_follow_the_rules() {
    let _limit = TestLimit::seconds(10);
    let mut errors = Vec::new();
    for chapter in chapters() {
        let text = fs::read_to_string(root().join("src").join(&chapter)).expect("a chapter");
        let file = Path::new(&chapter).file_name().unwrap().to_string_lossy();
        for e in listing::check(&text, &file, &root()) {
            errors.push(format!("src/{chapter}: {e}"));
        }
        let not_run = listing::not_run_lines(&text);
        for e in fences::check(&format!("src/{chapter}"), &text, &not_run) {
            errors.push(e.to_string());
        }
    }
    assert!(errors.is_empty(), "\n{}", errors.join("\n"));
}

#[test]
fn every_include_is_resolved() {
    let _limit = TestLimit::seconds(10);
    let mut unresolved = Vec::new();
    for entry in fs::read_dir(out_dir().join("expanded")).expect("build.rs expanded the book") {
        let path = entry.expect("a file").path();
        let text = fs::read_to_string(&path).expect("an expanded chapter");
        for (n, line) in text.lines().enumerate() {
            if line.contains("{{#") {
                unresolved.push(format!("{}:{}: {line}", path.display(), n + 1));
            }
        }
    }
    assert!(
        unresolved.is_empty(),
        "mdBook left these directives unexpanded (a missing file or anchor?):\n{}",
        unresolved.join("\n")
    );
}

#[test]
fn play_buttons_only_where_the_playground_can_run_the_block() {
    let _limit = TestLimit::seconds(10);
    let mut errors = Vec::new();
    for entry in fs::read_dir(out_dir().join("expanded")).expect("build.rs expanded the book") {
        let path = entry.expect("a file").path();
        let text = fs::read_to_string(&path).expect("an expanded chapter");
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        errors.extend(
            fences::check_playground(&name, &text)
                .iter()
                .map(|e| e.to_string()),
        );
    }
    assert!(errors.is_empty(), "\n{}", errors.join("\n"));
}

#[test]
fn every_rust_block_became_a_test() {
    let _limit = TestLimit::seconds(10);
    let mut blocks = 0;
    for entry in fs::read_dir(out_dir().join("expanded")).expect("build.rs expanded the book") {
        let text = fs::read_to_string(entry.expect("a file").path()).expect("a chapter");
        blocks += fences::scan(&text).iter().filter(|f| f.is_rust()).count();
    }
    let generated =
        fs::read_to_string(out_dir().join("snippet-tests.rs")).expect("generated tests");
    let tests = generated.matches("#[test] fn ").count();
    assert!(blocks > 0, "the book shows no Rust block at all");
    assert_eq!(
        tests, blocks,
        "the book shows {blocks} Rust blocks but {tests} became tests"
    );
}

#[test]
fn every_listing_crate_is_shown_and_every_output_is_shown() {
    let _limit = TestLimit::seconds(10);
    let mut book = String::new();
    for chapter in chapters() {
        book.push_str(&fs::read_to_string(root().join("src").join(&chapter)).expect("a chapter"));
    }
    let mut missing = Vec::new();
    for listing in book_tools::repo::listing_crates(&root()) {
        if !book.contains(&format!("file=\"{}/", listing.dir)) {
            missing.push(format!("{} is not shown by any <Listing>", listing.dir));
        }
        for output in listing.outputs(&root()) {
            if !book.contains(&output) {
                missing.push(format!("{output} is checked but never shown"));
            }
        }
    }
    assert!(missing.is_empty(), "\n{}", missing.join("\n"));
}

#[test]
fn every_test_starts_with_a_time_limit() {
    let _limit = TestLimit::seconds(20);
    let mut sources = Vec::new();
    for dir in ["listings", "tools", "tests"] {
        files_under(&root().join(dir), "rs", &mut sources);
    }
    let mut unbounded = Vec::new();
    for path in sources {
        let text = fs::read_to_string(&path).expect("a source file");
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let attribute = line.trim();
            if !(attribute == "#[test]" || attribute.starts_with("#[tokio::test")) {
                continue;
            }
            let body = lines[i + 1..]
                .iter()
                .skip_while(|l| !l.contains("fn "))
                .skip(1)
                .find(|l| !l.trim().is_empty());
            if !body.is_some_and(|l| l.contains("TestLimit::")) {
                unbounded.push(format!("{}:{}", path.display(), i + 1));
            }
        }
    }
    assert!(
        unbounded.is_empty(),
        "these tests do not start with `let _limit = TestLimit::seconds(..);`:\n{}",
        unbounded.join("\n")
    );
}

/// A listing copied out of the repository, with only `listings/awd` beside
/// it, must still build: its manifest inherits nothing from the workspace
/// (no `workspace = true`, no `key.workspace = true`), and every path
/// dependency stays inside `listings/`.
#[test]
fn every_listing_manifest_stands_on_its_own() {
    let _limit = TestLimit::seconds(10);
    let listings = root().join("listings");
    let mut manifests = vec![listings.join("awd/Cargo.toml")];
    for chapter_dir in fs::read_dir(&listings).expect("listings/").flatten() {
        if chapter_dir.file_name().to_string_lossy().starts_with("ch") {
            for crate_dir in fs::read_dir(chapter_dir.path())
                .expect("a chapter folder")
                .flatten()
            {
                manifests.push(crate_dir.path().join("Cargo.toml"));
            }
        }
    }
    let mut inherited = Vec::new();
    for manifest in &manifests {
        let text = fs::read_to_string(manifest)
            .unwrap_or_else(|_| panic!("{} cannot be read", manifest.display()));
        for (i, line) in text.lines().enumerate() {
            // The line without its comment and without blanks: `a.b = { c = 1 }`
            // becomes `a.b={c=1}`. No manifest here has a `#` inside a string.
            let code: String = line
                .split('#')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            let at = format!("{}:{}", manifest.display(), i + 1);
            if code == "workspace=true"
                || code.contains(".workspace=true")
                || code.contains("{workspace=true")
                || code.contains(",workspace=true")
            {
                inherited.push(format!(
                    "{at}: inherits from the workspace: {}",
                    line.trim()
                ));
            }
            if let Some(start) = code.find("path=\"") {
                let relative = code[start + 6..].split('"').next().unwrap_or_default();
                if relative.ends_with(".rs") {
                    continue; // a target's source file, not a dependency
                }
                let target = manifest.parent().expect("a crate folder").join(relative);
                let inside = target
                    .canonicalize()
                    .is_ok_and(|t| t.starts_with(listings.canonicalize().expect("listings/")));
                if !inside {
                    inherited.push(format!("{at}: a path outside listings/: {}", line.trim()));
                }
            }
        }
    }
    assert!(
        manifests.len() > 30,
        "found only {} manifests",
        manifests.len()
    );
    assert!(
        inherited.is_empty(),
        "a copied listing would not build; write the values out:\n{}",
        inherited.join("\n")
    );
}

#[test]
fn every_fence_word_has_its_marker_in_the_theme_and_its_line_in_the_readme() {
    let _limit = TestLimit::seconds(5);
    // The words are defined once, in `book_tools::fences::Expectation`; the
    // marker a reader sees is the theme's, and the README lists them for
    // authors. Both must name every word, and nothing else.
    let css = fs::read_to_string(root().join("theme/listings.css")).expect("the theme");
    let readme = fs::read_to_string(root().join("README.md")).expect("the README");
    for word in book_tools::fences::outcome_words() {
        assert!(
            css.contains(&format!("pre:has(> code.{word})::before {{ content: ")),
            "theme/listings.css gives the fence word `{word}` no marker"
        );
        assert!(
            readme.contains(&format!("`rust,{word}`")),
            "README.md does not list the fence word `rust,{word}`"
        );
    }
    for (at, _) in css.match_indices("pre:has(> code.") {
        let word: String = css[at + "pre:has(> code.".len()..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        assert!(
            book_tools::fences::Expectation::from_fence_word(&word).is_some(),
            "theme/listings.css styles `{word}`, which is no fence word"
        );
    }
}

#[test]
fn every_listing_writes_the_workspaces_dependency_versions() {
    let _limit = TestLimit::seconds(5);
    let differ = book_tools::versions::check(&root()).expect("the root manifest");
    assert!(
        differ.is_empty(),
        "these manifests disagree with [workspace.dependencies] in Cargo.toml; run \
         `cargo run -p book-tools --bin book -- versions --write`:\n{}",
        differ.join("\n")
    );
}

/// The code of a Rust region, for comparing copies: comments and all
/// whitespace dropped (rustfmt may break a copy's lines elsewhere), and a
/// function's visibility and name forgotten (a copy may be private, or
/// named for the listing it sits in).
fn code_of(region: &str) -> String {
    code_lines(region)
        .concat()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

fn code_lines(region: &str) -> Vec<String> {
    region
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            let line = line.strip_prefix("pub ").unwrap_or(line);
            match (line.find("fn "), line.find('(')) {
                (Some(at), Some(open)) if at < open => {
                    format!("{}fn _{}", &line[..at], &line[open..])
                }
                _ => line.to_string(),
            }
        })
        .collect()
}

/// The lines of `file` (from the root) between `// ANCHOR: name` and
/// `// ANCHOR_END: name`.
fn anchored(file: &str, name: &str) -> Option<String> {
    let text = fs::read_to_string(root().join(file)).ok()?;
    let start = text.find(&format!("// ANCHOR: {name}\n"))?;
    let body = &text[start..];
    let body = &body[body.find('\n')? + 1..];
    let end = body.find(&format!("// ANCHOR_END: {name}"))?;
    Some(body[..end].to_string())
}

#[test]
fn every_copy_of_shown_code_is_the_code_shown() {
    let _limit = TestLimit::seconds(10);
    // A region that starts `// COPY OF: <file>:<anchor>` and ends
    // `// COPY END` repeats the anchored code of a listing the book shows
    // (the support crate ships Listing 2-3's bridge, for one).
    let mut sources = Vec::new();
    files_under(&root().join("listings"), "rs", &mut sources);
    let mut found = 0;
    let mut differ = Vec::new();
    for path in sources {
        let text = fs::read_to_string(&path).expect("a source file");
        for (at, _) in text.match_indices("// COPY OF: ") {
            found += 1;
            let line_end = text[at..].find('\n').map_or(text.len(), |n| at + n);
            let reference = text[at + "// COPY OF: ".len()..line_end].trim();
            let (file, anchor) = reference.rsplit_once(':').expect("<file>:<anchor>");
            let rest = &text[line_end..];
            let end = rest
                .find("// COPY END")
                .unwrap_or_else(|| panic!("{}: a COPY OF with no COPY END", path.display()));
            let shown = anchored(file, anchor)
                .unwrap_or_else(|| panic!("{}: no anchor `{anchor}` in {file}", path.display()));
            if code_of(&rest[..end]) != code_of(&shown) {
                differ.push(format!(
                    "{} no longer repeats {file}:{anchor}\n  copy:  {:?}\n  shown: {:?}",
                    path.display(),
                    code_lines(&rest[..end]),
                    code_lines(&shown)
                ));
            }
        }
    }
    assert!(
        found >= 2,
        "the copies this test holds have lost their markers"
    );
    assert!(differ.is_empty(), "\n{}", differ.join("\n"));
}

#[test]
fn the_mdbook_the_harness_links_is_the_one_readers_install() {
    let _limit = TestLimit::seconds(5);
    // mdBook's version is written where the harness links its library (the
    // root manifest), where readers install the binary (README) and where CI
    // installs it (.ci/run); mdbook-admonish 1.20 needs the 0.4 series.
    let manifest = fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("mdbook = { version = \"="))
        .and_then(|rest| rest.split('"').next())
        .expect("an exact mdbook version in [workspace.dependencies]");
    assert!(
        version.starts_with("0.4."),
        "mdbook-admonish 1.20 needs mdBook 0.4"
    );
    let readme = fs::read_to_string(root().join("README.md")).expect("README.md");
    let ci = fs::read_to_string(root().join(".ci/run")).expect(".ci/run");
    for (file, text) in [("README.md", &readme), (".ci/run", &ci)] {
        assert!(
            text.contains(&format!("mdbook@{version} ")),
            "{file} does not install mdbook@{version}, the version Cargo.toml links"
        );
    }
    assert!(
        ci.contains(&format!("'mdbook v{version}'")),
        ".ci/run does not check for mdbook v{version}"
    );
}
