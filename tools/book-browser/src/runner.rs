//! The book's local runner (`tools/book-runner`), used from the page as a
//! reader uses it, from the keyboard alone: on Chapter 3, Run shows Listing
//! 3-1's deadlock report; Exercise 3.1's switch (`--together`) completes;
//! the edit that cures it (the header's
//! continuations made asynchronous) completes; Reset brings the book's code
//! back; on Chapter 0, Stop ends an edited Listing 0-1 that sleeps for ten
//! minutes; Run, Edit, Reset and Stop are buttons named for their listing;
//! and the same page served from a second local origin cannot make the
//! runner run anything. Screenshots of the live deadlock report and of the
//! cured run are saved.
//!
//! The runner is started here (`--no-book`, on a free port, with the test's
//! book server as the book's origin) in a process group of its own, and the
//! page learns its secret the reader's way: from the link it prints.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use fantoccini::key::Key;
use serde_json::{json, Value};

use crate::accessibility::Audit;
use crate::browser::{element_id, element_ref, Session};
use crate::driver::ProcessGroup;
use crate::keyboard;

/// How long the runner may take to start and print its link.
const START_LIMIT: Duration = Duration::from_secs(60);

/// How long a run may take to end, a first build of an edited listing
/// included.
const RUN_LIMIT: Duration = Duration::from_secs(150);

/// How long Stop may take to end a run.
const STOP_LIMIT: Duration = Duration::from_secs(15);

/// How long the page may take to show its controls, or an answer to Run.
const PAGE_LIMIT: Duration = Duration::from_secs(15);

/// What the watchdog prints when Listing 3-1 deadlocks.
const DEADLOCK_REPORT: &str = "watchdog: `server` did not finish within 300 ms: deadlock";

/// The chapter pages the checks use.
const CHAPTER_3: &str = "ch03-deadlock-on-the-io-thread.html";
const CHAPTER_0: &str = "ch00-introduction.html";

/// The edit that cures Listing 3-1 (Chapter 7's fix): the header's
/// continuations, the first in the code, run asynchronously.
const CURE: (&str, &str) = ("Continuations::Inline", "Continuations::Asynchronous");

/// The switch of Exercise 3.1, as "Run with" holds it.
const TOGETHER: &str = r#"["--together"]"#;

/// The line that makes Listing 0-1 hang, put before the line that starts
/// with the second string.
const HANG: (&str, &str) = (
    "    std::thread::sleep(std::time::Duration::from_secs(600));",
    "    result.await",
);

/// The runner, started for the checks; ended (with every run) on drop.
pub struct Runner {
    processes: ProcessGroup,
    /// Where the page reaches it: `127.0.0.1:<port>`.
    address: String,
    /// The secret of this start.
    token: String,
    /// The link it printed, which opens the book with Run enabled.
    link: String,
}

impl Runner {
    /// Starts `binary` on a free port for a book served at `origin`, and
    /// reads the link it prints; its errors go to `log`.
    pub fn start(binary: &Path, origin: &str, log: &Path) -> Result<Runner, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("find a free port: {e}"))?
            .port();
        let errors =
            std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let mut command = Command::new(binary);
        command
            .args([
                "--no-book",
                "--port",
                &port.to_string(),
                "--book-origin",
                origin,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(errors);
        let mut processes = ProcessGroup::spawn(command, "book-runner")?;
        let stdout = processes
            .take_stdout()
            .ok_or("the runner's output cannot be read")?;
        let (link_sender, link) = mpsc::channel();
        thread::Builder::new()
            .name("book-runner-output".to_string())
            .spawn(move || {
                // Read to the end, so that the runner never blocks on a full
                // pipe; the first link is the one.
                let mut sender = Some(link_sender);
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if line.contains("#awd-runner=") {
                        if let Some(sender) = sender.take() {
                            let _ = sender.send(line.trim().to_string());
                        }
                    }
                }
            })
            .map_err(|e| format!("read the runner's output: {e}"))?;
        let link = link.recv_timeout(START_LIMIT).map_err(|_| {
            let said = std::fs::read_to_string(log).unwrap_or_default();
            format!(
                "the runner printed no link within {START_LIMIT:?}: {}",
                said.lines().last().unwrap_or("(nothing on stderr)")
            )
        })?;
        let (address, token) = address_and_token(&link)
            .ok_or_else(|| format!("no address and secret in the link {link}"))?;
        Ok(Runner {
            processes,
            address,
            token,
            link,
        })
    }

    /// The fragment that gives a page of the book the runner.
    fn fragment(&self) -> String {
        format!("#awd-runner={}/{}", self.address, self.token)
    }

    /// Ends the runner and every run; `Err` says what had to be killed.
    pub fn end(&mut self) -> Result<(), String> {
        self.processes.end()
    }
}

/// Returns the stored runner once the page has taken it from the link and
/// removed it from the address bar; `null` before.
const CONNECTED: &str = r#"
const stored = localStorage.getItem('awd-runner');
return stored && location.hash === '' ? JSON.parse(stored) : null;
"#;

/// The controls of the block of listing `arguments[0]` (e.g. "Listing
/// 3-1"), once the runner has told the page about it; `null` before.
const CONTROLS: &str = r#"
const run = document.querySelector(`button.awd-run[aria-label="Run ${arguments[0]}"]`);
if (!run) return null;
const bar = run.closest('.awd-runner');
const block = bar.previousElementSibling && bar.previousElementSibling.previousElementSibling;
return {
  run, bar,
  edit: bar.querySelector('button.awd-edit'),
  reset: bar.querySelector('button.awd-reset'),
  stop: bar.querySelector('button.awd-stop'),
  switches: bar.querySelector('select.awd-args'),
  editor: bar.previousElementSibling,
  code: block && block.tagName === 'PRE' ? block : null,
};
"#;

/// The state of the runner bar `arguments[0]`.
const RUN_STATE: &str = r#"
const bar = arguments[0];
const verdict = bar.querySelector('.awd-verdict');
return {
  status: bar.querySelector('.awd-status').textContent.trim(),
  output: bar.querySelector('.awd-output').textContent,
  outcome: verdict.hidden ? null : (verdict.dataset.outcome || null),
  verdict: verdict.textContent.trim(),
  stop_enabled: !bar.querySelector('button.awd-stop').disabled,
};
"#;

/// Puts the caret of textarea `arguments[0]` over the first `arguments[1]`
/// (selected), or at the start of the first line that begins with
/// `arguments[2]`; false if the text is not there.
const PLACE_CARET: &str = r#"
const [editor, select, lineStart] = [arguments[0], arguments[1], arguments[2]];
let start, end;
if (select) {
  start = editor.value.indexOf(select);
  end = start + select.length;
} else {
  start = editor.value.split('\n').findIndex(l => l.startsWith(lineStart));
  if (start >= 0) start = editor.value.split('\n').slice(0, start).join('\n').length + (start > 0 ? 1 : 0);
  end = start;
}
if (start < 0) return false;
editor.focus();
editor.setSelectionRange(start, end);
return document.activeElement === editor;
"#;

/// The editor's text, whether it is shown, and whether the block's
/// highlighted code is shown.
const EDITOR_STATE: &str = r#"
const [editor, code] = [arguments[0], arguments[1]];
return { text: editor.value, editor_shown: !editor.hidden, code_shown: !!code && !code.hidden };
"#;

/// One page's runner controls, as element ids.
struct Controls {
    run: String,
    edit: String,
    reset: String,
    stop: String,
    switches: String,
    editor: String,
    bar: Value,
    code: Value,
}

/// The runner checks' outcome: one entry per check, `(page, what, result)`.
pub type Outcomes = Vec<(String, String, Result<(), String>)>;

/// The runner checks, on a session whose book is served at `root`, with a
/// second server of the same book at `second_root`.
pub struct RunnerCheck<'run> {
    pub session: &'run Session,
    pub runner: &'run Runner,
    pub root: String,
    pub second_root: String,
    /// Saves a screenshot centred on a selector, under a name.
    pub screenshot: &'run dyn Fn(&str, &str) -> Result<(), String>,
    /// axe-core, to audit the page once runs have filled it.
    pub audit: Option<&'run mut Audit>,
    pub outcomes: Outcomes,
}

impl RunnerCheck<'_> {
    fn record(&mut self, page: &str, what: &str, result: Result<(), String>) {
        self.outcomes
            .push((page.to_string(), what.to_string(), result));
    }

    /// Opens the book through the link the runner printed, as a reader
    /// does.
    pub fn connect(&mut self) -> bool {
        let link = self.runner.link.clone();
        let connected = self.session.navigate(&link).and_then(|()| {
            self.session
                .wait_for(
                    "the page to take the runner from the link",
                    CONNECTED,
                    json!([]),
                    PAGE_LIMIT,
                )
                .and_then(|stored| {
                    if stored["token"] == json!(self.runner.token)
                        && stored["address"] == json!(self.runner.address)
                    {
                        Ok(())
                    } else {
                        Err(format!("the page stored {stored}"))
                    }
                })
        });
        let ok = connected.is_ok();
        self.record(
            "index.html",
            "the runner's link connects the book and leaves the address bar",
            connected,
        );
        ok
    }

    /// Loads `page` and finds the controls of `listing`.
    fn controls(&self, page: &str, listing: &str) -> Result<Controls, String> {
        self.session.navigate(&format!("{}{page}", self.root))?;
        let found = self.session.wait_for(
            &format!("the runner's controls of {listing}"),
            CONTROLS,
            json!([listing]),
            PAGE_LIMIT,
        )?;
        let id = |name: &str| {
            element_id(&found[name]).ok_or_else(|| format!("{listing} has no {name} control"))
        };
        Ok(Controls {
            run: id("run")?,
            edit: id("edit")?,
            reset: id("reset")?,
            stop: id("stop")?,
            switches: id("switches")?,
            editor: id("editor")?,
            bar: found["bar"].clone(),
            code: found["code"].clone(),
        })
    }

    /// Waits until the run in `controls` has an outcome; returns the state.
    fn wait_for_outcome(&self, controls: &Controls, limit: Duration) -> Result<Value, String> {
        let script = format!("const s = (() => {{ {RUN_STATE} }})(); return s.outcome ? s : null;");
        self.session
            .wait_for("the run's outcome", &script, json!([controls.bar]), limit)
            .map_err(|why| {
                let state = self
                    .session
                    .execute(RUN_STATE, json!([controls.bar]))
                    .unwrap_or_default();
                format!(
                    "{why}; the page says “{}”",
                    state["status"].as_str().unwrap_or("?")
                )
            })
    }

    /// Run, Edit, Reset and Stop of `listing` are buttons whose accessible
    /// names name the listing.
    fn check_names(&self, controls: &Controls, listing: &str) -> Result<(), String> {
        let mut problems = Vec::new();
        for (what, id) in [
            ("Run", &controls.run),
            ("Edit", &controls.edit),
            ("Reset", &controls.reset),
            ("Stop", &controls.stop),
        ] {
            let (role, name) = self.session.accessible_role_and_name(id)?;
            if role != "button" || !name.starts_with(what) || !name.contains(listing) {
                problems.push(format!("{what} is a “{role}” named “{name}”"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// Chapter 3 in `theme`: names, Run (deadlock), the cure, Reset.
    pub fn check_listing_3_1(&mut self, theme: &str) {
        let listing = "Listing 3-1";
        let controls = match self.controls(CHAPTER_3, listing) {
            Ok(controls) => controls,
            Err(why) => {
                self.record(
                    CHAPTER_3,
                    &format!("the runner's controls [{theme}]"),
                    Err(why),
                );
                return;
            }
        };
        let named = self.check_names(&controls, listing);
        self.record(
            CHAPTER_3,
            &format!("Run, Edit, Reset and Stop of {listing} are buttons named for it [{theme}]"),
            named,
        );
        let deadlock = self.run_unedited(&controls, theme);
        self.record(
            CHAPTER_3,
            &format!("Run (Tab, Enter) shows {listing}'s deadlock report [{theme}]"),
            deadlock,
        );
        let switched = self.run_together(&controls);
        self.record(
            CHAPTER_3,
            &format!(
                "Exercise 3.1 from the keyboard: Run with `-- --together` completes [{theme}]"
            ),
            switched,
        );
        let cured = self.run_cured(&controls, theme);
        self.record(
            CHAPTER_3,
            &format!("Edit, the cure typed in, Run: {listing} completes [{theme}]"),
            cured,
        );
        if let Some(audit) = self.audit.as_deref_mut() {
            let audited = audit.check_page(self.session, theme);
            self.record(
                CHAPTER_3,
                &format!(
                    "no serious or critical axe-core finding with a run's output, verdict and timeline [{theme}]"
                ),
                audited,
            );
        }
        let reset = self.reset(&controls);
        self.record(
            CHAPTER_3,
            &format!("Reset (Tab, Enter) brings back the book's code [{theme}]"),
            reset,
        );
    }

    fn run_unedited(&self, controls: &Controls, theme: &str) -> Result<(), String> {
        keyboard::reach(self.session, &controls.run, "Run")?;
        keyboard::press_enter(self.session)?;
        let live = format!(
            "const s = (() => {{ {RUN_STATE} }})(); return s.output.includes({}) ? s : null;",
            json!(DEADLOCK_REPORT)
        );
        self.session.wait_for(
            "the watchdog's report",
            &live,
            json!([controls.bar]),
            RUN_LIMIT,
        )?;
        (self.screenshot)(
            &format!("ch03-listing-3-1-deadlock-{theme}.png"),
            "#listing-3-1 .awd-output",
        )?;
        let state = self.wait_for_outcome(controls, RUN_LIMIT)?;
        expect_outcome(&state, "deadlock", "Deadlocked, as the chapter says.")
    }

    /// Exercise 3.1 as the chapter words it: the switch `--together`,
    /// chosen with the keyboard in "Run with", then Run; the switch is put
    /// back afterwards.
    fn run_together(&self, controls: &Controls) -> Result<(), String> {
        keyboard::reach(self.session, &controls.run, "Run")?;
        keyboard::tab_to(self.session, &controls.switches, "Run with")?;
        self.session.press_key(char::from(Key::Down))?;
        let chosen = self.session.execute(
            "return arguments[0].value;",
            json!([element_ref(&controls.switches)]),
        )?;
        if chosen != json!(TOGETHER) {
            return Err(format!("the arrow key chose {chosen}, not {TOGETHER}"));
        }
        keyboard::reach(self.session, &controls.run, "Run")?;
        keyboard::press_enter(self.session)?;
        let state = self.wait_for_outcome(controls, RUN_LIMIT);
        let put_back = keyboard::reach(self.session, &controls.switches, "Run with")
            .and_then(|()| self.session.press_key(char::from(Key::Up)));
        let state = state?;
        expect_outcome(
            &state,
            "ok",
            "Completed, but the chapter says it deadlocked.",
        )?;
        put_back
    }

    fn run_cured(&self, controls: &Controls, theme: &str) -> Result<(), String> {
        keyboard::reach(self.session, &controls.run, "Run")?;
        keyboard::tab_to(self.session, &controls.edit, "Edit")?;
        keyboard::press_enter(self.session)?;
        let editor = element_ref(&controls.editor);
        let placed = self
            .session
            .execute(PLACE_CARET, json!([editor, CURE.0, null]))?;
        if placed != json!(true) {
            return Err(format!("the editor has no `{}` to change", CURE.0));
        }
        let typed: Vec<char> = CURE.1.chars().collect();
        self.session.press_keys(&typed)?;
        let state = self
            .session
            .execute(EDITOR_STATE, json!([editor, controls.code]))?;
        let text = state["text"].as_str().unwrap_or_default();
        if text.matches(CURE.1).count() != 1 {
            return Err(format!("the typed change is not in the editor: {text}"));
        }
        // Tab leaves the editor for Run, the next control.
        keyboard::tab_to(self.session, &controls.run, "Run")?;
        keyboard::press_enter(self.session)?;
        let state = self.wait_for_outcome(controls, RUN_LIMIT)?;
        (self.screenshot)(
            &format!("ch03-listing-3-1-cured-{theme}.png"),
            "#listing-3-1 .awd-verdict",
        )?;
        expect_outcome(&state, "ok", "Completed: your change cured it.")
    }

    fn reset(&self, controls: &Controls) -> Result<(), String> {
        keyboard::reach(self.session, &controls.run, "Run")?;
        keyboard::tab_to(self.session, &controls.reset, "Reset")?;
        keyboard::press_enter(self.session)?;
        let state = self.session.execute(
            EDITOR_STATE,
            json!([element_ref(&controls.editor), controls.code]),
        )?;
        let text = state["text"].as_str().unwrap_or_default();
        if text.contains(CURE.1) || !text.contains(CURE.0) {
            return Err(format!("the editor still holds the edit: {text}"));
        }
        if state["editor_shown"] == json!(true) || state["code_shown"] != json!(true) {
            return Err(format!("the book's code is not shown again: {state}"));
        }
        Ok(())
    }

    /// Chapter 0: Listing 0-1, edited to sleep for ten minutes, runs until
    /// Stop, pressed from the keyboard, ends it.
    pub fn check_stop(&mut self) {
        let stopped = self.stop_a_hang();
        self.record(
            CHAPTER_0,
            "Stop (Tab, Enter) ends Listing 0-1 edited to hang",
            stopped,
        );
    }

    fn stop_a_hang(&self) -> Result<(), String> {
        let controls = self.controls(CHAPTER_0, "Listing 0-1")?;
        keyboard::reach(self.session, &controls.run, "Run")?;
        keyboard::tab_to(self.session, &controls.edit, "Edit")?;
        keyboard::press_enter(self.session)?;
        let editor = element_ref(&controls.editor);
        let placed = self
            .session
            .execute(PLACE_CARET, json!([editor, null, HANG.1]))?;
        if placed != json!(true) {
            return Err(format!("the editor has no line `{}`", HANG.1));
        }
        let mut typed: Vec<char> = HANG.0.chars().collect();
        typed.push(char::from(Key::Enter));
        self.session.press_keys(&typed)?;
        keyboard::tab_to(self.session, &controls.run, "Run")?;
        keyboard::press_enter(self.session)?;
        let running = format!(
            "const s = (() => {{ {RUN_STATE} }})(); return s.status.startsWith('Running') || s.outcome ? s : null;"
        );
        let state = self.session.wait_for(
            "the edited listing to run",
            &running,
            json!([controls.bar]),
            RUN_LIMIT,
        )?;
        if let Some(outcome) = state["outcome"].as_str() {
            return Err(format!(
                "the run ended by itself ({outcome}): {}",
                state["output"]
            ));
        }
        // Run is disabled while the run goes on; Stop comes after it.
        keyboard::tab_to(self.session, &controls.stop, "Stop")?;
        let pressed = Instant::now();
        keyboard::press_enter(self.session)?;
        // The page ends the run (the runner kills its process group) and
        // shows it: a "stopped" verdict, or its status, once Run is free.
        let ended = format!(
            "const s = (() => {{ {RUN_STATE} }})(); \
             return !s.stop_enabled && (s.outcome || /^(Finished: )?Stopped/.test(s.status)) ? s : null;"
        );
        let state =
            self.session
                .wait_for("the run to end", &ended, json!([controls.bar]), STOP_LIMIT)?;
        if let Some(outcome) = state["outcome"].as_str() {
            expect_outcome(&state, "stopped", "")
                .map_err(|why| format!("after Stop ({outcome}): {why}"))?;
        }
        let reset = self.reset_quietly(&controls);
        if pressed.elapsed() > STOP_LIMIT {
            return Err(format!("Stop took {:?}", pressed.elapsed()));
        }
        reset
    }

    fn reset_quietly(&self, controls: &Controls) -> Result<(), String> {
        self.session.click(&controls.reset)
    }

    /// The same page, served from a second origin and given the runner's
    /// link (address and secret): Run starts nothing, and the browser
    /// says the runner refused it.
    pub fn check_second_origin(&mut self) {
        let refused = self.try_from_second_origin();
        self.record(
            &format!("{CHAPTER_3} (second origin)"),
            "a page from another local origin, with the secret, cannot make the runner run",
            refused,
        );
    }

    fn try_from_second_origin(&self) -> Result<(), String> {
        let url = format!("{}{CHAPTER_3}{}", self.second_root, self.runner.fragment());
        self.session.navigate(&url)?;
        let _ = self.session.take_browser_log();
        let found = self.session.wait_for(
            "Run of Listing 3-1",
            CONTROLS,
            json!(["Listing 3-1"]),
            PAGE_LIMIT,
        )?;
        let run = element_id(&found["run"]).ok_or("no Run button")?;
        self.session.click(&run)?;
        let answered = format!(
            "const s = (() => {{ {RUN_STATE} }})(); \
             return s.status && !/^(Asking|Starting)/.test(s.status) && !s.stop_enabled ? s : null;"
        );
        let state = self.session.wait_for(
            "the page's answer",
            &answered,
            json!([found["bar"]]),
            PAGE_LIMIT,
        )?;
        // Give a run that had started time to show output.
        thread::sleep(Duration::from_secs(2));
        let state = self
            .session
            .execute(RUN_STATE, json!([found["bar"]]))
            .unwrap_or(state);
        if state["outcome"].is_string() || !state["output"].as_str().unwrap_or_default().is_empty()
        {
            return Err(format!("the runner ran it: {state}"));
        }
        // The runner answered, and refused: the browser blocked the answer
        // for want of the runner's consent to this origin (a runner that is
        // down would show as a refused connection instead).
        let log = self.session.take_browser_log()?;
        let refused = log.iter().any(|entry| {
            entry.message.contains(&self.runner.address) && entry.message.contains("CORS policy")
        });
        if !refused {
            let said: Vec<&str> = log.iter().map(|entry| entry.message.as_str()).collect();
            return Err(format!(
                "the browser logged no request to the runner refused by CORS policy (the page says “{}”; the log: {})",
                state["status"].as_str().unwrap_or("?"),
                said.join(" | ")
            ));
        }
        Ok(())
    }
}

/// The runner's address and secret in the link it prints
/// (`…#awd-runner=<address>/<secret>`).
fn address_and_token(link: &str) -> Option<(String, String)> {
    let (_, rest) = link.split_once("#awd-runner=")?;
    let (address, token) = rest.split_once('/')?;
    (!address.is_empty() && !token.is_empty() && !token.contains('/'))
        .then(|| (address.to_string(), token.to_string()))
}

/// `Ok` if the run ended with `outcome` and, unless empty, `verdict`.
fn expect_outcome(state: &Value, outcome: &str, verdict: &str) -> Result<(), String> {
    let got = state["outcome"].as_str().unwrap_or("none");
    let said = state["verdict"].as_str().unwrap_or_default();
    if got != outcome || (!verdict.is_empty() && said != verdict) {
        let output = state["output"].as_str().unwrap_or_default();
        let tail: Vec<&str> = output.lines().rev().take(4).collect();
        return Err(format!(
            "the run ended “{got}” (“{said}”), not “{outcome}”; its last lines: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn the_link_gives_the_address_and_the_secret() {
        let _limit = TestLimit::seconds(5);
        assert_eq!(
            address_and_token("http://127.0.0.1:4000/#awd-runner=127.0.0.1:3001/0f9a"),
            Some(("127.0.0.1:3001".to_string(), "0f9a".to_string()))
        );
        assert_eq!(address_and_token("http://127.0.0.1:4000/"), None);
        assert_eq!(address_and_token("x#awd-runner=127.0.0.1:3001/"), None);
        assert_eq!(address_and_token("x#awd-runner=127.0.0.1:3001/a/b"), None);
    }

    #[test]
    fn an_outcome_is_judged_by_its_kind_and_its_verdict() {
        let _limit = TestLimit::seconds(5);
        let state = json!({ "outcome": "ok", "verdict": "Completed: your change cured it.",
            "output": "a\nb\nreceived Ok(Reading)" });
        assert_eq!(
            expect_outcome(&state, "ok", "Completed: your change cured it."),
            Ok(())
        );
        assert_eq!(expect_outcome(&state, "ok", ""), Ok(()));
        assert_eq!(
            expect_outcome(&state, "deadlock", "Deadlocked, as the chapter says."),
            Err(
                "the run ended “ok” (“Completed: your change cured it.”), not “deadlock”; \
                 its last lines: a | b | received Ok(Reading)"
                    .to_string()
            )
        );
    }
}
