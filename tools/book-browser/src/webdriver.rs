//! A minimal W3C WebDriver client for ChromeDriver, and the guard that owns
//! the ChromeDriver process. Only what the book's checks use is here: a
//! session, navigation, scripts, clicks, keys, screenshots, the browser log
//! and ChromeDriver's pass-through to the DevTools protocol.
//!
//! Every command is bounded twice: by its own limit and by the run's overall
//! deadline, so no check can hang. Cleanup is bounded too, and runs from
//! `Drop`: the session is deleted (which closes Chromium), then ChromeDriver
//! is asked to shut down, and the guard waits for every process it started
//! to be gone; whatever is still running after that is ended by process id.
//! Chromium's processes are recognised by the run's scratch directory in
//! their command line (its profile, and its crash database, which the
//! guard moves there through `XDG_CONFIG_HOME`), or as ChromeDriver's
//! descendants.

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http;

/// The longest any one WebDriver command may take (a page load included).
const COMMAND_LIMIT: Duration = Duration::from_secs(45);

/// How long ChromeDriver gets to start listening.
const STARTUP_LIMIT: Duration = Duration::from_secs(20);

/// How long each cleanup step may take.
const CLEANUP_LIMIT: Duration = Duration::from_secs(5);

/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A running ChromeDriver, ended (with the browsers it started) on drop.
pub struct ChromeDriver {
    child: Child,
    address: SocketAddr,
    /// The run's scratch directory: every browser process names it.
    scratch: String,
}

impl ChromeDriver {
    /// Starts `binary` on a free port of 127.0.0.1, with its log and the
    /// browser's configuration in `scratch`, and waits until it reports
    /// itself ready.
    pub fn start(binary: &Path, scratch: &Path, deadline: Instant) -> Result<ChromeDriver, String> {
        let log = scratch.join("chromedriver.log");
        let mut last_error = String::new();
        // A free port can be taken between finding it and ChromeDriver
        // binding it: try a few.
        for _attempt in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|listener| listener.local_addr())
                .map_err(|e| format!("find a free port: {e}"))?
                .port();
            let output =
                File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
            let errors = output.try_clone().map_err(|e| e.to_string())?;
            let child = Command::new(binary)
                .arg(format!("--port={port}"))
                .env("XDG_CONFIG_HOME", scratch.join("config"))
                .stdin(Stdio::null())
                .stdout(output)
                .stderr(errors)
                .spawn()
                .map_err(|e| format!("start {}: {e}", binary.display()))?;
            let mut driver = ChromeDriver {
                child,
                address: SocketAddr::from(([127, 0, 0, 1], port)),
                scratch: scratch.display().to_string(),
            };
            match driver.wait_until_ready(deadline) {
                Ok(()) => return Ok(driver),
                Err(e) => last_error = e,
            }
            // Dropping `driver` ends the process before the next attempt.
        }
        let output = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = output.lines().rev().take(5).collect();
        Err(format!(
            "{last_error}; its last output: {}",
            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
        ))
    }

    /// Polls `GET /status` until ChromeDriver says it is ready.
    fn wait_until_ready(&mut self, deadline: Instant) -> Result<(), String> {
        let give_up_at = deadline.min(Instant::now() + STARTUP_LIMIT);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("chromedriver exited at start ({status})"));
            }
            let ready = http::request(self.address, "GET", "/status", None, Duration::from_secs(2))
                .ok()
                .and_then(|response| serde_json::from_slice::<Value>(&response.body).ok())
                .is_some_and(|status| status["value"]["ready"] == json!(true));
            if ready {
                return Ok(());
            }
            if Instant::now() >= give_up_at {
                return Err(format!(
                    "chromedriver was not ready within {STARTUP_LIMIT:?}"
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The processes this guard is responsible for, besides ChromeDriver.
    fn browser_processes(&self) -> BTreeSet<u32> {
        let mut found: BTreeSet<u32> = descendants_of(self.child.id()).into_iter().collect();
        found.extend(processes_naming(&self.scratch));
        found.remove(&std::process::id());
        found
    }

    /// Asks ChromeDriver to quit, waits a bounded time for it and for every
    /// browser process, and ends by process id whatever is left. Returns
    /// what had to be forced, if anything, for the report.
    fn shut_down(&mut self) -> Option<String> {
        let mut browser = self.browser_processes();
        let mut forced = Vec::new();
        if let Ok(None) = self.child.try_wait() {
            let _ = http::request(self.address, "GET", "/shutdown", None, CLEANUP_LIMIT);
            if !wait_for_exit(&mut self.child, CLEANUP_LIMIT) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                forced.push("chromedriver".to_string());
            }
        }
        browser.extend(self.browser_processes());
        let alive = |pids: &BTreeSet<u32>| -> Vec<u32> {
            pids.iter()
                .copied()
                .filter(|pid| is_running(*pid))
                .collect()
        };
        // Chromium takes a moment to close after ChromeDriver has gone.
        let give_up_at = Instant::now() + CLEANUP_LIMIT;
        while !alive(&browser).is_empty() && Instant::now() < give_up_at {
            thread::sleep(Duration::from_millis(50));
        }
        let left = alive(&browser);
        if !left.is_empty() {
            signal(&left, "TERM");
            let give_up_at = Instant::now() + Duration::from_secs(2);
            while !alive(&browser).is_empty() && Instant::now() < give_up_at {
                thread::sleep(Duration::from_millis(50));
            }
            signal(&alive(&browser), "KILL");
            forced.push(format!("{} browser processes", left.len()));
        }
        (!forced.is_empty()).then(|| forced.join(" and "))
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        if let Some(forced) = self.shut_down() {
            eprintln!("book-browser: had to end {forced} by force");
        }
    }
}

/// Waits up to `limit` for `child` to exit; true if it did.
fn wait_for_exit(child: &mut Child, limit: Duration) -> bool {
    let give_up_at = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => return true,
            Ok(None) if Instant::now() >= give_up_at => return false,
            Ok(None) => thread::sleep(Duration::from_millis(25)),
        }
    }
}

/// Every live process below `pid` in the process tree, found through
/// `/proc` (an empty list where there is no `/proc`).
fn descendants_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            Some((pid, parent_from_stat(&stat)?))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(child, _)| *child),
        );
        i += 1;
    }
    found.remove(0);
    found
}

/// True while process `pid` exists and has not yet exited (a zombie,
/// waiting for its parent to collect it, counts as gone).
fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = &stat[stat.rfind(')')? + 1..];
            after_name
                .split_whitespace()
                .next()
                .map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// Every live process whose command line contains `marker`.
fn processes_naming(marker: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
            let command_line = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            String::from_utf8_lossy(&command_line)
                .contains(marker)
                .then_some(pid)
        })
        .collect()
}

/// The parent id in a `/proc/<pid>/stat` line (`pid (name) state ppid …`;
/// the name may itself contain spaces and parentheses).
fn parent_from_stat(stat: &str) -> Option<u32> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Sends `signal` to the processes `pids` (with the shell's `kill`, since the
/// standard library only signals its own children).
fn signal(pids: &[u32], signal: &str) {
    if pids.is_empty() {
        return;
    }
    let list: Vec<String> = pids.iter().map(u32::to_string).collect();
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -{signal} {} 2>/dev/null", list.join(" ")))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The element id in a value WebDriver returned for an element, if it is one.
pub fn element_id(value: &Value) -> Option<String> {
    value[ELEMENT_KEY].as_str().map(str::to_string)
}

/// An entry of the browser's console log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// `SEVERE`, `WARNING`, `INFO` or `DEBUG`.
    pub level: String,
    /// Where it came from: `console-api`, `javascript`, `network`, …
    pub source: String,
    /// The message as Chromium words it.
    pub message: String,
}

/// A WebDriver session with one Chromium; deleted on drop.
pub struct Session {
    driver: SocketAddr,
    id: String,
    deadline: Instant,
    ended: bool,
}

impl Session {
    /// Opens a session on `driver` with `capabilities` (the `alwaysMatch`
    /// object); every command must finish before `deadline`.
    pub fn open(
        driver: &ChromeDriver,
        capabilities: Value,
        deadline: Instant,
    ) -> Result<Session, String> {
        let mut session = Session {
            driver: driver.address,
            id: String::new(),
            deadline,
            ended: true,
        };
        let created = session.command(
            "POST",
            "/session",
            Some(json!({ "capabilities": { "alwaysMatch": capabilities } })),
        )?;
        session.id = created["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session id in {created}"))?
            .to_string();
        session.ended = false;
        Ok(session)
    }

    /// Time left before the overall deadline.
    pub fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Sends one command (`path` is below `/session/{id}` unless it starts
    /// with `/session` itself) and returns its `value`.
    pub fn command(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let limit = COMMAND_LIMIT.min(self.time_left());
        if limit.is_zero() {
            return Err("the run's overall time limit has passed".to_string());
        }
        self.command_within(method, path, body, limit)
    }

    fn command_within(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        limit: Duration,
    ) -> Result<Value, String> {
        let full_path = if path.starts_with("/session") {
            path.to_string()
        } else {
            format!("/session/{}{path}", self.id)
        };
        // POST always carries a JSON object, even an empty one.
        let body = match (method, body) {
            (_, Some(body)) => Some(body.to_string()),
            ("POST", None) => Some("{}".to_string()),
            _ => None,
        };
        let response = http::request(
            self.driver,
            method,
            &full_path,
            body.as_deref().map(str::as_bytes),
            limit,
        )?;
        let answer: Value = serde_json::from_slice(&response.body).map_err(|e| {
            format!(
                "{method} {path}: status {}, not JSON ({e}): {}",
                response.status,
                String::from_utf8_lossy(&response.body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            )
        })?;
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if response.status != 200 {
            let error = value["error"].as_str().unwrap_or("error");
            let message = value["message"].as_str().unwrap_or_default();
            let first_line = message.lines().next().unwrap_or_default();
            return Err(format!("{method} {path}: {error}: {first_line}"));
        }
        Ok(value)
    }

    /// Loads `url` and waits for its `load` event (the session's page-load
    /// timeout bounds the wait).
    pub fn navigate(&self, url: &str) -> Result<(), String> {
        self.command("POST", "/url", Some(json!({ "url": url })))
            .map(drop)
    }

    /// Runs `script` (a function body: `arguments` holds `args`, `return`
    /// gives the result) in the page.
    pub fn execute(&self, script: &str, args: Value) -> Result<Value, String> {
        self.command(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Polls `script` every 50 ms until it returns something other than
    /// `null`/`false`, for at most `limit`; returns that value.
    pub fn wait_for(
        &self,
        what: &str,
        script: &str,
        args: Value,
        limit: Duration,
    ) -> Result<Value, String> {
        let give_up_at = Instant::now() + limit.min(self.time_left());
        loop {
            let value = self.execute(script, args.clone())?;
            if !matches!(value, Value::Null | Value::Bool(false)) {
                return Ok(value);
            }
            if Instant::now() >= give_up_at {
                return Err(format!("{what}: not within {limit:?}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a DevTools protocol command through ChromeDriver.
    pub fn devtools(&self, command: &str, params: Value) -> Result<Value, String> {
        self.command(
            "POST",
            "/goog/cdp/execute",
            Some(json!({ "cmd": command, "params": params })),
        )
    }

    /// Takes (and so empties) the browser console log gathered so far.
    pub fn take_browser_log(&self) -> Result<Vec<LogEntry>, String> {
        let entries = self.command("POST", "/se/log", Some(json!({ "type": "browser" })))?;
        Ok(entries
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|entry| LogEntry {
                        level: entry["level"].as_str().unwrap_or_default().to_string(),
                        source: entry["source"].as_str().unwrap_or_default().to_string(),
                        message: entry["message"].as_str().unwrap_or_default().to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The first element matching the CSS `selector`.
    pub fn find(&self, selector: &str) -> Result<String, String> {
        let value = self.command(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": selector })),
        )?;
        element_id(&value).ok_or_else(|| format!("no element id for {selector}"))
    }

    /// Clicks `element` as a user would (it must be visible and on top).
    pub fn click(&self, element: &str) -> Result<(), String> {
        self.command("POST", &format!("/element/{element}/click"), None)
            .map(drop)
    }

    /// Types `text` into `element` with real key events.
    pub fn type_into(&self, element: &str, text: &str) -> Result<(), String> {
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )
        .map(drop)
    }

    /// Presses and releases `key` on whatever has the focus.
    pub fn press_key(&self, key: &str) -> Result<(), String> {
        self.command(
            "POST",
            "/actions",
            Some(json!({ "actions": [{
                "type": "key",
                "id": "keyboard",
                "actions": [{ "type": "keyDown", "value": key }, { "type": "keyUp", "value": key }]
            }] })),
        )?;
        self.command("DELETE", "/actions", None).map(drop)
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Result<Vec<u8>, String> {
        let encoded = self.command("GET", "/screenshot", None)?;
        crate::png::decode_base64(encoded.as_str().unwrap_or_default())
    }

    /// Deletes the session, which closes the browser; bounded, never fails.
    pub fn end(&mut self) {
        if !self.ended {
            self.ended = true;
            let _ = self.command_within("DELETE", "", None, CLEANUP_LIMIT);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    #[test]
    fn the_parent_is_read_past_a_name_with_spaces_and_parentheses() {
        let _limit = TestLimit::seconds(5);
        assert_eq!(
            parent_from_stat("1234 (chrome (x) y) S 77 1234 1234 0"),
            Some(77)
        );
        assert_eq!(parent_from_stat("garbage"), None);
    }

    #[test]
    fn this_process_is_a_descendant_of_its_parent() {
        let _limit = TestLimit::seconds(5);
        if !Path::new("/proc/self/stat").exists() {
            return;
        }
        let parent = std::os::unix::process::parent_id();
        assert!(descendants_of(parent).contains(&std::process::id()));
    }
}
