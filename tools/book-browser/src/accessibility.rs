//! Accessibility audits with axe-core: its script (installed from the npm
//! registry, never kept in the repository) is added to a page and run with
//! its default rules (WCAG 2 A and AA, and best practices); a page passes
//! when axe-core finds no serious or critical violation. Every finding, of
//! any impact, is also counted per theme and rule for the run's summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::browser::Session;

/// The axe-core release the checks use (`.ci/run` installs it).
pub const AXE_VERSION: &str = "4.14.1";

/// Where `npm install --prefix target/axe-core axe-core@…` puts the script.
pub fn default_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/axe-core/node_modules/axe-core/axe.min.js")
}

/// The command that installs the script where [`default_script`] looks.
pub fn install_command() -> String {
    format!("npm install --no-save --prefix target/axe-core axe-core@{AXE_VERSION}")
}

/// The impacts that fail a page.
const FAILING_IMPACTS: [&str; 2] = ["critical", "serious"];

/// Adds axe-core (its source is `arguments[0]`) to the page, once.
const INJECT: &str = r#"
if (!window.axe) {
  const script = document.createElement('script');
  script.textContent = arguments[0];
  document.head.appendChild(script);
}
return window.axe ? window.axe.version : null;
"#;

/// Runs axe-core on the whole page and answers, through the callback,
/// `{violations: [{id, impact, help, nodes: [{target, summary}]}]}` or
/// `{error}`.
const RUN: &str = r#"
const done = arguments[arguments.length - 1];
window.axe.run(document, { resultTypes: ['violations'] })
  .then(results => done({ violations: results.violations.map(v => ({
    id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.map(n => ({ target: n.target.join(' '), summary: (n.failureSummary || '').split('\n').slice(0, 2).join(' ') })),
  })) }))
  .catch(error => done({ error: String(error) }));
"#;

/// One rule's findings on one page.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule: String,
    pub impact: String,
    pub help: String,
    /// The selectors of the elements it found, with why for the first.
    pub targets: Vec<String>,
    pub first_summary: String,
}

/// axe-core, loaded, with the count of every finding so far.
pub struct Audit {
    source: String,
    /// (theme, impact, rule) → elements found, over every page.
    counts: BTreeMap<(String, String, String), usize>,
    /// (theme) → pages audited.
    pages: BTreeMap<String, usize>,
}

impl Audit {
    /// Reads axe-core's script from `path`.
    pub fn load(path: &Path) -> Result<Audit, String> {
        let source = std::fs::read_to_string(path)
            .map_err(|e| format!("read axe-core from {}: {e}", path.display()))?;
        Ok(Audit {
            source,
            counts: BTreeMap::new(),
            pages: BTreeMap::new(),
        })
    }

    /// Audits the page the session shows, in `theme`; `Err` lists every
    /// serious or critical violation.
    pub fn check_page(&mut self, session: &Session, theme: &str) -> Result<(), String> {
        let loaded = session.execute(INJECT, json!([self.source]))?;
        if loaded.is_null() {
            return Err("axe-core did not load in the page".to_string());
        }
        let answer = session.execute_async(RUN, json!([]))?;
        if let Some(error) = answer["error"].as_str() {
            return Err(format!("axe-core failed: {error}"));
        }
        let findings = parse_findings(&answer["violations"]);
        *self.pages.entry(theme.to_string()).or_default() += 1;
        for finding in &findings {
            *self
                .counts
                .entry((
                    theme.to_string(),
                    finding.impact.clone(),
                    finding.rule.clone(),
                ))
                .or_default() += finding.targets.len();
        }
        judge(&findings)
    }

    /// One line per theme: pages audited and elements found per impact and
    /// rule.
    pub fn summary(&self) -> String {
        let mut text = String::new();
        for (theme, pages) in &self.pages {
            let mut per_impact: BTreeMap<&str, usize> = BTreeMap::new();
            let mut rules = Vec::new();
            for ((of_theme, impact, rule), count) in &self.counts {
                if of_theme == theme {
                    *per_impact.entry(impact).or_default() += count;
                    rules.push((severity(impact), format!("{rule} ({impact}) {count}")));
                }
            }
            rules.sort();
            let rules: Vec<String> = rules.into_iter().map(|(_, rule)| rule).collect();
            let impacts = IMPACTS
                .map(|impact| format!("{} {impact}", per_impact.get(impact).unwrap_or(&0)))
                .join(", ");
            let _ = write!(
                text,
                "axe-core {AXE_VERSION} [{theme}]: {pages} pages, elements found: {impacts}"
            );
            if !rules.is_empty() {
                let _ = write!(text, " — {}", rules.join("; "));
            }
            text.push('\n');
        }
        text
    }
}

/// Where `impact` comes in the summary: the gravest first.
fn severity(impact: &str) -> usize {
    IMPACTS
        .iter()
        .position(|known| *known == impact)
        .unwrap_or(IMPACTS.len())
}

/// axe-core's impacts, the gravest first.
const IMPACTS: [&str; 4] = ["critical", "serious", "moderate", "minor"];

/// The findings in axe-core's answer.
fn parse_findings(violations: &Value) -> Vec<Finding> {
    violations
        .as_array()
        .map(|all| {
            all.iter()
                .map(|violation| {
                    let nodes = violation["nodes"].as_array().cloned().unwrap_or_default();
                    Finding {
                        rule: violation["id"].as_str().unwrap_or("?").to_string(),
                        impact: violation["impact"].as_str().unwrap_or("minor").to_string(),
                        help: violation["help"].as_str().unwrap_or_default().to_string(),
                        targets: nodes
                            .iter()
                            .map(|node| node["target"].as_str().unwrap_or("?").to_string())
                            .collect(),
                        first_summary: nodes
                            .first()
                            .and_then(|node| node["summary"].as_str())
                            .unwrap_or_default()
                            .to_string(),
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `Ok` unless a finding is serious or critical; then one clause per such
/// rule: its impact, what it asks, how many elements and which first.
fn judge(findings: &[Finding]) -> Result<(), String> {
    let failing: Vec<String> = findings
        .iter()
        .filter(|finding| FAILING_IMPACTS.contains(&finding.impact.as_str()))
        .map(|finding| {
            let first = finding.targets.first().map(String::as_str).unwrap_or("?");
            let more = match finding.targets.len() {
                0 | 1 => String::new(),
                n => format!(" and {} more", n - 1),
            };
            format!(
                "{} ({}): {}: {first}{more} — {}",
                finding.rule, finding.impact, finding.help, finding.first_summary
            )
        })
        .collect();
    if failing.is_empty() {
        Ok(())
    } else {
        Err(failing.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    fn answer() -> Value {
        json!([
            { "id": "color-contrast", "impact": "serious", "help": "Elements must meet minimum color contrast ratio thresholds",
              "nodes": [ { "target": "a[href=\"x\"]", "summary": "Fix any of the following: contrast 3.64" },
                         { "target": "p > a", "summary": "" } ] },
            { "id": "region", "impact": "moderate", "help": "All page content should be contained by landmarks",
              "nodes": [ { "target": "#menu-bar", "summary": "" } ] }
        ])
    }

    #[test]
    fn only_serious_and_critical_findings_fail_a_page() {
        let _limit = TestLimit::seconds(5);
        let findings = parse_findings(&answer());
        assert_eq!(findings.len(), 2);
        assert_eq!(findings[0].targets, ["a[href=\"x\"]", "p > a"]);
        let why = judge(&findings).unwrap_err();
        assert_eq!(
            why,
            "color-contrast (serious): Elements must meet minimum color contrast ratio thresholds: \
             a[href=\"x\"] and 1 more — Fix any of the following: contrast 3.64"
        );
        assert_eq!(judge(&findings[1..]), Ok(()));
        assert_eq!(judge(&[]), Ok(()));
    }

    #[test]
    fn the_summary_counts_elements_per_theme_impact_and_rule() {
        let _limit = TestLimit::seconds(5);
        let mut audit = Audit {
            source: String::new(),
            counts: BTreeMap::new(),
            pages: BTreeMap::new(),
        };
        for finding in parse_findings(&answer()) {
            *audit
                .counts
                .entry(("navy".into(), finding.impact, finding.rule))
                .or_default() += finding.targets.len();
        }
        audit.pages.insert("navy".into(), 1);
        audit.pages.insert("light".into(), 1);
        assert_eq!(
            audit.summary(),
            "axe-core 4.14.1 [light]: 1 pages, elements found: 0 critical, 0 serious, 0 moderate, 0 minor\n\
             axe-core 4.14.1 [navy]: 1 pages, elements found: 0 critical, 2 serious, 1 moderate, 0 minor \
             — color-contrast (serious) 2; region (moderate) 1\n"
        );
    }
}
