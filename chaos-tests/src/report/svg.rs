//! `timeline.svg`: the run as one picture, to look at instead of reading logs.
//!
//! From top to bottom: a title (seed, verdict, fault count) and the failed checks; a legend;
//! the faults by name; one lane per node with a bar where it was leader (one per term, labelled
//! when wide enough) and a mark where a fault hit it; a step chart of acknowledged writes per
//! second; the time axis. Each fault is also a shaded band across lanes and chart, so a drop in
//! the write rate lines up with the fault behind it. Bands and bars carry a `<title>` tooltip
//! with the figures, for viewers that show one.
//!
//! Faults are named by a label at the start of their band when every label fits in a few rows.
//! Long runs with many faults get one row per kind instead, with a tick per fault: a label on
//! one fault in ten would say little and suggest the wrong mix.

use std::collections::BTreeSet;

use super::format;
use super::model::{FaultRecord, RunReport, TermRecord};
use super::palette::KindPalette;
use super::xml::{XmlWriter, num};
use crate::history::Micros;

const WIDTH: f64 = 1200.0;
/// Room for the lane names and the rate axis labels.
const DEFAULT_LEFT: f64 = 84.0;
const RIGHT: f64 = 28.0;
const LANE_HEIGHT: f64 = 26.0;
const LABEL_ROW_HEIGHT: f64 = 14.0;
/// Rows of fault labels above the lanes; when some label fits in none, faults get kind rows.
const LABEL_ROWS: usize = 3;
const LABEL_FONT: f64 = 11.0;
const KIND_ROW_HEIGHT: f64 = 12.0;
const KIND_FONT: f64 = 10.0;
const LEGEND_ROW_HEIGHT: f64 = 18.0;
const CHART_HEIGHT: f64 = 140.0;
const BADGE_WIDTH: f64 = 68.0;
/// Points of the write-rate series at most; longer series are averaged over adjacent buckets.
pub const MAX_RATE_POINTS: usize = 2_000;
/// Pixels per rate point at least: finer steps only draw a smear of bucket-to-bucket noise.
const RATE_POINT_PIXELS: f64 = 2.0;
/// Narrowest band or bar drawn, so an instant fault (kill -9) stays visible.
const MIN_MARK_WIDTH: f64 = 1.5;

const STYLE: &str = "<style>\n\
text{font-family:'DejaVu Sans',Helvetica,Arial,sans-serif;fill:#222}\n\
.title{font-size:16px;font-weight:bold}\n\
.badge.passed{fill:#2e7d32}\n\
.badge.failed-run{fill:#b00020}\n\
.badge-text{font-size:13px;font-weight:bold;fill:#fff}\n\
.sub{font-size:12px;fill:#555}\n\
.failed{font-size:12px;fill:#b00020}\n\
.legend,.lane-label{font-size:12px}\n\
.axis-label{font-size:11px;fill:#444}\n\
.fault-label{font-size:11px}\n\
.kind-label{font-size:10px}\n\
.term-label{font-size:10px;fill:#fff}\n\
.lane{fill:#f4f5f7}\n\
.kind-row{fill:#f8f9fa}\n\
.grid{stroke:#d8dade;stroke-width:1}\n\
.axis{stroke:#666;stroke-width:1;fill:none}\n\
.leader{fill:#2e7d32}\n\
.leader.alt{fill:#5aa55e}\n\
.fault-band{fill-opacity:0.16}\n\
.target-strip{fill:#777}\n\
.rate-area{fill:#4a78b5;fill-opacity:0.28}\n\
.rate-line{fill:none;stroke:#2f5d99;stroke-width:1.2}\n\
";

/// The text of `timeline.svg`.
pub fn timeline_svg(report: &RunReport) -> String {
    let palette = KindPalette::new(&report.faults);
    let (scale, marks) = FaultMarks::choose(report, &palette);
    let legend = Legend::new(report, &palette, &marks, scale.left);
    let layout = Layout::new(report, scale, &marks, &palette, legend.rows());

    let mut svg = XmlWriter::new();
    svg.open(
        "svg",
        &[
            ("xmlns", "http://www.w3.org/2000/svg"),
            ("width", &num(WIDTH)),
            ("height", &num(layout.height)),
            (
                "viewBox",
                &format!("0 0 {} {}", num(WIDTH), num(layout.height)),
            ),
        ],
    );
    svg.raw(&style(&palette, &marks));
    hatch_patterns(&mut svg, &palette);
    svg.empty(
        "rect",
        &[("width", "100%"), ("height", "100%"), ("fill", "#ffffff")],
    );
    title(&mut svg, report, layout.scale.left);
    legend.draw(&mut svg, layout.legend_top);
    lanes(&mut svg, &layout);
    grid_and_time_axis(&mut svg, &layout, &marks);
    fault_bands(&mut svg, report, &layout, &palette);
    match &marks {
        FaultMarks::Labels(labels) => {
            leader_bars(&mut svg, &report.terms, &layout);
            // Over the leader bars: a partitioned or killed leader shows as a hatched bar.
            hatch_targets(&mut svg, report, &layout, &palette);
            fault_labels(&mut svg, report, labels, &layout, &palette);
        }
        FaultMarks::KindRows => {
            strip_targets(&mut svg, report, &layout, &palette);
            leader_bars(&mut svg, &report.terms, &layout);
            kind_rows(&mut svg, report, &layout, &palette);
        }
    }
    rate_chart(&mut svg, report, &layout);
    svg.finish()
}

/// Maps times to x coordinates on the plot.
#[derive(Debug, Clone, Copy)]
struct TimeScale {
    left: f64,
    width: f64,
    /// The time at the right edge.
    end: Micros,
}

impl TimeScale {
    fn new(left: f64, end: Micros) -> Self {
        Self {
            left,
            width: WIDTH - left - RIGHT,
            end: end.max(1),
        }
    }

    fn right(&self) -> f64 {
        self.left + self.width
    }

    fn x(&self, at: Micros) -> f64 {
        self.left + self.width * (at.min(self.end) as f64 / self.end as f64)
    }

    /// Left edge and width of a span, at least [`MIN_MARK_WIDTH`] wide.
    fn span(&self, from: Micros, to: Micros) -> (f64, f64) {
        let left = self.x(from);
        let width = (self.x(to.max(from)) - left).max(MIN_MARK_WIDTH);
        (left.min(self.right() - width), width)
    }
}

/// The last moment anything happened, so nothing is drawn past the right edge.
fn time_end(report: &RunReport) -> Micros {
    let faults = report
        .faults
        .iter()
        .map(|fault| fault.healed.max(fault.injected));
    let terms = report.terms.iter().map(|term| term.last_seen);
    let rate = report
        .rate_bucket
        .saturating_mul(report.acked_writes_per_bucket.len() as u64);
    faults
        .chain(terms)
        .chain([report.duration, rate])
        .max()
        .unwrap_or(0)
        .max(1_000_000)
}

/// How faults are named above the lanes.
#[derive(Debug)]
enum FaultMarks {
    /// Every fault labelled with its kind at the start of its band.
    Labels(Vec<PlacedLabel>),
    /// Too many faults to label: a row per kind with a tick per fault.
    KindRows,
}

#[derive(Debug)]
struct PlacedLabel {
    /// Position in `report.faults`.
    fault: usize,
    x: f64,
    row: usize,
}

impl FaultMarks {
    /// Labels when they all fit; otherwise kind rows, with the plot narrowed to make room for
    /// the kind names in the margin.
    fn choose(report: &RunReport, palette: &KindPalette) -> (TimeScale, Self) {
        let end = time_end(report);
        let scale = TimeScale::new(DEFAULT_LEFT, end);
        if let Some(labels) = place_labels(&report.faults, &scale) {
            return (scale, Self::Labels(labels));
        }
        let widest = palette
            .iter()
            .map(|(_, kind, _)| text_width(kind, KIND_FONT))
            .fold(0.0, f64::max);
        let left = DEFAULT_LEFT.max(widest + 16.0);
        (TimeScale::new(left, end), Self::KindRows)
    }

    fn height(&self, palette: &KindPalette) -> f64 {
        match self {
            Self::Labels(labels) => {
                let rows = labels.iter().map(|label| label.row + 1).max().unwrap_or(0);
                rows as f64 * LABEL_ROW_HEIGHT
            }
            Self::KindRows => palette.len() as f64 * KIND_ROW_HEIGHT,
        }
    }
}

/// Places each fault's label at the start of its band, in the first row where it does not
/// overlap the previous label; `None` when some label fits in no row.
fn place_labels(faults: &[FaultRecord], scale: &TimeScale) -> Option<Vec<PlacedLabel>> {
    let mut order: Vec<usize> = (0..faults.len()).collect();
    order.sort_by_key(|position| faults[*position].injected);
    let mut row_ends = [f64::NEG_INFINITY; LABEL_ROWS];
    order
        .into_iter()
        .map(|fault| {
            let width = text_width(&faults[fault].kind, LABEL_FONT);
            let x = scale
                .x(faults[fault].injected)
                .min(WIDTH - 2.0 - width)
                .max(2.0);
            let row = row_ends.iter().position(|end| x >= end + 6.0)?;
            row_ends[row] = x + width;
            Some(PlacedLabel { fault, x, row })
        })
        .collect()
}

/// Where everything goes vertically, and the time scale.
#[derive(Debug)]
struct Layout {
    scale: TimeScale,
    nodes: Vec<u64>,
    legend_top: f64,
    marks_top: f64,
    lanes_top: f64,
    chart_top: f64,
    chart_bottom: f64,
    height: f64,
}

impl Layout {
    fn new(
        report: &RunReport,
        scale: TimeScale,
        marks: &FaultMarks,
        palette: &KindPalette,
        legend_rows: usize,
    ) -> Self {
        let nodes = node_ids(report);
        let failed_line = if report.checks.iter().any(|check| !check.passed) {
            16.0
        } else {
            0.0
        };
        let legend_top = 56.0 + failed_line;
        let marks_top = legend_top + legend_rows as f64 * LEGEND_ROW_HEIGHT + 6.0;
        let lanes_top = marks_top + marks.height(palette) + 4.0;
        let chart_top = lanes_top + nodes.len() as f64 * LANE_HEIGHT + 18.0;
        let chart_bottom = chart_top + CHART_HEIGHT;
        Self {
            scale,
            nodes,
            legend_top,
            marks_top,
            lanes_top,
            chart_top,
            chart_bottom,
            // Tick labels, the axis title and a margin.
            height: chart_bottom + 48.0,
        }
    }

    fn lane_top(&self, node: u64) -> Option<f64> {
        let lane = self.nodes.iter().position(|known| *known == node)?;
        Some(self.lanes_top + lane as f64 * LANE_HEIGHT)
    }
}

/// Node ids are replica index + 1; lanes also cover any node a term or fault names.
fn node_ids(report: &RunReport) -> Vec<u64> {
    let mut nodes: BTreeSet<u64> = (1..=report.replicas as u64).collect();
    nodes.extend(report.terms.iter().map(|term| term.leader));
    for fault in &report.faults {
        nodes.extend(fault.targets.iter().map(|target| node_of(*target)));
        nodes.extend(fault.leader_before);
        nodes.extend(fault.leader_after);
    }
    nodes.into_iter().collect()
}

fn node_of(replica: usize) -> u64 {
    replica as u64 + 1
}

fn style(palette: &KindPalette, marks: &FaultMarks) -> String {
    let mut css = String::from(STYLE);
    for (index, _, colour) in palette.iter() {
        css.push_str(&format!(".k{index}{{fill:{colour}}}\n"));
    }
    if matches!(marks, FaultMarks::KindRows) {
        // Many bands overlap: keep them faint so the chart under them stays readable.
        css.push_str(".fault-band{fill-opacity:0.06}\n");
    }
    css.push_str("</style>\n");
    css
}

/// A diagonal hatch per kind, for the lanes of the nodes a fault hit, and a grey one for the
/// legend.
fn hatch_patterns(svg: &mut XmlWriter, palette: &KindPalette) {
    svg.open("defs", &[]);
    let patterns = palette
        .iter()
        .map(|(index, _, colour)| (format!("hatch-k{index}"), colour))
        .chain([("hatch-any".to_owned(), "#777777")]);
    for (id, colour) in patterns {
        svg.open(
            "pattern",
            &[
                ("id", &id),
                ("width", "6"),
                ("height", "6"),
                ("patternUnits", "userSpaceOnUse"),
                ("patternTransform", "rotate(45)"),
            ],
        );
        let light = [("width", "6"), ("height", "6"), ("fill-opacity", "0.3")];
        let stripe = [("width", "2.5"), ("height", "6"), ("fill-opacity", "0.9")];
        for attrs in [light, stripe] {
            let mut attrs = attrs.to_vec();
            attrs.push(("fill", colour));
            svg.empty("rect", &attrs);
        }
        svg.close();
    }
    svg.close();
}

fn title(svg: &mut XmlWriter, report: &RunReport, left: f64) {
    // The verdict as a badge: a coloured run inside the title would need tspans, and
    // renderers disagree on the spaces around those.
    let (verdict, badge_class) = if report.passed {
        ("PASSED", "badge passed")
    } else {
        ("FAILED", "badge failed-run")
    };
    svg.empty(
        "rect",
        &[
            ("class", badge_class),
            ("x", &num(left)),
            ("y", "9"),
            ("width", &num(BADGE_WIDTH)),
            ("height", "20"),
            ("rx", "3"),
        ],
    );
    svg.text(
        "text",
        &[
            ("class", "badge-text"),
            ("x", &num(left + BADGE_WIDTH / 2.0)),
            ("y", "24"),
            ("text-anchor", "middle"),
        ],
        verdict,
    );
    svg.text(
        "text",
        &[
            ("class", "title"),
            ("x", &num(left + BADGE_WIDTH + 10.0)),
            ("y", "25"),
        ],
        &format!(
            "Netting chaos run · seed {} · {} faults",
            report.seed,
            report.faults.len()
        ),
    );

    let subtitle = format!(
        "started {} · {} · {} replicas · {} sidecars · {} writes acknowledged",
        format::utc_datetime(report.started_unix_secs),
        format::duration(report.duration),
        report.replicas,
        report.sidecars,
        report.writes.ok,
    );
    svg.text(
        "text",
        &[("class", "sub"), ("x", &num(left)), ("y", "42")],
        &subtitle,
    );

    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|check| !check.passed)
        .map(|check| format!("{} ({} violations)", check.name, check.violations.len()))
        .collect();
    if !failed.is_empty() {
        svg.text(
            "text",
            &[("class", "failed"), ("x", &num(left)), ("y", "58")],
            &format!("failed: {} · see summary.txt", failed.join(", ")),
        );
    }
}

/// What the colours mean, flowed into as many rows as the width needs.
#[derive(Debug)]
struct Legend {
    items: Vec<LegendItem>,
}

/// A legend swatch is filled by a class (the one of what it stands for) or by a fill.
#[derive(Debug)]
enum Swatch {
    Class(String),
    Fill(&'static str),
}

#[derive(Debug)]
struct LegendItem {
    /// The swatch's look: a class that sets its fill, or a fill.
    swatch: Swatch,
    label: String,
    row: usize,
    x: f64,
}

impl Legend {
    fn new(report: &RunReport, palette: &KindPalette, marks: &FaultMarks, left: f64) -> Self {
        let class = |name: &str| Swatch::Class(name.to_owned());
        let mut entries = vec![
            (class("leader"), "leader (a bar per term)".to_owned()),
            (class("rate-area"), "acknowledged writes/s".to_owned()),
        ];
        for (index, kind, _) in palette.iter() {
            let count = report.faults.iter().filter(|f| f.kind == kind).count();
            entries.push((class(&format!("k{index}")), format!("{kind} ({count})")));
        }
        if !report.faults.is_empty() {
            let swatch = match marks {
                FaultMarks::Labels(_) => Swatch::Fill("url(#hatch-any)"),
                FaultMarks::KindRows => class("target-strip"),
            };
            entries.push((swatch, "node hit by the fault".to_owned()));
        }
        let (mut row, mut x) = (0, left);
        let items = entries
            .into_iter()
            .map(|(swatch, label)| {
                let width = 20.0 + text_width(&label, 12.0) + 20.0;
                if x + width > WIDTH - RIGHT && x > left {
                    row += 1;
                    x = left;
                }
                let item = LegendItem {
                    swatch,
                    label,
                    row,
                    x,
                };
                x += width;
                item
            })
            .collect();
        Self { items }
    }

    fn rows(&self) -> usize {
        self.items.last().map_or(1, |item| item.row + 1)
    }

    fn draw(&self, svg: &mut XmlWriter, top: f64) {
        for item in &self.items {
            let y = top + item.row as f64 * LEGEND_ROW_HEIGHT;
            // `swatch` first, so that counting `class="leader` finds the bars only.
            let (class, fill) = match &item.swatch {
                Swatch::Class(class) => (format!("swatch {class}"), None),
                Swatch::Fill(fill) => ("swatch".to_owned(), Some(*fill)),
            };
            let (x, y_text) = (num(item.x), num(y));
            let mut attrs = vec![
                ("class", class.as_str()),
                ("x", &x),
                ("y", &y_text),
                ("width", "14"),
                ("height", "10"),
            ];
            attrs.extend(fill.map(|fill| ("fill", fill)));
            svg.empty("rect", &attrs);
            svg.text(
                "text",
                &[
                    ("class", "legend"),
                    ("x", &num(item.x + 20.0)),
                    ("y", &num(y + 9.5)),
                ],
                &item.label,
            );
        }
    }
}

/// Text width estimate for layout: the average sans-serif glyph is about 0.6 em wide.
fn text_width(text: &str, font_size: f64) -> f64 {
    text.chars().count() as f64 * font_size * 0.6
}

fn lanes(svg: &mut XmlWriter, layout: &Layout) {
    let scale = &layout.scale;
    for node in &layout.nodes {
        let Some(top) = layout.lane_top(*node) else {
            continue;
        };
        svg.empty(
            "rect",
            &[
                ("class", "lane"),
                ("x", &num(scale.left)),
                ("y", &num(top + 1.0)),
                ("width", &num(scale.width)),
                ("height", &num(LANE_HEIGHT - 2.0)),
            ],
        );
        svg.text(
            "text",
            &[
                ("class", "lane-label"),
                ("x", &num(scale.left - 8.0)),
                ("y", &num(top + LANE_HEIGHT / 2.0 + 4.0)),
                ("text-anchor", "end"),
            ],
            &format!("node {node}"),
        );
    }
}

/// Vertical grid lines at each tick, labelled under the chart.
fn grid_and_time_axis(svg: &mut XmlWriter, layout: &Layout, marks: &FaultMarks) {
    let scale = &layout.scale;
    let end_secs = format::seconds(scale.end);
    // Minutes read better than thousands of seconds on long runs.
    let (unit, unit_name) = if end_secs >= 600.0 {
        (60.0, "minutes")
    } else {
        (1.0, "seconds")
    };
    // Through the kind rows too, to read off when their ticks happened; not through labels.
    let grid_top = match marks {
        FaultMarks::Labels(_) => layout.lanes_top,
        FaultMarks::KindRows => layout.marks_top,
    };
    let step = nice_step(end_secs / unit, scale.width / 80.0) * unit;
    let mut tick = 0.0;
    while tick <= end_secs + 1e-9 {
        let x = scale.left + scale.width * tick / end_secs;
        svg.empty(
            "line",
            &[
                ("class", "grid"),
                ("x1", &num(x)),
                ("x2", &num(x)),
                ("y1", &num(grid_top)),
                ("y2", &num(layout.chart_bottom + 4.0)),
            ],
        );
        svg.text(
            "text",
            &[
                ("class", "axis-label"),
                ("x", &num(x)),
                ("y", &num(layout.chart_bottom + 16.0)),
                ("text-anchor", "middle"),
            ],
            &trim_number(tick / unit),
        );
        tick += step;
    }
    svg.text(
        "text",
        &[
            ("class", "axis-label"),
            ("x", &num(scale.left + scale.width / 2.0)),
            ("y", &num(layout.chart_bottom + 34.0)),
            ("text-anchor", "middle"),
        ],
        &format!("{unit_name} since start"),
    );
}

/// A step of 1, 2 or 5 times a power of ten giving at most `max_ticks` intervals over `span`.
fn nice_step(span: f64, max_ticks: f64) -> f64 {
    let rough = (span / max_ticks.max(1.0)).max(1e-9);
    let magnitude = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|factor| factor * magnitude)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * magnitude)
}

fn trim_number(value: f64) -> String {
    let text = format!("{value:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn fault_bands(svg: &mut XmlWriter, report: &RunReport, layout: &Layout, palette: &KindPalette) {
    let height = layout.chart_bottom - layout.lanes_top;
    for fault in &report.faults {
        let (x, width) = layout.scale.span(fault.injected, fault.healed);
        svg.with_tooltip(
            "rect",
            &[
                (
                    "class",
                    &format!("fault-band {}", palette.class(&fault.kind)),
                ),
                ("x", &num(x)),
                ("y", &num(layout.lanes_top)),
                ("width", &num(width)),
                ("height", &num(height)),
            ],
            &fault_tooltip(fault),
        );
    }
}

fn fault_tooltip(fault: &FaultRecord) -> String {
    let nodes: Vec<String> = fault
        .targets
        .iter()
        .map(|target| format!("node {}", node_of(*target)))
        .collect();
    let leader = |leader: Option<u64>, term: Option<u64>| match (leader, term) {
        (Some(leader), Some(term)) => format!("node {leader} (term {term})"),
        (Some(leader), None) => format!("node {leader}"),
        _ => "none seen".to_owned(),
    };
    let figure = |span: Option<Micros>| span.map_or("-".to_owned(), format::millis);
    format!(
        "#{} {} on {}: {}\ninjected {:.3}s, healed {:.3}s\nleader before {}, after {}\n\
         first ack {} ms after the fault, {} ms after the heal; longest write gap {} ms",
        fault.index,
        fault.kind,
        nodes.join(", "),
        fault.detail,
        format::seconds(fault.injected),
        format::seconds(fault.healed),
        leader(fault.leader_before, fault.term_before),
        leader(fault.leader_after, fault.term_after),
        figure(fault.fault_to_first_ack),
        figure(fault.heal_to_first_ack),
        format::millis(fault.longest_write_gap),
    )
}

fn leader_bars(svg: &mut XmlWriter, terms: &[TermRecord], layout: &Layout) {
    for (position, term) in terms.iter().enumerate() {
        let Some(top) = layout.lane_top(term.leader) else {
            continue;
        };
        let (x, width) = layout.scale.span(term.first_seen, term.last_seen);
        // Alternate shades so back-to-back terms of one leader stay apart.
        let class = if position % 2 == 0 {
            "leader"
        } else {
            "leader alt"
        };
        svg.with_tooltip(
            "rect",
            &[
                ("class", class),
                ("x", &num(x)),
                ("y", &num(top + 5.0)),
                ("width", &num(width)),
                ("height", &num(LANE_HEIGHT - 10.0)),
            ],
            &format!(
                "term {}: node {} leader, seen {:.3}s to {:.3}s",
                term.term,
                term.leader,
                format::seconds(term.first_seen),
                format::seconds(term.last_seen)
            ),
        );
        let label = [format!("term {}", term.term), term.term.to_string()]
            .into_iter()
            .find(|label| text_width(label, 10.0) + 8.0 <= width);
        if let Some(label) = label {
            svg.text(
                "text",
                &[
                    ("class", "term-label"),
                    // At the start: faults that hit a leader come later in its term, so their
                    // hatching rarely covers the start of its bar.
                    ("x", &num(x + 4.0)),
                    ("y", &num(top + LANE_HEIGHT / 2.0 + 3.5)),
                ],
                &label,
            );
        }
    }
}

/// Hatches the lane of each node a fault hit, for as long as the fault lasted.
fn hatch_targets(svg: &mut XmlWriter, report: &RunReport, layout: &Layout, palette: &KindPalette) {
    for fault in &report.faults {
        let (x, width) = layout.scale.span(fault.injected, fault.healed);
        let fill = format!("url(#hatch-{})", palette.class(&fault.kind));
        for target in &fault.targets {
            let Some(top) = layout.lane_top(node_of(*target)) else {
                continue;
            };
            svg.empty(
                "rect",
                &[
                    ("class", "fault-target"),
                    ("fill", &fill),
                    ("x", &num(x)),
                    ("y", &num(top + 2.0)),
                    ("width", &num(width)),
                    ("height", &num(LANE_HEIGHT - 4.0)),
                ],
            );
        }
    }
}

/// With many faults, a thin strip under the leader bar of each node a fault hit: hatching
/// whole lanes would hide who led.
fn strip_targets(svg: &mut XmlWriter, report: &RunReport, layout: &Layout, palette: &KindPalette) {
    for fault in &report.faults {
        let (x, width) = layout.scale.span(fault.injected, fault.healed);
        let class = format!("fault-target {}", palette.class(&fault.kind));
        for target in &fault.targets {
            let Some(top) = layout.lane_top(node_of(*target)) else {
                continue;
            };
            svg.empty(
                "rect",
                &[
                    ("class", &class),
                    ("x", &num(x)),
                    ("y", &num(top + LANE_HEIGHT - 5.0)),
                    ("width", &num(width)),
                    ("height", "3"),
                ],
            );
        }
    }
}

fn fault_labels(
    svg: &mut XmlWriter,
    report: &RunReport,
    labels: &[PlacedLabel],
    layout: &Layout,
    palette: &KindPalette,
) {
    for label in labels {
        let Some(fault) = report.faults.get(label.fault) else {
            continue;
        };
        // Row 0 sits just above the lanes.
        let baseline = layout.lanes_top - 4.0 - label.row as f64 * LABEL_ROW_HEIGHT - 3.0;
        svg.text(
            "text",
            &[
                (
                    "class",
                    &format!("fault-label {}", palette.class(&fault.kind)),
                ),
                ("x", &num(label.x)),
                ("y", &num(baseline)),
            ],
            &fault.kind,
        );
    }
}

/// A row per kind, named in the margin, with a tick per fault of that kind.
fn kind_rows(svg: &mut XmlWriter, report: &RunReport, layout: &Layout, palette: &KindPalette) {
    let scale = &layout.scale;
    for (index, kind, _) in palette.iter() {
        let top = layout.marks_top + index as f64 * KIND_ROW_HEIGHT;
        let class = format!("k{index}");
        svg.empty(
            "rect",
            &[
                ("class", "kind-row"),
                ("x", &num(scale.left)),
                ("y", &num(top)),
                ("width", &num(scale.width)),
                ("height", &num(KIND_ROW_HEIGHT - 1.0)),
            ],
        );
        svg.text(
            "text",
            &[
                ("class", &format!("kind-label {class}")),
                ("x", &num(scale.left - 8.0)),
                ("y", &num(top + KIND_ROW_HEIGHT - 3.0)),
                ("text-anchor", "end"),
            ],
            kind,
        );
        let tick_class = format!("fault-tick {class}");
        for fault in report.faults.iter().filter(|fault| fault.kind == kind) {
            let (x, width) = scale.span(fault.injected, fault.healed);
            svg.empty(
                "rect",
                &[
                    ("class", &tick_class),
                    ("x", &num(x)),
                    ("y", &num(top + 1.0)),
                    ("width", &num(width)),
                    ("height", &num(KIND_ROW_HEIGHT - 3.0)),
                ],
            );
        }
    }
}

/// Acknowledged writes per second as `(from, to, rate)`, one entry per bucket or per group of
/// adjacent buckets, `max_points` entries at most.
fn rate_series(report: &RunReport, max_points: usize) -> Vec<(Micros, Micros, f64)> {
    if report.rate_bucket == 0 {
        return Vec::new();
    }
    let buckets = &report.acked_writes_per_bucket;
    let group = buckets.len().div_ceil(max_points.max(1)).max(1);
    buckets
        .chunks(group)
        .enumerate()
        .map(|(index, chunk)| {
            let start = (index * group) as u64 * report.rate_bucket;
            let span = chunk.len() as u64 * report.rate_bucket;
            let acked: u64 = chunk.iter().map(|count| u64::from(*count)).sum();
            (start, start + span, acked as f64 / format::seconds(span))
        })
        .collect()
}

fn rate_chart(svg: &mut XmlWriter, report: &RunReport, layout: &Layout) {
    let scale = &layout.scale;
    let (top, bottom) = (layout.chart_top, layout.chart_bottom);
    let max_points = MAX_RATE_POINTS.min((scale.width / RATE_POINT_PIXELS) as usize);
    let series = rate_series(report, max_points);
    let peak = series.iter().map(|(.., rate)| *rate).fold(0.0, f64::max);
    let step = nice_step(peak.max(1.0), 4.0);
    let y_max = (peak / step).ceil().max(1.0) * step;
    let y = |rate: f64| bottom - (rate / y_max) * CHART_HEIGHT;

    let mut tick = 0.0;
    while tick <= y_max + 1e-9 {
        svg.empty(
            "line",
            &[
                ("class", "grid"),
                ("x1", &num(scale.left)),
                ("x2", &num(scale.right())),
                ("y1", &num(y(tick))),
                ("y2", &num(y(tick))),
            ],
        );
        svg.text(
            "text",
            &[
                ("class", "axis-label"),
                ("x", &num(scale.left - 6.0)),
                ("y", &num(y(tick) + 4.0)),
                ("text-anchor", "end"),
            ],
            &trim_number(tick),
        );
        tick += step;
    }
    svg.text(
        "text",
        &[
            ("class", "axis-label"),
            (
                "transform",
                &format!(
                    "translate({} {}) rotate(-90)",
                    num(scale.left - 44.0),
                    num(top + CHART_HEIGHT / 2.0)
                ),
            ),
            ("text-anchor", "middle"),
        ],
        "acked writes/s",
    );

    if let Some((first, _, first_rate)) = series.first() {
        let steps: String = series
            .iter()
            .map(|(_, end, rate)| format!("V{}H{}", num(y(*rate)), num(scale.x(*end))))
            .collect();
        let start = num(scale.x(*first));
        let line = format!("M{start} {}{steps}", num(y(*first_rate)));
        let area = format!("M{start} {}{steps}V{}Z", num(bottom), num(bottom));
        svg.empty("path", &[("class", "rate-area"), ("d", &area)]);
        svg.empty("path", &[("class", "rate-line"), ("d", &line)]);
    } else {
        svg.text(
            "text",
            &[
                ("class", "axis-label"),
                ("x", &num(scale.left + scale.width / 2.0)),
                ("y", &num(top + CHART_HEIGHT / 2.0)),
                ("text-anchor", "middle"),
            ],
            "no write rate recorded",
        );
    }
    svg.empty(
        "path",
        &[
            ("class", "axis"),
            (
                "d",
                &format!(
                    "M{} {}V{}H{}",
                    num(scale.left),
                    num(top),
                    num(bottom),
                    num(scale.right())
                ),
            ),
        ],
    );
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::report::test_support::{small_report, with_faults};

    /// Checks what a renderer needs: one root, every element closed in order, tag names that
    /// are names, and every `&` starting an entity (so no raw `<` or `&` leaked from the data).
    fn assert_well_formed(doc: &str) {
        let trimmed = doc.trim();
        assert!(trimmed.starts_with("<svg"), "does not start with <svg");
        assert!(trimmed.ends_with("</svg>"), "does not end with </svg>");
        let mut open: Vec<&str> = Vec::new();
        let mut closed_root = false;
        let mut rest = trimmed;
        while let Some(at) = rest.find(['<', '&']) {
            if rest[at..].starts_with('&') {
                let entity = &rest[at + 1..];
                assert!(
                    ["amp;", "lt;", "gt;", "quot;", "apos;", "#"]
                        .iter()
                        .any(|known| entity.starts_with(known)),
                    "bare & at {:?}",
                    &rest[at..(at + 20).min(rest.len())]
                );
                rest = &rest[at + 1..];
                continue;
            }
            assert!(!closed_root, "content after the root element");
            let end = rest[at..].find('>').expect("unterminated tag") + at;
            let tag = &rest[at + 1..end];
            assert!(!tag.contains('<'), "< inside a tag: {tag}");
            let name = tag
                .trim_start_matches('/')
                .split(|c: char| c.is_whitespace() || c == '/')
                .next()
                .unwrap_or("");
            assert!(
                name.starts_with(|c: char| c.is_ascii_alphabetic())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
                "not a tag name: {name:?}"
            );
            if tag.starts_with('/') {
                let expected = open.pop().expect("closing tag without opening");
                assert_eq!(name, expected, "</{name}> closes <{expected}>");
                closed_root = open.is_empty();
            } else if !tag.ends_with('/') {
                open.push(name);
            }
            rest = &rest[end + 1..];
        }
        assert!(open.is_empty(), "unclosed: {open:?}");
    }

    #[test]
    fn well_formedness_check_catches_raw_markup() {
        assert_well_formed("<svg><g><text a=\"&amp;\">x &lt; y</text><rect/></g></svg>");
        for bad in [
            "<svg><text>x < y</text></svg>",
            "<svg><text>x & y</text></svg>",
            "<svg><g><text>x</g></text></svg>",
            "<svg><g></svg>",
        ] {
            let caught = std::panic::catch_unwind(|| assert_well_formed(bad));
            assert!(caught.is_err(), "accepted {bad}");
        }
    }

    fn count(doc: &str, needle: &str) -> usize {
        doc.matches(needle).count()
    }

    /// `(x, y, text)` of every fault label.
    fn fault_labels_of(doc: &str) -> Vec<(f64, f64, String)> {
        doc.lines()
            .filter(|line| line.starts_with("<text class=\"fault-label"))
            .map(|line| {
                let attr = |name: &str| -> f64 {
                    let start = line.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
                    let len = line[start..].find('"').unwrap();
                    line[start..start + len].parse().unwrap()
                };
                let text_start = line.find('>').unwrap() + 1;
                let text_end = line.rfind("</text>").unwrap();
                (attr("x"), attr("y"), line[text_start..text_end].to_owned())
            })
            .collect()
    }

    #[test]
    fn small_run_is_well_formed_with_a_bar_per_term_and_a_band_per_fault() {
        let report = small_report();
        let doc = timeline_svg(&report);
        assert_well_formed(&doc);
        assert_eq!(count(&doc, "<rect class=\"leader"), report.terms.len());
        assert_eq!(
            count(&doc, "<rect class=\"fault-band "),
            report.faults.len()
        );
        // Each fault hit one node here.
        assert_eq!(
            count(&doc, "<rect class=\"fault-target\""),
            report.faults.len()
        );
        for node in 1..=3 {
            assert!(doc.contains(&format!(">node {node}</text>")), "lane {node}");
        }
        assert!(doc.contains("seed 424242"));
        assert!(doc.contains(">FAILED</text>"));
        assert!(doc.contains("seed 424242 · 4 faults</text>"));
        // Wide enough bars carry their term.
        assert!(doc.contains(">term 2</text>"), "{doc}");
        // Every fault of a short run is labelled.
        assert_eq!(fault_labels_of(&doc).len(), report.faults.len());
    }

    #[test]
    fn markup_in_fault_kind_and_detail_is_escaped() {
        let mut report = small_report();
        report.faults[1].kind = "pause<follower>&co".to_owned();
        report.faults[2].detail = "cut 2<->1 & 2<->3 </svg>".to_owned();
        let doc = timeline_svg(&report);
        assert_well_formed(&doc);
        assert!(doc.contains("pause&lt;follower&gt;&amp;co"));
        assert!(doc.contains("cut 2&lt;-&gt;1 &amp; 2&lt;-&gt;3 &lt;/svg&gt;"));
        assert!(!doc.contains("pause<follower"));
    }

    #[test]
    fn lanes_cover_nodes_outside_the_replica_count() {
        let mut report = small_report();
        report.terms[2].leader = 7;
        let doc = timeline_svg(&report);
        assert!(doc.contains(">node 7</text>"));
        assert_eq!(count(&doc, "<rect class=\"lane\""), 4);
    }

    fn assert_labels_do_not_overlap(labels: &[(f64, f64, String)]) {
        let rows: BTreeSet<String> = labels.iter().map(|(_, y, _)| y.to_string()).collect();
        assert!(rows.len() <= LABEL_ROWS, "{} label rows", rows.len());
        for row in rows {
            let mut in_row: Vec<&(f64, f64, String)> = labels
                .iter()
                .filter(|(_, y, _)| y.to_string() == row)
                .collect();
            in_row.sort_by(|a, b| a.0.total_cmp(&b.0));
            for pair in in_row.windows(2) {
                let end = pair[0].0 + text_width(&pair[0].2, LABEL_FONT);
                assert!(end <= pair[1].0, "{:?} overlaps {:?}", pair[0], pair[1]);
            }
        }
    }

    /// Twelve faults of five kinds, one every 9 s, in a 2-minute run.
    fn dozen_in_two_minutes() -> RunReport {
        let mut report = with_faults(12);
        report.duration = 120_000_000;
        report.acked_writes_per_bucket.truncate(1_200);
        for (index, fault) in report.faults.iter_mut().enumerate() {
            fault.injected = (5 + 9 * index as u64) * 1_000_000;
            fault.healed = fault.injected + 4_000_000;
        }
        for term in &mut report.terms {
            term.first_seen = term.first_seen.min(119_000_000);
            term.last_seen = term.last_seen.min(120_000_000);
        }
        report
    }

    #[test]
    fn a_dozen_faults_in_two_minutes_are_all_labelled() {
        let doc = timeline_svg(&dozen_in_two_minutes());
        assert_well_formed(&doc);
        let labels = fault_labels_of(&doc);
        assert_eq!(labels.len(), 12);
        assert_labels_do_not_overlap(&labels);
        assert_eq!(count(&doc, "class=\"kind-label"), 0);
    }

    #[test]
    fn thousand_faults_get_kind_rows_and_stay_small() {
        let report = with_faults(1_000);
        let doc = timeline_svg(&report);
        assert_well_formed(&doc);
        assert!(doc.len() < 2_000_000, "{} bytes", doc.len());
        assert_eq!(count(&doc, "<rect class=\"fault-band "), 1_000);
        // Labels on one fault in twenty would only clutter: none, and a row per kind instead.
        assert!(fault_labels_of(&doc).is_empty());
        assert_eq!(count(&doc, "<text class=\"kind-label "), 5);
        assert_eq!(count(&doc, "<rect class=\"fault-tick "), 1_000);
        // Leader bars stay on top of the marks of the faults that hit their node.
        assert!(doc.rfind("class=\"fault-target").unwrap() < doc.find("class=\"leader").unwrap());
    }

    #[test]
    fn labels_are_placed_only_when_all_fit() {
        let hour = TimeScale::new(DEFAULT_LEFT, 3_600_000_000);
        assert!(place_labels(&with_faults(40).faults, &hour).is_none());
        let two_minutes = TimeScale::new(DEFAULT_LEFT, 120_000_000);
        let sparse = small_report().faults;
        let placed = place_labels(&sparse, &two_minutes).unwrap();
        assert_eq!(placed.len(), sparse.len());
    }

    #[test]
    fn long_rate_series_is_downsampled() {
        let report = with_faults(10);
        assert!(report.acked_writes_per_bucket.len() > MAX_RATE_POINTS);
        let doc = timeline_svg(&report);
        let line = doc
            .lines()
            .find(|line| line.starts_with("<path class=\"rate-line\""))
            .unwrap();
        assert!(
            count(line, "H") <= MAX_RATE_POINTS,
            "{} points",
            count(line, "H")
        );
        // 3 to 7 writes per 100 ms bucket: 50 per second on average, give or take the part
        // of a 5-bucket cycle a group of 18 buckets adds.
        let series = rate_series(&report, MAX_RATE_POINTS);
        assert!(series.iter().all(|(.., rate)| (*rate - 50.0).abs() < 2.0));
    }

    #[test]
    fn short_rate_series_is_drawn_bucket_by_bucket() {
        let report = small_report();
        let series = rate_series(&report, MAX_RATE_POINTS);
        assert_eq!(series.len(), 120);
        assert_eq!(series[30], (30_000_000, 31_000_000, 0.0));
        assert_eq!(series[31].2, 18.0);
    }

    #[test]
    fn empty_run_still_draws() {
        let mut report = small_report();
        report.faults.clear();
        report.terms.clear();
        report.checks.clear();
        report.acked_writes_per_bucket.clear();
        report.duration = 0;
        let doc = timeline_svg(&report);
        assert_well_formed(&doc);
        assert!(doc.contains("no write rate recorded"));
    }

    #[test]
    fn nice_steps() {
        assert_eq!(nice_step(120.0, 13.0), 10.0);
        assert_eq!(nice_step(60.0, 13.0), 5.0);
        assert_eq!(nice_step(47.0, 4.0), 20.0);
        assert_eq!(nice_step(0.8, 4.0), 0.2);
    }
}
