//! Draws Chapter 10's chart, and its tables, from the results Listing 10-1
//! writes.
//!
//! - `cargo run -p listing-10-04` reads `target/costs.tsv`, written by the
//!   last `cargo bench -p listing-10-01`, and draws `target/costs.svg` from
//!   it. Nothing the repository tracks changes.
//! - `cargo run -p listing-10-04 -- <results.tsv>` does the same from another
//!   results file; `-- src/charts/costs.tsv` draws the book's chart from the
//!   data the book holds.
//! - `--into-book` writes into the book's own files instead:
//!   a copy of the results as `src/charts/costs.tsv` and the chart as
//!   `src/charts/costs.svg`. The chapter's tables must then be replaced with
//!   the ones printed.
//!
//! It also prints the chapter's three tables, in Markdown, from the same
//! results.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// One row of the round-trip table: a variant in a layout.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundTrip {
    pub layout: String,
    pub variant: String,
    pub label: String,
    pub median_ns: f64,
    pub min_ns: f64,
    pub max_ns: f64,
    pub ratio: f64,
    pub ratio_min: f64,
    pub ratio_max: f64,
    pub round_trips_per_s: f64,
    pub switches: f64,
    pub cpu_ns: f64,
}

/// One primitive: CPU nanoseconds per operation.
#[derive(Clone, Debug, PartialEq)]
pub struct Primitive {
    pub name: String,
    pub label: String,
    pub median_ns: f64,
    pub min_ns: f64,
    pub max_ns: f64,
}

/// Everything a results file says.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Results {
    pub machine: Vec<(String, String)>,
    pub run: Vec<(String, String)>,
    pub round_trips: Vec<RoundTrip>,
    pub primitives: Vec<Primitive>,
}

impl Results {
    fn machine(&self, key: &str) -> &str {
        self.machine
            .iter()
            .find(|(k, _)| k == key)
            .map_or("unknown", |(_, v)| v.as_str())
    }

    fn run(&self, key: &str) -> &str {
        self.run
            .iter()
            .find(|(k, _)| k == key)
            .map_or("?", |(_, v)| v.as_str())
    }

    /// The variants, in the order the file lists them.
    fn variants(&self) -> Vec<(&str, &str)> {
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for r in &self.round_trips {
            if !seen.iter().any(|(v, _)| *v == r.variant) {
                seen.push((&r.variant, &r.label));
            }
        }
        seen
    }

    fn row(&self, layout: &str, variant: &str) -> Option<&RoundTrip> {
        self.round_trips
            .iter()
            .find(|r| r.layout == layout && r.variant == variant)
    }

    /// Where the numbers come from, in one sentence.
    pub fn machine_sentence(&self) -> String {
        let virtual_machine = if self.machine("virtual") == "yes" {
            " (a virtual machine)"
        } else {
            ""
        };
        format!(
            "Measured {} on {}, {} CPUs{virtual_machine}, {}, {}.",
            self.run("date"),
            self.machine("cpu"),
            self.machine("cpus"),
            self.machine("kernel"),
            self.machine("rustc"),
        )
    }

    /// How it was measured, in one sentence.
    pub fn method_sentence(&self) -> String {
        format!(
            "cargo bench -p listing-10-01: one-byte round trips against one echo peer; \
             {} repeats unpinned and {} on one core, each of {} slices of {} timed round \
             trips per variant.",
            self.run("repeats_unpinned"),
            self.run("repeats_one_core"),
            self.run("slices"),
            self.run("round_trips_per_slice"),
        )
    }
}

/// Reads a results file of Listing 10-1.
pub fn parse(text: &str) -> Result<Results, String> {
    let mut results = Results::default();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('\t').collect();
        let wrong = || format!("line {}: cannot read {line:?}", n + 1);
        let number = |i: usize| -> Result<f64, String> {
            fields.get(i).and_then(|f| f.parse().ok()).ok_or_else(wrong)
        };
        match fields.as_slice() {
            ["machine", key, value] => results.machine.push((key.to_string(), value.to_string())),
            ["run", key, value] => results.run.push((key.to_string(), value.to_string())),
            ["round_trip", layout, variant, label, ..] if fields.len() == 13 => {
                results.round_trips.push(RoundTrip {
                    layout: layout.to_string(),
                    variant: variant.to_string(),
                    label: label.to_string(),
                    median_ns: number(4)?,
                    min_ns: number(5)?,
                    max_ns: number(6)?,
                    ratio: number(7)?,
                    ratio_min: number(8)?,
                    ratio_max: number(9)?,
                    round_trips_per_s: number(10)?,
                    switches: number(11)?,
                    cpu_ns: number(12)?,
                })
            }
            ["primitive", name, label, ..] if fields.len() == 6 => {
                results.primitives.push(Primitive {
                    name: name.to_string(),
                    label: label.to_string(),
                    median_ns: number(3)?,
                    min_ns: number(4)?,
                    max_ns: number(5)?,
                })
            }
            _ => return Err(wrong()),
        }
    }
    if results.machine.is_empty() || results.round_trips.is_empty() {
        return Err(
            "no machine or no round trips: is this a results file of listing-10-01?".into(),
        );
    }
    Ok(results)
}

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round number of nanoseconds or microseconds.
pub fn duration(ns: f64) -> String {
    if ns >= 10_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns >= 1_000.0 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

/// Breaks `text` into lines of at most `width` characters.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().expect("one line at least");
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// A step for about `ticks` ticks up to `max`, from 1, 2, 2.5 and 5 times a
/// power of ten.
fn step(max: f64, ticks: f64) -> f64 {
    let rough = max / ticks;
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * power)
}

const WIDTH: f64 = 760.0;
const PLOT_LEFT: f64 = 262.0;
const PLOT_RIGHT: f64 = 598.0;
const VALUES: f64 = 610.0;

/// An x axis: `max` maps to the plot's right edge; larger values are clipped.
struct Axis {
    max: f64,
}

impl Axis {
    fn x(&self, value: f64) -> f64 {
        PLOT_LEFT + (value.min(self.max) / self.max) * (PLOT_RIGHT - PLOT_LEFT)
    }
}

/// The chart's SVG lines.
struct Svg {
    lines: Vec<String>,
}

impl Svg {
    fn text(&mut self, class: &str, x: f64, y: f64, anchor: &str, text: &str) {
        self.lines.push(format!(
            "<text class=\"{class}\" x=\"{x:.0}\" y=\"{y:.0}\" text-anchor=\"{anchor}\">{}</text>",
            escape(text)
        ));
    }

    fn line(&mut self, class: &str, x1: f64, y1: f64, x2: f64, y2: f64) {
        self.lines.push(format!(
            "<line class=\"{class}\" x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\"/>"
        ));
    }

    fn rect(&mut self, class: &str, x: f64, y: f64, width: f64, height: f64) {
        self.lines.push(format!(
            "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{height:.1}\"/>",
            width.max(0.5)
        ));
    }

    /// A bar from 0 to `value`, with a break at its end if the axis clips it.
    fn bar(&mut self, class: &str, axis: &Axis, value: f64, y: f64, height: f64) {
        let end = axis.x(value);
        self.rect(class, PLOT_LEFT, y, end - PLOT_LEFT, height);
        if value > axis.max {
            for dx in [-10.0, -6.0] {
                self.line("break", end + dx, y + height + 1.0, end + dx + 3.0, y - 1.0);
            }
        }
    }

    /// Vertical grid lines and their labels under them.
    fn grid(
        &mut self,
        axis: &Axis,
        step: f64,
        top: f64,
        bottom: f64,
        label: impl Fn(f64) -> String,
    ) {
        let mut value = 0.0;
        while value <= axis.max + step / 1e6 {
            let x = axis.x(value);
            self.line("grid", x, top, x, bottom);
            self.text("tick", x, bottom + 14.0, "middle", &label(value));
            value += step;
        }
    }
}

// ANCHOR: draw
/// Draws the chart: one pair of bars per variant (its round trip as a
/// multiple of native tokio's, unpinned and on one core, with the range of
/// the repeats), then the primitives, then the machine.
pub fn draw(results: &Results) -> String {
    let mut svg = Svg { lines: Vec::new() };
    let mut y = 22.0;
    svg.text(
        "heading",
        8.0,
        y,
        "start",
        "Round trip over loopback, as a multiple of native tokio's",
    );
    y += 18.0;
    svg.text(
        "note",
        8.0,
        y,
        "start",
        "bar: median of the repeats; whisker: their range; right: ratio, round trip",
    );
    y += 20.0;
    svg.rect("unpinned", PLOT_LEFT, y - 10.0, 16.0, 10.0);
    svg.text("legend", PLOT_LEFT + 22.0, y, "start", "unpinned");
    svg.rect("one-core", PLOT_LEFT + 110.0, y - 10.0, 16.0, 10.0);
    svg.text(
        "legend",
        PLOT_LEFT + 132.0,
        y,
        "start",
        "one core: every thread on CPU 0",
    );
    y += 16.0;

    // Ratios: the axis ends past the largest whisker, at 2 at most.
    let largest = results
        .round_trips
        .iter()
        .map(|r| r.ratio_max.max(r.ratio))
        .fold(1.0, f64::max);
    let axis = Axis {
        max: if largest > 2.2 {
            2.0
        } else {
            (largest * 4.0).ceil() / 4.0
        },
    };
    // The grid first, so that the bars are drawn over it.
    let variants = results.variants();
    let bottom = y + 30.0 * variants.len() as f64 - 6.0;
    svg.grid(&axis, step(axis.max, 4.0), y - 4.0, bottom, |v| {
        format!("{v}×")
    });
    svg.line("reference", axis.x(1.0), y - 4.0, axis.x(1.0), bottom);
    for (variant, label) in variants {
        svg.text("label", PLOT_LEFT - 8.0, y + 15.0, "end", label);
        for (layout, dy) in [("unpinned", 0.0), ("one-core", 11.0)] {
            let Some(r) = results.row(layout, variant) else {
                continue;
            };
            svg.bar(layout, &axis, r.ratio, y + dy, 9.0);
            let middle = y + dy + 4.5;
            svg.line(
                "range",
                axis.x(r.ratio_min),
                middle,
                axis.x(r.ratio_max),
                middle,
            );
            let value = format!("{:.2}× {}", r.ratio, duration(r.median_ns));
            svg.text("value", VALUES, middle + 4.0, "start", &value);
        }
        y += 30.0;
    }
    y += 30.0;

    svg.text(
        "heading",
        8.0,
        y,
        "start",
        "The primitives alone: CPU time per operation, on one core",
    );
    y += 12.0;
    // Nanoseconds: one far larger value (a thread) is clipped, not allowed to
    // flatten the others.
    let mut sizes: Vec<f64> = results
        .primitives
        .iter()
        .map(|p| p.median_ns.max(p.max_ns))
        .collect();
    sizes.sort_by(f64::total_cmp);
    let max = match sizes.as_slice() {
        [.., second, first] if *first > 4.0 * second => second * 1.3,
        [.., first] => first * 1.05,
        [] => 1.0,
    };
    let tick = step(max, 4.0);
    let axis = Axis {
        max: (max / tick).ceil() * tick,
    };
    let bottom = y + 20.0 * results.primitives.len() as f64;
    svg.grid(&axis, tick, y, bottom, duration);
    for p in &results.primitives {
        svg.text("label", PLOT_LEFT - 8.0, y + 11.0, "end", &p.label);
        svg.bar("primitive", &axis, p.median_ns, y + 2.0, 10.0);
        svg.line(
            "range",
            axis.x(p.min_ns),
            y + 7.0,
            axis.x(p.max_ns),
            y + 7.0,
        );
        svg.text("value", VALUES, y + 11.0, "start", &duration(p.median_ns));
        y += 20.0;
    }
    y += 38.0;
    for line in wrap(&results.machine_sentence(), 100)
        .into_iter()
        .chain(wrap(&results.method_sentence(), 100))
    {
        svg.text("note", 8.0, y, "start", &line);
        y += 15.0;
    }
    let height = y - 4.0;

    let mut out = String::new();
    let _ = writeln!(
        out,
        "<svg class=\"chart costs\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {height:.0}\" \
         width=\"{WIDTH}\" height=\"{height:.0}\" role=\"img\" aria-labelledby=\"costs-title costs-desc\">"
    );
    let _ = writeln!(
        out,
        "<title id=\"costs-title\">What the fixes cost: round trips as multiples of native tokio's, \
         unpinned and on one core, and the primitives alone</title>"
    );
    let _ = writeln!(
        out,
        "<desc id=\"costs-desc\">{}</desc>",
        escape(&describe(results))
    );
    for line in svg.lines {
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("</svg>\n");
    out
}
// ANCHOR_END: draw

/// Every number of the chart, in words, for readers who cannot see it.
pub fn describe(results: &Results) -> String {
    let mut words = Vec::new();
    for (variant, label) in results.variants() {
        let mut parts = Vec::new();
        for (layout, name) in [("unpinned", "unpinned"), ("one-core", "on one core")] {
            if let Some(r) = results.row(layout, variant) {
                parts.push(format!(
                    "{name} {:.2} times native tokio ({:.2} to {:.2}), {}",
                    r.ratio,
                    r.ratio_min,
                    r.ratio_max,
                    duration(r.median_ns)
                ));
            }
        }
        words.push(format!("{label}: {}.", parts.join("; ")));
    }
    for p in &results.primitives {
        words.push(format!(
            "{}: {} of CPU per operation.",
            p.label,
            duration(p.median_ns)
        ));
    }
    words.push(results.machine_sentence());
    words.join(" ")
}

/// `lo`–`hi`, with the unit written once when both share it.
fn range(lo: f64, hi: f64) -> String {
    let (lo, hi) = (duration(lo), duration(hi));
    match (lo.split_once(' '), hi.split_once(' ')) {
        (Some((number, unit)), Some((_, same))) if unit == same => format!("{number}–{hi}"),
        _ => format!("{lo}–{hi}"),
    }
}

/// A whole number with its thousands apart: 74,072.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The chapter's tables, in Markdown: the round trips on one core, then
/// unpinned, then the primitives.
pub fn tables(results: &Results) -> Vec<String> {
    let mut tables = Vec::new();
    for layout in ["one-core", "unpinned"] {
        let mut out = String::from(
            "| variant | round trip | × native tokio | round trips/s | switches per round trip \
             | CPU per round trip |\n|---|--:|--:|--:|--:|--:|\n",
        );
        for (variant, label) in results.variants() {
            let Some(r) = results.row(layout, variant) else {
                continue;
            };
            let _ = writeln!(
                out,
                "| {label} | {} | {:.2} ({:.2}–{:.2}) | {} | {:.2} | {} |",
                duration(r.median_ns),
                r.ratio,
                r.ratio_min,
                r.ratio_max,
                thousands(r.round_trips_per_s),
                r.switches,
                duration(r.cpu_ns),
            );
        }
        tables.push(out);
    }
    let mut out = String::from(
        "| operation, alone, on one core | CPU per operation | range |\n|---|--:|--:|\n",
    );
    for p in &results.primitives {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            p.label,
            duration(p.median_ns),
            range(p.min_ns, p.max_ns)
        );
    }
    tables.push(out);
    tables
}

/// The workspace this runs in: the nearest directory up with a `Cargo.lock`.
fn workspace() -> PathBuf {
    let here = std::env::current_dir().unwrap_or_default();
    here.ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .unwrap_or(&here)
        .to_path_buf()
}

/// Where the chart goes: the results file and the chart.
struct Destination {
    data: Option<PathBuf>,
    chart: PathBuf,
}

/// `target/costs.svg` by default; the book's own files with `--into-book`.
fn destination(root: &Path, into_book: bool) -> Destination {
    if into_book {
        let charts = root.join("src/charts");
        Destination {
            data: Some(charts.join("costs.tsv")),
            chart: charts.join("costs.svg"),
        }
    } else {
        Destination {
            data: None,
            chart: root.join("target/costs.svg"),
        }
    }
}

fn main() -> Result<(), String> {
    let root = workspace();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let into_book = args.iter().any(|a| a == "--into-book");
    if let Some(unknown) = args
        .iter()
        .find(|a| a.starts_with("--") && *a != "--into-book")
    {
        return Err(format!(
            "unknown switch {unknown}: the only one is --into-book"
        ));
    }
    let input = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/costs.tsv"));
    let text = fs::read_to_string(&input).map_err(|e| {
        format!(
            "cannot read {}: {e} (run `cargo bench -p listing-10-01` first)",
            input.display()
        )
    })?;
    let results = parse(&text)?;
    let to = destination(&root, into_book);
    if let Some(data) = &to.data {
        let same = |a: &Path, b: &Path| a.canonicalize().ok() == b.canonicalize().ok();
        if !same(&input, data) {
            fs::write(data, &text).map_err(|e| e.to_string())?;
        }
    }
    if let Some(dir) = to.chart.parent() {
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    fs::write(&to.chart, draw(&results)).map_err(|e| e.to_string())?;
    eprintln!("drew {} from {}", to.chart.display(), input.display());
    for table in tables(&results) {
        println!("{table}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use awd::watchdog::TestLimit;

    fn book() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
    }

    const SAMPLE: &str = "\
# a results file
machine\tcpu\tAMD EPYC & Co <test>
machine\tcpus\t2
machine\tvirtual\tyes
machine\tkernel\tLinux 6.1
machine\trustc\trustc 1.87.0
run\tdate\t2026-01-01
run\tslices\t10
run\trepeats_unpinned\t7
run\trepeats_one_core\t7
run\tround_trips_per_slice\t1500
round_trip\tunpinned\ttokio\tnative tokio\t50000\t40000\t60000\t1.000\t1.000\t1.000\t20000\t2.00\t40000
round_trip\tone-core\ttokio\tnative tokio\t13000\t12900\t13100\t1.000\t1.000\t1.000\t75000\t2.00\t13000
round_trip\tunpinned\tthread\ta thread each\t90000\t80000\t99000\t1.800\t1.500\t2.900\t11000\t2.40\t60000
round_trip\tone-core\tthread\ta thread each\t39000\t38000\t40000\t3.000\t2.900\t3.100\t25000\t2.40\t37000
primitive\toneshot\toneshot\t60.0\t55.0\t70.0
primitive\tthread\ta thread\t30000.0\t25000.0\t40000.0
";

    #[test]
    fn the_chart_follows_the_theme_and_says_where_it_ran() {
        let _limit = TestLimit::seconds(10);
        let svg = draw(&parse(SAMPLE).unwrap());
        assert!(
            !svg.contains("\n\n"),
            "a blank line would end the HTML block in Markdown"
        );
        assert!(svg.starts_with("<svg class=\"chart costs\""));
        assert!(
            svg.contains("role=\"img\"") && svg.contains("<title id=") && svg.contains("<desc id=")
        );
        for colour in ["fill=", "stroke=", "style=", "#", "rgb("] {
            assert!(
                !svg.contains(colour),
                "{colour}: colours belong to the theme's CSS"
            );
        }
        assert!(svg.contains("AMD EPYC &amp; Co &lt;test&gt;, 2 CPUs (a virtual machine)"));
        assert!(svg.contains("rustc 1.87.0"));
        assert!(
            svg.contains("3.00× 39.0 µs"),
            "a clipped bar keeps its number"
        );
        assert!(
            svg.contains("class=\"break\""),
            "and shows that it is clipped"
        );
    }

    #[test]
    fn tables_read_like_a_book() {
        let _limit = TestLimit::seconds(10);
        let tables = tables(&parse(SAMPLE).unwrap()).join("\n");
        assert!(
            tables.contains(
                "| native tokio | 13.0 µs | 1.00 (1.00–1.00) | 75,000 | 2.00 | 13.0 µs |"
            ),
            "{tables}"
        );
        assert!(
            tables.contains("| native tokio | 50.0 µs | 1.00 (1.00–1.00) | 20,000 |"),
            "{tables}"
        );
        assert!(
            tables.contains("| oneshot | 60 ns | 55–70 ns |"),
            "{tables}"
        );
        assert!(
            tables.contains("| a thread | 30.0 µs | 25.0–40.0 µs |"),
            "{tables}"
        );
    }

    #[test]
    fn measuring_writes_under_target_and_only_the_switch_writes_into_the_book() {
        let _limit = TestLimit::seconds(10);
        let root = book();
        let measured = destination(&root, false);
        assert!(measured.data.is_none(), "the results stay where they are");
        assert!(measured.chart.starts_with(root.join("target")));
        let book = destination(&root, true);
        assert_eq!(book.chart, root.join("src/charts/costs.svg"));
        assert_eq!(book.data, Some(root.join("src/charts/costs.tsv")));
    }

    #[test]
    fn a_file_that_is_not_results_is_refused() {
        let _limit = TestLimit::seconds(10);
        assert!(parse("hello\tworld").is_err());
        assert!(parse("machine\tcpu\tx\n").is_err());
        let broken = SAMPLE.replace("\t1.800\t", "\tmany\t");
        assert!(parse(&broken).unwrap_err().contains("cannot read"));
    }

    /// The labels Listing 10-1's `Variant::label()` gives today. Listing 10-1
    /// is a program, not a library, so this listing cannot call it, and a
    /// copy of the labels here could go stale with it; its source is the
    /// one place they are written, as the arms of one `match`, so the test
    /// reads them from there.
    fn labels_the_benchmark_prints() -> Vec<String> {
        let path = book().join("listings/ch10-what-the-fixes-cost/listing-10-01/src/main.rs");
        let source = fs::read_to_string(path).unwrap();
        let variant = &source[source.find("impl Variant {").expect("impl Variant")..];
        let label = &variant[variant.find("pub fn label(self)").expect("fn label")..];
        let body = &label[..label.find("\n    }\n").expect("the end of fn label")];
        body.lines()
            .filter_map(|line| line.split_once("=> \""))
            .map(|(_, rest)| {
                let rest = rest.trim_end().trim_end_matches(',');
                rest.trim_end_matches('"').to_string()
            })
            .collect()
    }

    #[test]
    fn the_books_results_name_the_variants_the_benchmark_has_today() {
        let _limit = TestLimit::seconds(10);
        let labels = labels_the_benchmark_prints();
        assert!(
            labels.len() >= 2,
            "read no labels from Listing 10-1: {labels:?}"
        );
        let tsv = fs::read_to_string(book().join("src/charts/costs.tsv")).unwrap();
        let results = parse(&tsv).unwrap();
        for row in &results.round_trips {
            assert!(
                labels.contains(&row.label),
                "src/charts/costs.tsv measured `{}`, which Listing 10-1 no longer has \
                 (its variants: {labels:?}): run `cargo bench -p listing-10-01`, then \
                 `cargo run -p listing-10-04 -- --into-book`",
                row.label
            );
        }
        for label in &labels {
            for layout in ["unpinned", "one-core"] {
                assert!(
                    results
                        .round_trips
                        .iter()
                        .any(|r| r.label == *label && r.layout == layout),
                    "src/charts/costs.tsv has no {layout} row for `{label}`"
                );
            }
        }
    }

    #[test]
    fn the_books_chart_and_tables_are_drawn_from_the_books_results() {
        let _limit = TestLimit::seconds(10);
        let charts = book().join("src/charts");
        let results = parse(&fs::read_to_string(charts.join("costs.tsv")).unwrap()).unwrap();
        let stored = fs::read_to_string(charts.join("costs.svg")).unwrap();
        assert!(
            stored == draw(&results),
            "src/charts/costs.svg is not the chart of src/charts/costs.tsv: \
             redraw it with `cargo run -p listing-10-04 -- src/charts/costs.tsv --into-book`"
        );
        let chapter = fs::read_to_string(book().join("src/ch10-what-the-fixes-cost.md")).unwrap();
        for table in tables(&results) {
            assert!(
                chapter.contains(&table),
                "the chapter does not show this table of src/charts/costs.tsv \
                 (`cargo run -p listing-10-04 -- src/charts/costs.tsv` prints it):\n{table}"
            );
        }
    }
}
