//! The checks of the rendered book, run in one browser session: every page of
//! the table of contents (and `index.html`, `print.html`) loads cleanly and
//! shows styled, readable captions and admonitions in the light and the navy
//! theme; every `#fragment` link in the text lands on its target; search
//! finds "deadlock"; `print.html` holds every chapter; screenshots are saved.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use serde_json::{json, Value};

use crate::accessibility::Audit;
use crate::browser::{self, LogEntry, Session};
use crate::keyboard;
use crate::report::Report;
use crate::runner::{Runner, RunnerCheck};
use crate::scripts;
use crate::server::BookServer;
use crate::styles::{self, Kind, ADMONITIONS, CAPTIONS};

/// The page size every check and screenshot uses.
pub const VIEWPORT: (u32, u32) = (1280, 900);

/// How long a page may take to settle (fonts loaded) after its load event.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// `print.html` calls `window.print()` 100 ms after loading; errors it
/// causes are read after this long.
const PRINT_PAUSE: Duration = Duration::from_millis(300);

/// How long a followed link may take to arrive and bring its target into
/// view (smooth scrolling included).
const LINK_LIMIT: Duration = Duration::from_secs(5);

/// What search must find.
const SEARCH_WORD: &str = "deadlock";

/// The book's themes the checks run in: mdBook's default and its preferred
/// dark theme (book.toml).
const THEMES: [&str; 2] = ["light", "navy"];

/// How much of a console message a report quotes.
const MESSAGE_LENGTH: usize = 240;

/// Browsers ask for this on their own; a book need not have it.
const IGNORED_PATH: &str = "/favicon.ico";

/// A page of the book, as the checks know it.
struct Page {
    /// Its file name, for reports.
    file: String,
    url: String,
    /// Its first heading, once seen.
    heading: Option<String>,
}

/// A `#fragment` link found in the text of a page.
struct FragmentLink {
    /// The page it is on, an index into [`BookCheck::pages`].
    page: usize,
    /// Its position among the matches of
    /// [`scripts::FRAGMENT_LINK_SELECTOR`] on its page.
    index: usize,
    /// As written in the page.
    href: String,
    /// Resolved against the page.
    url: String,
}

/// The run's state: the session, the server and what has been found so far.
pub struct BookCheck<'run> {
    session: &'run Session,
    server: &'run BookServer,
    report: &'run mut Report,
    /// Where screenshots are saved.
    screenshots: PathBuf,
    /// `index.html`, the table of contents' pages, then `print.html`.
    pages: Vec<Page>,
    /// The table of contents: each entry's page (an index into `pages`)
    /// and title.
    chapters: Vec<(usize, String)>,
    /// The links to follow, one per distinct target.
    fragment_links: Vec<FragmentLink>,
    /// How many captions and admonitions the style checks have met (all
    /// pages, all themes).
    blocks_seen: [usize; 2],
    /// What `print.html` holds, read in the light theme.
    print_contents: Option<Value>,
    /// Set once the overall time limit has been reported.
    out_of_time: bool,
    /// The close-up screenshots taken, as (kind, theme).
    close_ups: BTreeSet<(&'static str, String)>,
    /// axe-core, when it is installed.
    audit: Option<Audit>,
    /// The book's runner, and a second server of the book (another
    /// origin), when the runner is built.
    runner: Option<(&'run Runner, String)>,
    /// Only the runner's checks.
    runner_only: bool,
}

impl<'run> BookCheck<'run> {
    /// Prepares a run against the book `server` serves.
    pub fn new(
        session: &'run Session,
        server: &'run BookServer,
        report: &'run mut Report,
        screenshots: &Path,
    ) -> BookCheck<'run> {
        BookCheck {
            session,
            server,
            report,
            screenshots: screenshots.to_path_buf(),
            pages: Vec::new(),
            chapters: Vec::new(),
            fragment_links: Vec::new(),
            blocks_seen: [0, 0],
            print_contents: None,
            out_of_time: false,
            close_ups: BTreeSet::new(),
            audit: None,
            runner: None,
            runner_only: false,
        }
    }

    /// Uses the book's runner from the pages as well; `second_root` serves
    /// the same book from another origin.
    pub fn with_runner(
        mut self,
        runner: Option<(&'run Runner, String)>,
        only: bool,
    ) -> BookCheck<'run> {
        self.runner = runner;
        self.runner_only = only;
        self
    }

    /// Audits every page in every theme with axe-core as well.
    pub fn with_audit(mut self, audit: Option<Audit>) -> BookCheck<'run> {
        self.audit = audit;
        self
    }

    /// Runs every check; returns how many pages the book has.
    pub fn run(mut self) -> usize {
        if let Err(why) = self.prepare() {
            self.report.fail("(setup)", "open the book", why);
            return self.pages.len();
        }
        if self.runner_only {
            self.check_runner();
            return self.pages.len();
        }
        for theme in THEMES {
            if !self.in_time() {
                return self.pages.len();
            }
            if theme != "light" {
                self.switch_theme_with_the_picker(theme);
            }
            for page in 0..self.pages.len() {
                if !self.in_time() {
                    return self.pages.len();
                }
                self.check_page(page, theme);
            }
        }
        self.check_book_wide_styles();
        self.check_print_holds_every_chapter();
        self.check_fragment_links();
        if self.in_time() {
            let result = self.check_search();
            self.report.record(
                "index.html",
                &format!("search finds “{SEARCH_WORD}”"),
                result,
            );
        }
        if self.in_time() {
            let toggled = self.check_sidebar_toggle();
            self.report.record(
                "(first chapter)",
                "the sidebar toggle is a named button that Enter and Space press",
                toggled,
            );
        }
        if self.in_time() {
            self.check_runner();
        }
        let leftovers = self.page_errors();
        self.report
            .record("(after the last page)", "no late console errors", leftovers);
        if let Some(audit) = &self.audit {
            print!("{}", audit.summary());
        }
        self.pages.len()
    }

    /// False, with a failure recorded once, when the overall time is up.
    fn in_time(&mut self) -> bool {
        if self.session.time_left().is_zero() {
            if !std::mem::replace(&mut self.out_of_time, true) {
                self.report.fail(
                    "(run)",
                    "overall time limit",
                    "the run took too long; checks not made were skipped",
                );
            }
            return false;
        }
        true
    }

    /// Sets up the page environment, opens the book in the light theme and
    /// reads the table of contents.
    fn prepare(&mut self) -> Result<(), String> {
        let session = self.session;
        session.devtools(
            "Page.addScriptToEvaluateOnNewDocument",
            json!({ "source": scripts::OFFLINE_PLAYGROUND }),
        )?;
        session.devtools(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": VIEWPORT.0, "height": VIEWPORT.1, "deviceScaleFactor": 1, "mobile": false }),
        )?;
        let root = self.server.root_url();
        session.navigate(&format!("{root}index.html"))?;
        session.execute(scripts::STORE_THEME, json!(["light"]))?;
        session.navigate(&format!("{root}index.html"))?;
        let contents = session.wait_for(
            "the sidebar's table of contents",
            scripts::TABLE_OF_CONTENTS,
            json!([]),
            SETTLE_LIMIT,
        )?;
        let load = self.page_errors();
        self.report
            .record("index.html", "first load without console errors", load);

        self.pages.push(Page {
            file: "index.html".to_string(),
            url: format!("{root}index.html"),
            heading: None,
        });
        let mut seen = BTreeSet::new();
        for entry in contents.as_array().cloned().unwrap_or_default() {
            let url = entry["url"].as_str().unwrap_or_default();
            let url = url.split('#').next().unwrap_or_default().to_string();
            if !url.starts_with(&root) {
                self.report.fail(
                    "(book)",
                    "table of contents",
                    format!("entry {url} is not part of the book"),
                );
                continue;
            }
            if seen.insert(url.clone()) {
                self.chapters.push((
                    self.pages.len(),
                    entry["title"].as_str().unwrap_or_default().to_string(),
                ));
                self.pages.push(Page {
                    file: url[root.len()..].to_string(),
                    url,
                    heading: None,
                });
            }
        }
        if self.chapters.is_empty() {
            return Err("the table of contents lists no page".to_string());
        }
        self.pages.push(Page {
            file: "print.html".to_string(),
            url: format!("{root}print.html"),
            heading: None,
        });
        Ok(())
    }

    /// The console errors and failed loads since the last call, as one
    /// failure message (or `Ok` when there were none).
    fn page_errors(&self) -> Result<(), String> {
        let root = self.server.root_url();
        let entries: Vec<LogEntry> = self.session.take_browser_log()?;
        let mut problems: Vec<String> = Vec::new();
        for entry in entries {
            if entry.level != "SEVERE" || entry.message.contains(IGNORED_PATH) {
                continue;
            }
            let mut message = entry.message.replace(&root, "/");
            if let Some((cut, _)) = message.char_indices().nth(MESSAGE_LENGTH) {
                message.truncate(cut);
                message.push('…');
            }
            let line = format!("{} error: {message}", entry.source);
            if !problems.contains(&line) {
                problems.push(line);
            }
        }
        for path in self.server.take_missing() {
            let path_only = path
                .split(['?', '#'])
                .next()
                .unwrap_or_default()
                .to_string();
            if path_only == IGNORED_PATH || problems.iter().any(|p| p.contains(&path_only)) {
                continue;
            }
            problems.push(format!("not found: {path}"));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Loads `page` and waits until it has settled; returns what
    /// [`scripts::SETTLED_PAGE`] says about it.
    fn load(&self, page: usize) -> Result<Value, String> {
        self.session.navigate(&self.pages[page].url)?;
        let state = self.session.wait_for(
            "the page and its fonts to load",
            scripts::SETTLED_PAGE,
            json!([]),
            SETTLE_LIMIT,
        )?;
        if self.pages[page].file == "print.html" {
            thread::sleep(PRINT_PAUSE);
        }
        Ok(state)
    }

    /// Every check of one page in one theme.
    fn check_page(&mut self, page: usize, theme: &str) {
        let file = self.pages[page].file.clone();
        let state = match self.load(page) {
            Ok(state) => state,
            Err(why) => {
                let _ = self.page_errors();
                self.report.fail(&file, &format!("loads [{theme}]"), why);
                return;
            }
        };
        let errors = self.page_errors();
        self.report.record(
            &file,
            &format!("loads without console errors or failed loads [{theme}]"),
            errors,
        );

        let classes = state["classes"].as_str().unwrap_or_default();
        if !classes.split_whitespace().any(|class| class == theme) {
            self.report.fail(
                &file,
                &format!("shows the {theme} theme"),
                format!("the page's classes are “{classes}”"),
            );
            return;
        }
        let seen_before = self.blocks_seen;
        self.check_styles(page, theme);
        if let Some(audit) = &mut self.audit {
            let audited = audit.check_page(self.session, theme);
            self.report.record(
                &file,
                &format!("no serious or critical axe-core finding [{theme}]"),
                audited,
            );
        }

        if theme == "light" {
            self.pages[page].heading = state["heading"].as_str().map(str::to_string);
            if file == "print.html" {
                self.print_contents = self
                    .session
                    .execute(scripts::PRINT_CONTENTS, json!([]))
                    .ok()
                    .filter(|contents| !contents.is_null());
            }
            // index.html is a copy of the first chapter.
            if file != "index.html" {
                self.collect_fragment_links(page);
            }
        }
        let first_chapter = self.chapters.first().map(|(index, _)| *index);
        if Some(page) == first_chapter || (file == "print.html" && theme == "light") {
            let name = format!(
                "{}-{theme}.png",
                file.trim_end_matches(".html").replace('/', "-")
            );
            let saved = self.save_screenshot(&name, None);
            self.report
                .record(&file, &format!("screenshot {name}"), saved);
        }
        // The first caption and the first admonition of the book, up close.
        for (kind, (before, after)) in [&CAPTIONS, &ADMONITIONS]
            .into_iter()
            .zip(seen_before.into_iter().zip(self.blocks_seen))
        {
            let short = kind.short_name;
            if after > before
                && file != "index.html"
                && self.close_ups.insert((short, theme.to_string()))
            {
                let name = format!(
                    "{}-{short}-{theme}.png",
                    file.trim_end_matches(".html").replace('/', "-")
                );
                let saved = self.save_screenshot(&name, Some(kind.root));
                self.report
                    .record(&file, &format!("screenshot {name}"), saved);
            }
        }
    }

    /// Captions and admonitions of one page: styled and readable.
    fn check_styles(&mut self, page: usize, theme: &str) {
        let file = self.pages[page].file.clone();
        let kinds: [&Kind; 2] = [&CAPTIONS, &ADMONITIONS];
        let probe = match self.session.execute(
            scripts::PROBE_STYLES,
            json!([styles::probe_argument(&kinds)]),
        ) {
            Ok(probe) => probe,
            Err(why) => {
                self.report.fail(&file, &format!("styles [{theme}]"), why);
                return;
            }
        };
        if let Some(unrendered) = probe["unrendered_admonitions"].as_u64().filter(|n| *n > 0) {
            self.report.fail(
                &file,
                &format!("admonitions rendered [{theme}]"),
                format!(
                    "{unrendered} admonish block(s) shown as code: mdbook-admonish did not run"
                ),
            );
        }
        for (seen, kind) in self.blocks_seen.iter_mut().zip(kinds) {
            let blocks = probe["groups"][kind.name]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if blocks.is_empty() {
                continue;
            }
            *seen += blocks.len();
            // The same problem usually affects every block of a page: say it
            // once, with the blocks it affects.
            let mut found: Vec<(String, Vec<String>)> = Vec::new();
            for block in &blocks {
                let name = block["name"].as_str().unwrap_or("?").to_string();
                for problem in styles::problems(kind, block) {
                    match found.iter_mut().find(|(known, _)| *known == problem) {
                        Some((_, names)) => names.push(name.clone()),
                        None => found.push((problem, vec![name.clone()])),
                    }
                }
            }
            let result = if found.is_empty() {
                Ok(())
            } else {
                Err(found
                    .iter()
                    .map(|(problem, names)| {
                        let which = if names.len() == blocks.len() && names.len() > 1 {
                            format!("all {}", names.len())
                        } else {
                            names.join(", ")
                        };
                        format!("{problem} ({which})")
                    })
                    .collect::<Vec<_>>()
                    .join("; "))
            };
            self.report.record(
                &file,
                &format!(
                    "{} {}{} styled and readable [{theme}]",
                    blocks.len(),
                    kind.name,
                    if blocks.len() == 1 { "" } else { "s" }
                ),
                result,
            );
        }
    }

    /// The whole book has captions (required) and admonitions (checked once
    /// there are any).
    fn check_book_wide_styles(&mut self) {
        let [captions, admonitions] = self.blocks_seen;
        if captions == 0 {
            self.report.fail(
                "(book)",
                "has listing captions",
                "no listing caption in the book",
            );
        } else {
            self.report.record("(book)", "has listing captions", Ok(()));
        }
        if admonitions == 0 {
            self.report
                .skip("(book)", "has admonitions", "no admonition in the book");
        } else {
            self.report.record("(book)", "has admonitions", Ok(()));
        }
    }

    /// Switches to `theme` as a reader does, with the theme menu; falls back
    /// to setting it directly, so the theme's checks still run.
    fn switch_theme_with_the_picker(&mut self, theme: &str) {
        let session = self.session;
        let Some(&(first_chapter, _)) = self.chapters.first() else {
            return;
        };
        let picked = (|| -> Result<(), String> {
            self.load(first_chapter)?;
            session.click(&session.find("#theme-toggle")?)?;
            session.wait_for(
                "the theme menu to open",
                scripts::THEME_LIST_OPEN,
                json!([]),
                LINK_LIMIT,
            )?;
            session.click(&session.find(&format!("#theme-list #{theme}"))?)?;
            session
                .wait_for(
                    "the theme to apply",
                    scripts::THEME_APPLIED,
                    json!([theme]),
                    LINK_LIMIT,
                )
                .map(drop)
        })();
        let _ = self.page_errors();
        if picked.is_err() {
            let _ = session.execute(scripts::STORE_THEME, json!([theme]));
        }
        let file = self.pages[first_chapter].file.clone();
        self.report.record(
            &file,
            &format!("the theme menu switches to {theme}"),
            picked,
        );
    }

    /// Notes the page's `#fragment` links for [`Self::check_fragment_links`].
    fn collect_fragment_links(&mut self, page: usize) {
        let links = self.session.execute(
            scripts::FRAGMENT_LINKS,
            json!([scripts::FRAGMENT_LINK_SELECTOR]),
        );
        match links {
            Ok(links) => {
                for link in links.as_array().cloned().unwrap_or_default() {
                    let index = link["index"].as_u64().unwrap_or_default() as usize;
                    let url = link["url"].as_str().unwrap_or_default().to_string();
                    // Links to the same place land the same way: follow
                    // the first (pages are read in order, chapters before
                    // print.html).
                    if self.fragment_links.iter().any(|known| known.url == url) {
                        continue;
                    }
                    self.fragment_links.push(FragmentLink {
                        page,
                        index,
                        href: link["href"].as_str().unwrap_or_default().to_string(),
                        url,
                    });
                }
            }
            Err(why) => {
                let file = self.pages[page].file.clone();
                self.report.fail(&file, "list its #links", why);
            }
        }
    }

    /// `print.html` holds the title of every chapter in the table of
    /// contents, and each chapter's first heading.
    fn check_print_holds_every_chapter(&mut self) {
        let Some(contents) = self.print_contents.take() else {
            self.report.fail(
                "print.html",
                "holds every chapter",
                "its content could not be read",
            );
            return;
        };
        let text = contents["text"].as_str().unwrap_or_default().to_lowercase();
        let headings: Vec<String> = contents["headings"]
            .as_array()
            .map(|all| {
                all.iter()
                    .filter_map(|h| h.as_str().map(str::to_lowercase))
                    .collect()
            })
            .unwrap_or_default();
        for (page, title) in self.chapters.clone() {
            let mut missing = Vec::new();
            if !text.contains(&title.to_lowercase()) {
                missing.push(format!("the title “{title}” is not in its text"));
            }
            if let Some(heading) = &self.pages[page].heading {
                if !headings.contains(&heading.to_lowercase()) {
                    missing.push(format!(
                        "the chapter's heading “{heading}” is not among its <h1>"
                    ));
                }
            }
            let result = if missing.is_empty() {
                Ok(())
            } else {
                Err(missing.join("; "))
            };
            self.report
                .record("print.html", &format!("holds “{title}”"), result);
        }
    }

    /// Follows every `#fragment` link to a distinct place and checks where
    /// it lands: a link within its page is clicked (or loaded, if it is not
    /// shown), a link to another page is loaded.
    fn check_fragment_links(&mut self) {
        let links = std::mem::take(&mut self.fragment_links);
        let mut current_page = None;
        for link in &links {
            if !self.in_time() {
                return;
            }
            let file = self.pages[link.page].file.clone();
            let result = self.follow(link, &mut current_page);
            self.report.record(
                &file,
                &format!("link {} lands on its target", link.href),
                result,
            );
        }
    }

    /// Follows one link from its page; `current_page` is the page the
    /// browser is known to show, if it still shows it.
    fn follow(
        &mut self,
        link: &FragmentLink,
        current_page: &mut Option<usize>,
    ) -> Result<(), String> {
        let session = self.session;
        let same_page = without_fragment(&link.url) == without_fragment(&self.pages[link.page].url);
        if same_page {
            if *current_page != Some(link.page) {
                self.load(link.page)?;
                let _ = self.page_errors();
            }
            *current_page = None;
            let element = session.execute(
                scripts::LINK_TO_CLICK,
                json!([scripts::FRAGMENT_LINK_SELECTOR, link.index]),
            )?;
            match browser::element_id(&element) {
                Some(id) => session.click(&id)?,
                None => session.navigate(&link.url)?,
            }
        } else {
            // Following a link to another page is loading that URL.
            *current_page = None;
            session.navigate(&link.url)?;
        }
        // Poll until it has arrived with the target in view (smooth
        // scrolling takes a moment); judge the last state seen.
        let give_up_at = Instant::now() + LINK_LIMIT;
        let state = loop {
            let state = session.execute(scripts::FRAGMENT_TARGET, json!([link.url]))?;
            let done = state["arrived"] == json!(true) && state["in_view"] == json!(true);
            if done || Instant::now() >= give_up_at || session.time_left().is_zero() {
                break state;
            }
            thread::sleep(Duration::from_millis(50));
        };
        // The pages' own errors are reported by their load checks.
        let _ = self.page_errors();
        if state["arrived"] != json!(true) {
            return Err(format!(
                "the browser went to {} instead",
                state["at"].as_str().unwrap_or("?")
            ));
        }
        if same_page {
            *current_page = Some(link.page);
        }
        if state["found"] != json!(true) {
            return Err("no element has that id".to_string());
        }
        if state["in_view"] != json!(true) {
            return Err(format!(
                "the target is not in the viewport after {LINK_LIMIT:?} (its top at {} px, viewport {} px high)",
                state["top"], state["viewport"]
            ));
        }
        Ok(())
    }

    /// The runner's checks ([`crate::runner`]), in both themes where they
    /// concern the look of a run.
    fn check_runner(&mut self) {
        let Some((runner, second_root)) = self.runner.clone() else {
            return;
        };
        let _ = self.page_errors();
        let session = self.session;
        let mut audit = self.audit.take();
        let screenshot = |name: &str, centre_on: &str| self.save_screenshot(name, Some(centre_on));
        let mut check = RunnerCheck {
            session,
            runner,
            root: self.server.root_url(),
            second_root,
            screenshot: &screenshot,
            audit: audit.as_mut(),
            outcomes: Vec::new(),
        };
        if check.connect() {
            for theme in THEMES {
                match session.execute(scripts::STORE_THEME, json!([theme])) {
                    Ok(_) => check.check_listing_3_1(theme),
                    Err(why) => check.outcomes.push((
                        "(runner)".to_string(),
                        format!("switch to {theme}"),
                        Err(why),
                    )),
                }
            }
            check.check_stop();
        }
        let outcomes = std::mem::take(&mut check.outcomes);
        let errors = self.page_errors();
        // The second origin's refusals are console errors by design: it
        // reads the log itself.
        let mut second = RunnerCheck {
            session,
            runner,
            root: self.server.root_url(),
            second_root: check.second_root.clone(),
            screenshot: &screenshot,
            audit: None,
            outcomes: Vec::new(),
        };
        second.check_second_origin();
        let second_outcomes = std::mem::take(&mut second.outcomes);
        self.audit = audit;
        for (page, what, result) in outcomes.into_iter().chain(second_outcomes) {
            self.report.record(&page, &what, result);
        }
        self.report.record(
            "(runner)",
            "the runner's pages log no console errors",
            errors,
        );
    }

    /// mdBook's sidebar toggle, made a button by `theme/accessibility.js`:
    /// named, reached with Tab, and Enter then Space hide and show the
    /// table of contents.
    fn check_sidebar_toggle(&mut self) -> Result<(), String> {
        let session = self.session;
        let Some(&(first_chapter, _)) = self.chapters.first() else {
            return Err("no chapter".to_string());
        };
        self.load(first_chapter)?;
        let toggle = session.find("#sidebar-toggle")?;
        let (role, name) = session.accessible_role_and_name(&toggle)?;
        if role != "button" || name.is_empty() {
            return Err(format!("it is a “{role}” named “{name}”"));
        }
        keyboard::reach(session, &toggle, "the sidebar toggle")?;
        for key in [Key::Enter, Key::Space] {
            let before = session.execute(scripts::SIDEBAR_STATE, json!([]))?;
            session.press_key(char::from(key))?;
            let wanted = json!(before["expanded"] != json!(true));
            session.wait_for(
                &format!("{key:?} to toggle the sidebar"),
                "const s = (() => { SIDEBAR })(); return s.expanded === arguments[0] && s.hidden === !arguments[0];"
                    .replace("SIDEBAR", scripts::SIDEBAR_STATE)
                    .as_str(),
                json!([wanted]),
                LINK_LIMIT,
            )?;
        }
        let _ = self.page_errors();
        Ok(())
    }

    /// Search as a reader uses it: press `s`, type the word, see results.
    fn check_search(&mut self) -> Result<(), String> {
        self.load(0)?;
        // The page's own errors are reported by its load checks.
        let _ = self.page_errors();
        let searched = self.search();
        let errors = self.page_errors();
        searched.and(errors.map_err(|why| format!("searching logged errors: {why}")))
    }

    /// The steps of [`Self::check_search`], on a loaded page.
    fn search(&self) -> Result<(), String> {
        let session = self.session;
        session.wait_for(
            "the search index to load",
            scripts::SEARCH_READY,
            json!([]),
            SETTLE_LIMIT,
        )?;
        session.press_key('s')?;
        session.wait_for(
            "the search bar to open and take the focus after pressing s",
            scripts::SEARCH_BAR_FOCUSED,
            json!([]),
            LINK_LIMIT,
        )?;
        session.type_into(&session.find("#searchbar")?, SEARCH_WORD)?;
        let results = session.wait_for(
            &format!("results for “{SEARCH_WORD}”"),
            scripts::SEARCH_RESULTS,
            json!([]),
            LINK_LIMIT,
        )?;
        let count = results["count"].as_u64().unwrap_or(0);
        if count == 0 {
            return Err(format!("no result ({})", results["header"]));
        }
        Ok(())
    }

    /// Saves a screenshot of the viewport (at the top of the page, or
    /// centred on the first element matching `centre_on`) as `name` in the
    /// screenshots directory, and checks it is a PNG of the viewport's size.
    fn save_screenshot(&self, name: &str, centre_on: Option<&str>) -> Result<(), String> {
        self.session
            .execute(scripts::SCROLL_FOR_SCREENSHOT, json!([centre_on]))?;
        let image = self.session.screenshot()?;
        let size = png_dimensions(&image)?;
        if size != VIEWPORT {
            return Err(format!(
                "the screenshot is {}×{}, not {}×{}",
                size.0, size.1, VIEWPORT.0, VIEWPORT.1
            ));
        }
        fs::create_dir_all(&self.screenshots)
            .map_err(|e| format!("create {}: {e}", self.screenshots.display()))?;
        let path = self.screenshots.join(name);
        fs::write(&path, image).map_err(|e| format!("write {}: {e}", path.display()))
    }
}

/// The width and height of the PNG image `bytes`, read by the `png`
/// decoder (which checks the header's signature and checksums).
fn png_dimensions(bytes: &[u8]) -> Result<(u32, u32), String> {
    let reader = png::Decoder::new(bytes)
        .read_info()
        .map_err(|e| format!("the screenshot is not a PNG: {e}"))?;
    let info = reader.info();
    Ok((info.width, info.height))
}

/// `url` without its `#fragment`.
fn without_fragment(url: &str) -> &str {
    url.split('#').next().unwrap_or_default()
}
