//! Checks every internal link of the built HTML book: the file exists, and
//! the `#anchor`, if any, is an `id` on that page. External links are not
//! followed (the book must work offline); they are only counted.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Component, Path, PathBuf};

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Pages read.
    pub pages: usize,
    /// Internal links checked.
    pub links: usize,
    /// External links seen (not followed).
    pub external: usize,
    /// Broken links, as "page: target (why)", and ids used twice on a page
    /// (a link to them could land on either).
    pub broken: Vec<String>,
}

fn attribute_values<'a>(html: &'a str, name: &str) -> Vec<&'a str> {
    let key = format!(" {name}=\"");
    html.match_indices(&key)
        .filter_map(|(at, _)| {
            let start = at + key.len();
            html[start..].find('"').map(|end| &html[start..start + end])
        })
        .collect()
}

fn html_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            html_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "html") {
            found.push(path);
        }
    }
}

fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// Checks the book built in `book_dir`. `404.html` is skipped: it sets
/// `<base href="/">` and is only served for missing pages.
pub fn check(book_dir: &Path) -> Report {
    let mut pages = Vec::new();
    html_files(book_dir, &mut pages);
    pages.retain(|p| p.file_name().is_some_and(|n| n != "404.html"));
    let mut ids: HashMap<PathBuf, HashSet<String>> = HashMap::new();
    let mut duplicates = Vec::new();
    let mut texts = Vec::new();
    for page in &pages {
        let text = fs::read_to_string(page).unwrap_or_default();
        let all_ids = attribute_values(&text, "id");
        let page_ids: HashSet<String> = all_ids.iter().map(|id| id.to_string()).collect();
        if page_ids.len() < all_ids.len() {
            let mut seen = HashSet::new();
            for id in &all_ids {
                if !seen.insert(*id) {
                    duplicates.push(format!(
                        "{}: id \"{id}\" appears more than once",
                        page.strip_prefix(book_dir).unwrap_or(page).display()
                    ));
                }
            }
        }
        ids.insert(normalise(page), page_ids);
        texts.push((page.clone(), text));
    }
    let mut report = Report {
        pages: pages.len(),
        broken: duplicates,
        ..Report::default()
    };
    for (page, text) in &texts {
        for target in attribute_values(text, "href") {
            if target.contains("://") || target.starts_with("mailto:") || target.starts_with("//") {
                report.external += 1;
                continue;
            }
            report.links += 1;
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let file = file.split('?').next().unwrap_or_default();
            let resolved = if file.is_empty() {
                normalise(page)
            } else {
                normalise(&page.parent().unwrap_or(book_dir).join(file))
            };
            let relative = page.strip_prefix(book_dir).unwrap_or(page).display();
            if !resolved.exists() {
                report
                    .broken
                    .push(format!("{relative}: {target} (no such file)"));
                continue;
            }
            if !anchor.is_empty() {
                let known = ids.get(&resolved).is_some_and(|set| set.contains(anchor));
                if !known {
                    report
                        .broken
                        .push(format!("{relative}: {target} (no id \"{anchor}\" there)"));
                }
            }
        }
    }
    report
}
