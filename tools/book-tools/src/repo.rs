//! One map of the repository for every tool: where its root is, which
//! chapters `SUMMARY.md` lists, which listing crates and stored outputs exist,
//! and which figures are drawn. The build script, the tests and the `book`
//! command all ask here instead of walking the tree themselves.
//!
//! The layout it knows (README.md, "Layout"): chapters in `src/`, listed by
//! `src/SUMMARY.md`; Listing N-M in `listings/chNN-slug/listing-NN-MM/`, a
//! crate whose package has the folder's name, with `output*.txt` beside its
//! `Cargo.toml` when the book shows its output; figures in `src/figures/`.

use std::fs;
use std::path::{Path, PathBuf};

/// The repository's root: the folder that holds `book.toml`.
///
/// `.cargo/config.toml` sets `CARGO_WORKSPACE_DIR` for every crate built in
/// the workspace; without it (this crate built on its own), the root is two
/// levels above this crate.
pub fn root() -> PathBuf {
    match option_env!("CARGO_WORKSPACE_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

/// The chapter files `SUMMARY.md` links, in its order (draft chapters, with
/// no file, are left out), as file names under `src/`.
pub fn chapters(root: &Path) -> Vec<String> {
    let summary = fs::read_to_string(root.join("src/SUMMARY.md")).unwrap_or_default();
    summary
        .lines()
        .filter_map(|line| {
            let start = line.find("](")? + 2;
            let end = line[start..].find(')')? + start;
            let target = &line[start..end];
            (!target.is_empty()).then(|| target.to_string())
        })
        .collect()
}

/// One listing crate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListingCrate {
    /// Its package name, which is its folder's name (`listing-03-01`).
    pub package: String,
    /// Its folder, from the root (`listings/ch03-…/listing-03-01`).
    pub dir: String,
    /// The chapter it belongs to (3 for `listings/ch03-…`).
    pub chapter: u32,
}

impl ListingCrate {
    /// Its stored outputs (`output.txt`, `output-<variant>.txt`), sorted, as
    /// paths from the root.
    pub fn outputs(&self, root: &Path) -> Vec<String> {
        let mut found: Vec<String> = fs::read_dir(root.join(&self.dir))
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("output") && name.ends_with(".txt"))
            .map(|name| format!("{}/{name}", self.dir))
            .collect();
        found.sort();
        found
    }
}

/// Every listing crate, in chapter and listing order: each folder
/// `listings/chNN-*/*` that holds a `Cargo.toml`.
pub fn listing_crates(root: &Path) -> Vec<ListingCrate> {
    let mut found = Vec::new();
    let mut chapters: Vec<_> = fs::read_dir(root.join("listings"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let number = name.strip_prefix("ch")?.get(..2)?.parse::<u32>().ok()?;
            Some((number, name))
        })
        .collect();
    chapters.sort();
    for (chapter, folder) in chapters {
        let mut crates: Vec<String> = fs::read_dir(root.join("listings").join(&folder))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|entry| entry.path().join("Cargo.toml").is_file())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        crates.sort();
        for package in crates {
            found.push(ListingCrate {
                dir: format!("listings/{folder}/{package}"),
                package,
                chapter,
            });
        }
    }
    found
}

/// Every stored output of every listing, as paths from the root.
pub fn stored_outputs(root: &Path) -> Vec<String> {
    listing_crates(root)
        .iter()
        .flat_map(|listing| listing.outputs(root))
        .collect()
}

/// The listings that have a figure in `src/figures/` (`<package>.svg`),
/// sorted.
pub fn figures(root: &Path) -> Vec<String> {
    let mut packages: Vec<String> = fs::read_dir(root.join("src/figures"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".svg").map(str::to_string)
        })
        .collect();
    packages.sort();
    packages
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn the_map_finds_the_books_own_files() {
        let _limit = TestLimit::seconds(5);
        let root = root();
        assert!(root.join("book.toml").is_file(), "{}", root.display());
        assert!(chapters(&root).contains(&"ch03-deadlock-on-the-io-thread.md".to_string()));
        let listings = listing_crates(&root);
        let first = listings.first().expect("listings");
        assert_eq!(first.package, "listing-00-01");
        assert_eq!(first.chapter, 0);
        assert!(listings.iter().all(|l| l.dir.ends_with(&l.package)));
        assert!(stored_outputs(&root)
            .contains(&"listings/ch03-deadlock-on-the-io-thread/listing-03-01/output.txt".into()));
        assert!(figures(&root).contains(&"listing-04-01".to_string()));
    }
}
