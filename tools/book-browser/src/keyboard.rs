//! Moving through a page from the keyboard, as a reader without a mouse
//! does: Tab from one control to the next, Enter to press one. A control is
//! "reached" when, starting from what comes just before it in the page's
//! keyboard order, one or a few Tab presses give it the focus.

use fantoccini::key::Key;
use serde_json::json;

use crate::browser::{element_ref, Session};

/// The most Tab presses a control may be away from its neighbour.
const MAX_TABS: usize = 6;

/// Focuses the element that comes just before `arguments[0]` in the
/// keyboard's order (what a reader tabbing through the page was on) and
/// names it, or says why it cannot (`{refused}`).
const FOCUS_BEFORE: &str = r#"
const target = arguments[0];
const describe = e => e.tagName.toLowerCase() + (e.className ? '.' + e.className.split(' ')[0] : '')
  + (e.getAttribute('aria-label') ? ` "${e.getAttribute('aria-label')}"` : '');
const reachable = Array.from(document.querySelectorAll(
    'a[href], button, input, select, textarea, [tabindex]'))
  .filter(e => !e.disabled && e.tabIndex >= 0 && e.getClientRects().length > 0
    && getComputedStyle(e).visibility !== 'hidden'
    && !e.closest('[hidden], [aria-hidden="true"], [inert]'));
const i = reachable.indexOf(target);
if (i < 0) return { refused: describe(target) + ' is not in the keyboard order' };
if (i === 0) return { refused: 'nothing comes before ' + describe(target) };
const before = reachable[i - 1];
before.focus();
return document.activeElement === before ? describe(before)
  : { refused: describe(before) + ', just before it, does not take the focus' };
"#;

/// What has the focus: `{is_target, what}` for target `arguments[0]`.
const FOCUSED: &str = r#"
const active = document.activeElement;
return { is_target: active === arguments[0],
  what: active ? active.tagName.toLowerCase() + (active.className ? '.' + active.className.split(' ')[0] : '')
    + (active.getAttribute('aria-label') ? ` "${active.getAttribute('aria-label')}"` : '') : 'nothing' };
"#;

/// Presses Tab until `target` has the focus, at most [`MAX_TABS`] times.
pub fn tab_to(session: &Session, target: &str, name: &str) -> Result<(), String> {
    let element = element_ref(target);
    let mut last = String::new();
    for _ in 0..MAX_TABS {
        session.press_key(char::from(Key::Tab))?;
        let focused = session.execute(FOCUSED, json!([element]))?;
        if focused["is_target"] == json!(true) {
            return Ok(());
        }
        last = focused["what"].as_str().unwrap_or("?").to_string();
    }
    Err(format!(
        "{name} did not get the focus within {MAX_TABS} Tab presses (the focus was on {last})"
    ))
}

/// Gives `target` the focus from the keyboard: from what precedes it in
/// the page's keyboard order, Tab (see [`tab_to`]).
pub fn reach(session: &Session, target: &str, name: &str) -> Result<(), String> {
    let before = session.execute(FOCUS_BEFORE, json!([element_ref(target)]))?;
    if let Some(why) = before["refused"].as_str() {
        return Err(format!("{name} cannot be reached: {why}"));
    }
    tab_to(session, target, name)
}

/// Presses Enter on what has the focus.
pub fn press_enter(session: &Session) -> Result<(), String> {
    session.press_key(char::from(Key::Enter))
}
