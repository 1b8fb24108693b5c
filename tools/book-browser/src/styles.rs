//! What "styled" means for the book's listing captions and admonitions, and
//! the judging of what [`crate::scripts::PROBE_STYLES`] measured: each part
//! must look different from a plain element of the same tag (a frame, that is
//! a border or a background, where the design has one), and every text in it
//! must contrast with what lies beneath by at least the WCAG AA ratio.

use serde_json::{json, Value};

use crate::colour::{backdrop, contrast_ratio, Rgba, MIN_TEXT_CONTRAST};

/// What a part must show to count as styled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// A border or a background that a plain element of its tag lacks.
    Frame,
    /// Any of the probed properties differs from a plain element's.
    AnyStyle,
}

/// A kind of styled block: where to find it, its parts and its texts.
pub struct Kind {
    /// The name in reports and in the probe's answer.
    pub name: &'static str,
    /// A one-word name, for screenshot files.
    pub short_name: &'static str,
    /// The selector of each block.
    pub root: &'static str,
    /// The parts inside a block (`:scope` is the block itself) and what
    /// each must show; all must exist.
    pub parts: &'static [(&'static str, Need)],
    /// The texts inside a block whose contrast is checked, where present.
    pub texts: &'static [&'static str],
}

/// Listing captions, as `tools/book-tools` renders them.
pub const CAPTIONS: Kind = Kind {
    name: "listing caption",
    short_name: "caption",
    root: "figure.listing",
    parts: &[
        (":scope", Need::AnyStyle),
        (".listing-head", Need::Frame),
        ("figcaption", Need::AnyStyle),
    ],
    texts: &[
        ".listing-file",
        ".listing-run code",
        ".listing-run::before",
        "figcaption",
        "figcaption a.listing-number",
        "figcaption code",
        ".listing-not-run",
    ],
};

/// Admonitions, as mdbook-admonish renders them.
pub const ADMONITIONS: Kind = Kind {
    name: "admonition",
    short_name: "admonition",
    root: ".admonition",
    parts: &[
        (":scope", Need::Frame),
        (".admonition-title", Need::AnyStyle),
    ],
    texts: &[
        ".admonition-title",
        ":scope > div:not(.admonition-title)",
        ":scope > div:not(.admonition-title) a",
        ":scope > div:not(.admonition-title) code",
    ],
};

/// The argument [`crate::scripts::PROBE_STYLES`] takes for `kinds`.
pub fn probe_argument(kinds: &[&Kind]) -> Value {
    Value::Array(
        kinds
            .iter()
            .map(|kind| {
                json!({
                    "kind": kind.name,
                    "root": kind.root,
                    "parts": kind.parts.iter().map(|(selector, _)| *selector).collect::<Vec<_>>(),
                    "texts": kind.texts,
                })
            })
            .collect(),
    )
}

/// The properties that make a frame.
const FRAME_PROPERTIES: [&str; 7] = [
    "border-top-style",
    "border-top-width",
    "border-left-style",
    "border-left-width",
    "background-color",
    "background-image",
    "box-shadow",
];

/// What is wrong with one probed block of `kind` (empty when nothing is).
pub fn problems(kind: &Kind, block: &Value) -> Vec<String> {
    let mut found = Vec::new();
    let parts = block["parts"].as_array().cloned().unwrap_or_default();
    for (selector, need) in kind.parts {
        let Some(part) = parts.iter().find(|p| p["selector"] == *selector) else {
            found.push(format!("{selector} was not probed"));
            continue;
        };
        let shown = if *selector == ":scope" {
            kind.root
        } else {
            selector
        };
        if part["missing"] == json!(true) {
            found.push(format!("has no {shown}"));
            continue;
        }
        let differs = |property: &str| part["style"][property] != part["unstyled"][property];
        let styled = match need {
            Need::Frame => {
                let visible_border = ["top", "left"].iter().any(|side| {
                    part["style"][format!("border-{side}-style")] != "none"
                        && part["style"][format!("border-{side}-width")] != "0px"
                });
                let painted = Rgba::parse(
                    part["style"]["background-color"]
                        .as_str()
                        .unwrap_or_default(),
                )
                .is_ok_and(|colour| !colour.is_transparent())
                    || part["style"]["background-image"] != "none";
                FRAME_PROPERTIES.iter().any(|p| differs(p)) && (visible_border || painted)
            }
            Need::AnyStyle => part["style"]
                .as_object()
                .is_some_and(|style| style.keys().any(|p| differs(p))),
        };
        if !styled {
            let tag = part["tag"].as_str().unwrap_or("element");
            found.push(match need {
                Need::Frame => {
                    format!("{shown} has no border or background: it looks like a plain <{tag}>")
                }
                Need::AnyStyle => {
                    format!("{shown} looks like a plain <{tag}>: no style of its own")
                }
            });
        }
    }
    for text in block["texts"].as_array().cloned().unwrap_or_default() {
        let selector = text["selector"].as_str().unwrap_or("text");
        let shown = selector.trim_start_matches(":scope > ");
        if text["displayed"] != json!(true) {
            found.push(format!("{shown} is not displayed"));
            continue;
        }
        match text_contrast(&text) {
            Ok((ratio, _, _)) if ratio >= MIN_TEXT_CONTRAST => {}
            Ok((ratio, colour, background)) => found.push(format!(
                "{shown}: text contrast {ratio:.2} < {MIN_TEXT_CONTRAST} ({} on {})",
                colour.css(),
                background.css()
            )),
            Err(e) => found.push(format!("{shown}: {e}")),
        }
    }
    found
}

/// The contrast ratio of a probed text, its colour and its backdrop.
fn text_contrast(text: &Value) -> Result<(f64, Rgba, Rgba), String> {
    let colour = Rgba::parse(text["color"].as_str().unwrap_or_default())?;
    let layers = text["backgrounds"]
        .as_array()
        .map(|layers| {
            layers
                .iter()
                .map(|layer| Rgba::parse(layer.as_str().unwrap_or_default()))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap_or_else(|| Ok(Vec::new()))?;
    let background = backdrop(&layers);
    Ok((contrast_ratio(colour, background), colour, background))
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    fn style(border: &str, background: &str, margin: &str) -> Value {
        json!({
            "border-top-style": border, "border-top-width": if border == "none" { "0px" } else { "1px" },
            "border-left-style": "none", "border-left-width": "0px",
            "background-color": background, "background-image": "none", "box-shadow": "none",
            "margin-left": margin,
        })
    }

    fn caption(
        head_border: &str,
        head_background: &str,
        figure_margin: &str,
        text: &str,
        page: &str,
    ) -> Value {
        let plain = style("none", "rgba(0, 0, 0, 0)", "40px");
        json!({
            "name": "#listing-0-1",
            "parts": [
                { "selector": ":scope", "tag": "figure", "style": style("none", "rgba(0, 0, 0, 0)", figure_margin), "unstyled": plain },
                { "selector": ".listing-head", "tag": "div", "style": style(head_border, head_background, "0px"), "unstyled": style("none", "rgba(0, 0, 0, 0)", "0px") },
                { "selector": "figcaption", "tag": "figcaption", "style": style("none", "rgba(0, 0, 0, 0)", "0px"), "unstyled": style("none", "rgba(0, 0, 0, 0)", "40px") },
            ],
            "texts": [{ "selector": "figcaption", "color": text, "displayed": true,
                        "backgrounds": ["rgba(0, 0, 0, 0)", "rgba(0, 0, 0, 0)", page] }],
        })
    }

    #[test]
    fn a_styled_readable_caption_passes() {
        let _limit = TestLimit::seconds(5);
        let good = caption(
            "solid",
            "rgb(241, 241, 241)",
            "0px",
            "rgb(0, 0, 0)",
            "rgb(255, 255, 255)",
        );
        assert_eq!(problems(&CAPTIONS, &good), Vec::<String>::new());
    }

    #[test]
    fn plain_parts_and_faint_text_are_reported() {
        let _limit = TestLimit::seconds(5);
        // The caption stylesheet did not load: everything as a browser's default.
        let plain = caption(
            "none",
            "rgba(0, 0, 0, 0)",
            "40px",
            "rgb(0, 0, 0)",
            "rgb(255, 255, 255)",
        );
        let found = problems(&CAPTIONS, &plain);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found[0].starts_with("figure.listing looks like a plain <figure>"),
            "{found:?}"
        );
        assert!(
            found[1].starts_with(".listing-head has no border or background"),
            "{found:?}"
        );
        // Dark-theme page, text colour left at light-theme black.
        let dark = caption(
            "solid",
            "rgb(41, 45, 62)",
            "0px",
            "rgb(0, 0, 0)",
            "rgb(22, 22, 34)",
        );
        let found = problems(&CAPTIONS, &dark);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("figcaption: text contrast 1.1"),
            "{found:?}"
        );
    }

    #[test]
    fn a_missing_part_is_reported() {
        let _limit = TestLimit::seconds(5);
        let mut block = caption(
            "solid",
            "rgb(241, 241, 241)",
            "0px",
            "rgb(0, 0, 0)",
            "rgb(255, 255, 255)",
        );
        block["parts"][2] = json!({ "selector": "figcaption", "missing": true });
        assert_eq!(problems(&CAPTIONS, &block), ["has no figcaption"]);
    }
}
