//! One version per dependency a reader copies. The workspace's
//! `[workspace.dependencies]` in the root `Cargo.toml` holds the version of
//! tokio, futures and loom once; every listing's manifest (and the support
//! crate's) writes the same version out in full, so that a listing copied
//! out of the repository still builds on its own. [`check`] finds every
//! manifest that disagrees; [`write()`] makes them agree, which is how a bump
//! of tokio is done (`book versions --write`, MAINTAINING.md).
//!
//! Manifests are read line by line: a dependency line is `name = "x.y"` or
//! `name = { version = "x.y", … }`, in any dependency table. That is the
//! only form the book's manifests use (a rule test keeps every other key of
//! theirs free of workspace inheritance).

use std::fs;
use std::path::Path;

/// The dependencies whose versions listings must share with the workspace.
pub const SHARED: [&str; 3] = ["tokio", "futures", "loom"];

/// A manifest line that names a dependency's version: the dependency, and
/// the byte range of the version inside the line.
fn version_in(line: &str) -> Option<(&str, std::ops::Range<usize>)> {
    let (name, rest) = line.split_once('=')?;
    let name = name.trim();
    if !SHARED.contains(&name) {
        return None;
    }
    let offset = line.len() - rest.len();
    let rest_trimmed = rest.trim_start();
    let (search_from, within) = if rest_trimmed.starts_with('"') {
        (offset + (rest.len() - rest_trimmed.len()), rest_trimmed)
    } else {
        let at = rest.find("version")?;
        let after = &rest[at + "version".len()..];
        let quote = after.find('"')?;
        (offset + at + "version".len() + quote, &after[quote..])
    };
    let end = within[1..].find('"')?;
    Some((name, search_from + 1..search_from + 1 + end))
}

/// The workspace's version of each shared dependency, read from the root
/// manifest's `[workspace.dependencies]`.
pub fn workspace_versions(root: &Path) -> Result<Vec<(String, String)>, String> {
    let manifest = fs::read_to_string(root.join("Cargo.toml"))
        .map_err(|e| format!("cannot read Cargo.toml: {e}"))?;
    let mut in_table = false;
    let mut found = Vec::new();
    for line in manifest.lines() {
        if line.starts_with('[') {
            in_table = line.trim() == "[workspace.dependencies]";
            continue;
        }
        if let (true, Some((name, range))) = (in_table, version_in(line)) {
            found.push((name.to_string(), line[range].to_string()));
        }
    }
    for name in SHARED {
        if !found.iter().any(|(n, _)| n == name) {
            return Err(format!(
                "Cargo.toml's [workspace.dependencies] has no `{name}`"
            ));
        }
    }
    Ok(found)
}

/// The manifests that must agree: every listing crate's, and the support
/// crate's.
fn manifests(root: &Path) -> Vec<String> {
    let mut found = vec!["listings/awd/Cargo.toml".to_string()];
    for listing in crate::repo::listing_crates(root) {
        found.push(format!("{}/Cargo.toml", listing.dir));
    }
    found
}

/// Every line, in every manifest, whose version differs from the
/// workspace's: `path:line: tokio "1.45", the workspace says "1.53.3"`.
pub fn check(root: &Path) -> Result<Vec<String>, String> {
    let wanted = workspace_versions(root)?;
    let mut differ = Vec::new();
    for manifest in manifests(root) {
        let text = fs::read_to_string(root.join(&manifest)).unwrap_or_default();
        for (index, line) in text.lines().enumerate() {
            let Some((name, range)) = version_in(line) else {
                continue;
            };
            let (_, version) = wanted.iter().find(|(n, _)| n == name).expect("shared");
            if line[range.clone()] != **version {
                differ.push(format!(
                    "{manifest}:{}: {name} \"{}\", the workspace says \"{version}\"",
                    index + 1,
                    &line[range]
                ));
            }
        }
    }
    Ok(differ)
}

/// Rewrites every manifest's versions of the shared dependencies to the
/// workspace's. Returns the manifests it changed.
pub fn write(root: &Path) -> Result<Vec<String>, String> {
    let wanted = workspace_versions(root)?;
    let mut changed = Vec::new();
    for manifest in manifests(root) {
        let path = root.join(&manifest);
        let text = fs::read_to_string(&path).unwrap_or_default();
        let mut out = String::with_capacity(text.len());
        for line in text.split_inclusive('\n') {
            match version_in(line) {
                Some((name, range)) => {
                    let (_, version) = wanted.iter().find(|(n, _)| n == name).expect("shared");
                    out.push_str(&line[..range.start]);
                    out.push_str(version);
                    out.push_str(&line[range.end..]);
                }
                None => out.push_str(line),
            }
        }
        if out != text {
            fs::write(&path, out).map_err(|e| format!("cannot write {manifest}: {e}"))?;
            changed.push(manifest);
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn both_forms_of_a_dependency_line_are_read() {
        let _limit = TestLimit::seconds(5);
        let line = r#"tokio = { version = "1.45", features = ["full"] }"#;
        let (name, range) = version_in(line).unwrap();
        assert_eq!((name, &line[range]), ("tokio", "1.45"));
        let line = r#"futures = "0.3.31""#;
        let (name, range) = version_in(line).unwrap();
        assert_eq!((name, &line[range]), ("futures", "0.3.31"));
        assert!(version_in(r#"serde_json = "1""#).is_none());
        assert!(version_in(r#"tokio = { workspace = true }"#).is_none());
    }
}
