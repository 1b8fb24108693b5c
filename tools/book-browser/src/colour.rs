//! Colours as the browser computes them, and whether text is readable: parses
//! the `rgb(…)`/`rgba(…)` strings `getComputedStyle` returns, blends
//! translucent layers the way the page paints them, and computes the WCAG 2
//! contrast ratio between a text colour and what lies under it.

/// An sRGB colour with straight (not premultiplied) alpha; channels 0–255,
/// alpha 0–1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rgba {
    pub red: f64,
    pub green: f64,
    pub blue: f64,
    pub alpha: f64,
}

/// The smallest contrast ratio WCAG 2 (level AA) accepts for normal text.
pub const MIN_TEXT_CONTRAST: f64 = 4.5;

/// What a browser paints under a page that sets no background.
pub const CANVAS_WHITE: Rgba = Rgba {
    red: 255.0,
    green: 255.0,
    blue: 255.0,
    alpha: 1.0,
};

impl Rgba {
    /// Parses a computed colour: `rgb(1, 2, 3)`, `rgba(1, 2, 3, 0.5)`, the
    /// space-separated forms (`rgb(1 2 3 / 50%)`) and `transparent`.
    pub fn parse(css: &str) -> Result<Rgba, String> {
        let text = css.trim();
        if text.eq_ignore_ascii_case("transparent") {
            return Ok(Rgba {
                red: 0.0,
                green: 0.0,
                blue: 0.0,
                alpha: 0.0,
            });
        }
        let inner = text
            .strip_prefix("rgba(")
            .or_else(|| text.strip_prefix("rgb("))
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or_else(|| format!("not an rgb() colour: {css:?}"))?;
        let numbers: Vec<&str> = inner
            .split([',', ' ', '/'])
            .filter(|part| !part.is_empty())
            .collect();
        let number = |text: &str, scale: f64| -> Result<f64, String> {
            match text.strip_suffix('%') {
                Some(percent) => percent.parse::<f64>().map(|p| p / 100.0 * scale),
                None => text.parse::<f64>(),
            }
            .map_err(|_| format!("bad number {text:?} in {css:?}"))
        };
        let (red, green, blue, alpha) = match numbers.as_slice() {
            [r, g, b] => (number(r, 255.0)?, number(g, 255.0)?, number(b, 255.0)?, 1.0),
            [r, g, b, a] => (
                number(r, 255.0)?,
                number(g, 255.0)?,
                number(b, 255.0)?,
                number(a, 1.0)?,
            ),
            _ => return Err(format!("expected 3 or 4 channels in {css:?}")),
        };
        Ok(Rgba {
            red,
            green,
            blue,
            alpha: alpha.clamp(0.0, 1.0),
        })
    }

    /// True when the colour paints nothing.
    pub fn is_transparent(self) -> bool {
        self.alpha <= 0.0
    }

    /// This colour painted over an opaque `below` (source-over blending).
    pub fn over(self, below: Rgba) -> Rgba {
        let mix = |top: f64, bottom: f64| top * self.alpha + bottom * (1.0 - self.alpha);
        Rgba {
            red: mix(self.red, below.red),
            green: mix(self.green, below.green),
            blue: mix(self.blue, below.blue),
            alpha: 1.0,
        }
    }

    /// The WCAG 2 relative luminance of the colour's RGB channels.
    pub fn relative_luminance(self) -> f64 {
        let linear = |channel: f64| {
            let c = channel / 255.0;
            if c <= 0.039_28 {
                c / 12.92
            } else {
                ((c + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * linear(self.red) + 0.7152 * linear(self.green) + 0.0722 * linear(self.blue)
    }

    /// `rgb(r, g, b)` with rounded channels, for messages.
    pub fn css(self) -> String {
        format!("rgb({:.0}, {:.0}, {:.0})", self.red, self.green, self.blue)
    }
}

/// The colour the page shows behind an element, given the computed
/// background colours of the element and its ancestors, innermost first.
pub fn backdrop(backgrounds_innermost_first: &[Rgba]) -> Rgba {
    backgrounds_innermost_first
        .iter()
        .rev()
        .fold(CANVAS_WHITE, |below, layer| layer.over(below))
}

/// The WCAG 2 contrast ratio (1 to 21) of `text` painted over the opaque
/// `background`.
pub fn contrast_ratio(text: Rgba, background: Rgba) -> f64 {
    let shown = text.over(background);
    let (a, b) = (shown.relative_luminance(), background.relative_luminance());
    let (lighter, darker) = if a > b { (a, b) } else { (b, a) };
    (lighter + 0.05) / (darker + 0.05)
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    fn rgb(css: &str) -> Rgba {
        Rgba::parse(css).unwrap()
    }

    #[test]
    fn computed_colours_parse_in_every_form() {
        let _limit = TestLimit::seconds(5);
        assert_eq!(rgb("rgb(1, 2, 3)").green, 2.0);
        assert_eq!(rgb("rgba(0, 0, 0, 0)").alpha, 0.0);
        assert!(rgb("transparent").is_transparent());
        let spaced = rgb("rgb(255 0 0 / 50%)");
        assert_eq!((spaced.red, spaced.alpha), (255.0, 0.5));
        assert!(Rgba::parse("oklch(0.5 0.1 20)").is_err());
        assert!(Rgba::parse("rgb(1, 2)").is_err());
    }

    #[test]
    fn contrast_ratios_match_the_wcag_reference_values() {
        let _limit = TestLimit::seconds(5);
        let black = rgb("rgb(0, 0, 0)");
        let white = rgb("rgb(255, 255, 255)");
        assert!((contrast_ratio(black, white) - 21.0).abs() < 1e-9);
        assert!((contrast_ratio(white, white) - 1.0).abs() < 1e-9);
        // #767676 on white is the classic "just passes AA" grey: 4.54.
        let grey = contrast_ratio(rgb("rgb(118, 118, 118)"), white);
        assert!((grey - 4.54).abs() < 0.01, "{grey}");
        assert!(grey >= MIN_TEXT_CONTRAST);
        // #777 fails: 4.48.
        assert!(contrast_ratio(rgb("rgb(119, 119, 119)"), white) < MIN_TEXT_CONTRAST);
    }

    #[test]
    fn translucent_layers_are_blended_from_the_page_up() {
        let _limit = TestLimit::seconds(5);
        let navy_page = rgb("rgb(22, 22, 34)");
        let tint = rgb("rgba(255, 255, 255, 0.25)");
        let behind = backdrop(&[tint, rgb("rgba(0, 0, 0, 0)"), navy_page]);
        assert_eq!(behind.css(), "rgb(80, 80, 89)");
        // Nothing painted at all: the white canvas shows.
        assert_eq!(backdrop(&[]).css(), "rgb(255, 255, 255)");
        // Half-transparent black text on white reads as mid grey.
        let faint = contrast_ratio(rgb("rgba(0, 0, 0, 0.5)"), CANVAS_WHITE);
        assert!(faint > 3.0 && faint < 4.5, "{faint}");
    }
}
