//! One Chromium session, driven through ChromeDriver with `fantoccini`, with
//! the calls the checks make: navigation, scripts, clicks, keys,
//! screenshots, the browser log and ChromeDriver's pass-through to the
//! DevTools protocol (the last two are ChromeDriver's own commands, which
//! `fantoccini` sends as custom commands).
//!
//! The checks are a sequence of steps, so the session is used from plain
//! code: each call runs one `fantoccini` future to completion on the run's
//! Tokio runtime. Every call is bounded twice, by its own limit and by the
//! run's overall deadline, so no check can hang.

use std::thread;
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::{Element, ElementRef};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tokio::runtime::Handle;

use crate::driver::ChromeDriver;

/// The longest any one WebDriver command may take (a page load included).
const COMMAND_LIMIT: Duration = Duration::from_secs(45);

/// How long closing the session may take.
const CLOSE_LIMIT: Duration = Duration::from_secs(10);

/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// The element id in a value a script returned, if it is an element.
pub fn element_id(value: &Value) -> Option<String> {
    value[ELEMENT_KEY].as_str().map(str::to_string)
}

/// A WebDriver element reference for element `id`, as a script argument.
pub fn element_ref(id: &str) -> Value {
    json!({ ELEMENT_KEY: id })
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

/// Commands `fantoccini` has no method for, below `/session/{id}`: a `POST`
/// with a JSON body, or a `GET` without one.
#[derive(Debug)]
struct SessionCommand {
    path: String,
    body: Option<Value>,
}

impl WebDriverCompatibleCommand for SessionCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        match &self.body {
            Some(body) => (http::Method::POST, Some(body.to_string())),
            None => (http::Method::GET, None),
        }
    }
}

/// A WebDriver session with one Chromium; closed on drop.
pub struct Session {
    runtime: Handle,
    client: Option<Client>,
    deadline: Instant,
}

impl Session {
    /// Opens a session on `driver` with `capabilities` (an object); every
    /// command must finish before `deadline`.
    pub fn open(
        runtime: Handle,
        driver: &ChromeDriver,
        capabilities: Value,
        deadline: Instant,
    ) -> Result<Session, String> {
        let Value::Object(capabilities) = capabilities else {
            return Err("the capabilities are not an object".to_string());
        };
        let url = driver.url();
        let connecting = async move {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&url)
                .await
        };
        let limit = COMMAND_LIMIT.min(deadline.saturating_duration_since(Instant::now()));
        let client = runtime
            .block_on(async { tokio::time::timeout(limit, connecting).await })
            .map_err(|_| format!("no session within {limit:?}"))?
            .map_err(|e| e.to_string())?;
        Ok(Session {
            runtime,
            client: Some(client),
            deadline,
        })
    }

    /// Time left before the overall deadline.
    pub fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Runs the command `make` builds on the session's client, within the
    /// command limit and the overall deadline.
    fn run<T, F>(&self, what: &str, make: impl FnOnce(Client) -> F) -> Result<T, String>
    where
        F: std::future::Future<Output = Result<T, fantoccini::error::CmdError>>,
    {
        let limit = COMMAND_LIMIT.min(self.time_left());
        if limit.is_zero() {
            return Err("the run's overall time limit has passed".to_string());
        }
        let client = self
            .client
            .clone()
            .ok_or_else(|| "the session has ended".to_string())?;
        self.runtime
            .block_on(async { tokio::time::timeout(limit, make(client)).await })
            .map_err(|_| format!("{what}: no answer within {limit:?}"))?
            .map_err(|e| format!("{what}: {}", first_line(&e.to_string())))
    }

    /// Loads `url` and waits for its `load` event (the session's page-load
    /// timeout bounds the wait).
    pub fn navigate(&self, url: &str) -> Result<(), String> {
        let url = url.to_string();
        self.run("navigate", |client| async move { client.goto(&url).await })
    }

    /// Runs `script` (a function body: `arguments` holds `args`, `return`
    /// gives the result) in the page.
    pub fn execute(&self, script: &str, args: Value) -> Result<Value, String> {
        let args = arguments(args);
        self.run("execute a script", |client| async move {
            client.execute(script, args).await
        })
    }

    /// Runs `script`, whose last argument is a callback it must call with
    /// its result (the session's script timeout bounds the wait).
    pub fn execute_async(&self, script: &str, args: Value) -> Result<Value, String> {
        let args = arguments(args);
        self.run("execute an asynchronous script", |client| async move {
            client.execute_async(script, args).await
        })
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
        let command = SessionCommand {
            path: "goog/cdp/execute".to_string(),
            body: Some(json!({ "cmd": command, "params": params })),
        };
        self.run("DevTools command", |client| async move {
            client.issue_cmd(command).await
        })
    }

    /// Takes (and so empties) the browser console log gathered so far.
    pub fn take_browser_log(&self) -> Result<Vec<LogEntry>, String> {
        let command = SessionCommand {
            path: "se/log".to_string(),
            body: Some(json!({ "type": "browser" })),
        };
        let entries = self.run("read the browser log", |client| async move {
            client.issue_cmd(command).await
        })?;
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

    /// The id of the first element matching the CSS `selector`.
    pub fn find(&self, selector: &str) -> Result<String, String> {
        self.run(&format!("find {selector}"), |client| async move {
            client.find(Locator::Css(selector)).await
        })
        .map(|element| element.element_id().to_string())
    }

    fn element(client: Client, id: &str) -> Element {
        Element::from_element_id(client, ElementRef::from(id.to_string()))
    }

    /// Clicks element `id` as a user would (it must be visible and on top).
    pub fn click(&self, id: &str) -> Result<(), String> {
        self.run("click", |client| async move {
            Session::element(client, id).click().await
        })
    }

    /// The role and the name element `id` has in the browser's
    /// accessibility tree (WebDriver's "computed role" and "computed
    /// label").
    pub fn accessible_role_and_name(&self, id: &str) -> Result<(String, String), String> {
        let ask = |what: &'static str| {
            let command = SessionCommand {
                path: format!("element/{id}/{what}"),
                body: None,
            };
            self.run(
                what,
                |client| async move { client.issue_cmd(command).await },
            )
            .map(|value| value.as_str().unwrap_or_default().to_string())
        };
        Ok((ask("computedrole")?, ask("computedlabel")?))
    }

    /// Types `text` into element `id` with real key events.
    pub fn type_into(&self, id: &str, text: &str) -> Result<(), String> {
        self.run("type", |client| async move {
            Session::element(client, id).send_keys(text).await
        })
    }

    /// Presses and releases each of `keys` in turn on whatever has the
    /// focus (a key is a character, or one of [`fantoccini::key::Key`]'s).
    pub fn press_keys(&self, keys: &[char]) -> Result<(), String> {
        let mut actions = KeyActions::new("keyboard".to_string());
        for &key in keys {
            actions = actions
                .then(KeyAction::Down { value: key })
                .then(KeyAction::Up { value: key });
        }
        self.run("press keys", |client| async move {
            client.perform_actions(actions).await?;
            client.release_actions().await
        })
    }

    /// Presses and releases `key` on whatever has the focus.
    pub fn press_key(&self, key: char) -> Result<(), String> {
        self.press_keys(&[key])
    }

    /// A PNG of the viewport.
    pub fn screenshot(&self) -> Result<Vec<u8>, String> {
        self.run(
            "screenshot",
            |client| async move { client.screenshot().await },
        )
    }

    /// Closes the session, which closes the browser; bounded, never fails.
    pub fn end(&mut self) {
        if let Some(client) = self.client.take() {
            let _ = self
                .runtime
                .block_on(async { tokio::time::timeout(CLOSE_LIMIT, client.close()).await });
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.end();
    }
}

/// A script's arguments as `fantoccini` takes them: `args` if it is an
/// array, else `args` alone.
fn arguments(args: Value) -> Vec<Value> {
    match args {
        Value::Array(list) => list,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// The first line of an error message (ChromeDriver adds a stack trace).
fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default()
}
