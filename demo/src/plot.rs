//! The pictures: PNG charts drawn with `plotters`' bitmap backend.
//!
//! Plotters draws the shapes (bars, lines, markers, shading). Text is set here, with
//! `ab_glyph` and a font compiled into the binary (Ubuntu Light, from the
//! `epaint_default_fonts` crate): drawing needs no system font, no fontconfig and no C
//! library, so the same binary draws the same picture on any machine. (Plotters' own
//! `ab_glyph` text drops each glyph's left side bearing, which spaces digits like `1 0`.)
//!
//! Two kinds of chart, shared by the demo (`flux-demo run`) and the benchmark harness
//! (`flux-bench`):
//!
//! * [`SecondsChart`]: counts per second, stacked by series (requests admitted by each
//!   instance), with horizontal reference lines (the limit) and shaded windows (an outage).
//! * [`LineChart`]: lines of points (latency distributions, throughput against callers).
//!
//! Every chart has a title, labelled axes and a legend to the right of the plot.

use std::error::Error;
use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

/// What drawing returns.
pub type PlotResult = Result<(), Box<dyn Error>>;

/// Width and height of every picture, in pixels.
const SIZE: (u32, u32) = (1100, 560);
/// Width of the legend panel to the right of the plot.
const LEGEND_WIDTH: i32 = 300;
/// Space around the plotting area: title above, tick labels and axis names left and below.
const MARGIN_TOP: i32 = 52;
const MARGIN_LEFT: i32 = 84;
const MARGIN_BOTTOM: i32 = 60;
const MARGIN_RIGHT: i32 = 18;

/// Colours of the series, in order: readable on white and told apart without colour vision
/// of every kind (the Okabe-Ito palette).
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(230, 159, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
];

/// The colour of limit lines.
pub const LIMIT_RED: RGBColor = RGBColor(200, 20, 30);
/// The colour of secondary reference lines.
pub const GREY: RGBColor = RGBColor(110, 110, 110);
const TEXT: RGBColor = RGBColor(25, 25, 25);
const NOTE: RGBColor = RGBColor(70, 70, 70);
const GRID: RGBColor = RGBColor(228, 228, 228);

/// How a line is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineStyle {
    /// A solid line.
    Solid,
    /// A dashed line.
    Dashed,
}

/// A horizontal line across the chart, or across part of it.
#[derive(Clone, Debug)]
pub struct HLine {
    /// Its legend entry.
    pub label: String,
    /// The y value.
    pub y: f64,
    /// Where it starts and ends on the x axis (`None`: across the whole chart).
    pub x: Option<(f64, f64)>,
    /// Its colour.
    pub color: RGBColor,
    /// Solid or dashed.
    pub style: LineStyle,
}

/// A shaded window of the x axis (an outage).
#[derive(Clone, Debug)]
pub struct Shade {
    /// Its legend entry.
    pub label: String,
    /// Start on the x axis.
    pub from: f64,
    /// End on the x axis.
    pub to: f64,
}

/// Counts per one-second slot, stacked by series.
#[derive(Clone, Debug)]
pub struct SecondsChart {
    /// The caption above the chart.
    pub title: String,
    /// The x axis' name.
    pub x_label: String,
    /// The y axis' name.
    pub y_label: String,
    /// The stacked series, bottom first: (legend entry, one count per second).
    pub stacks: Vec<(String, Vec<f64>)>,
    /// Reference lines (the limit, the offered load).
    pub lines: Vec<HLine>,
    /// Shaded windows.
    pub shades: Vec<Shade>,
    /// Paragraphs under the legend (figures, the setup).
    pub notes: Vec<String>,
}

impl SecondsChart {
    /// Draws the chart into a PNG file at `path`.
    pub fn draw(&self, path: &Path) -> PlotResult {
        let seconds = self.stacks.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
        let tallest = (0..seconds)
            .map(|s| {
                self.stacks
                    .iter()
                    .map(|(_, v)| v.get(s).copied().unwrap_or(0.0))
                    .sum::<f64>()
            })
            .fold(0.0, f64::max);
        let highest_line = self.lines.iter().map(|l| l.y).fold(0.0, f64::max);
        let y_max = round_up(tallest.max(highest_line) * 1.08);
        let x_max = seconds.max(1) as f64;

        let root = BitMapBackend::new(path, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = plot_area(&root, 0.0..x_max, 0.0..y_max)?;
        let x_step = if seconds > 30 { 5.0 } else { 2.0 };
        let frame = Frame {
            title: &self.title,
            x_label: &self.x_label,
            y_label: &self.y_label,
            x_ticks: ticks_with_step(0.0, x_max, x_step, count_label),
            y_ticks: ticks(0.0, y_max, 10, count_label),
        };
        frame.grid(&root, &chart)?;
        for shade in &self.shades {
            chart.draw_series(std::iter::once(Rectangle::new(
                [(shade.from, 0.0), (shade.to, y_max)],
                shade_color().filled(),
            )))?;
        }
        for second in 0..seconds {
            let mut bottom = 0.0;
            let x0 = second as f64 + 0.12;
            let x1 = second as f64 + 0.88;
            for (i, (_, values)) in self.stacks.iter().enumerate() {
                let v = values.get(second).copied().unwrap_or(0.0);
                if v <= 0.0 {
                    continue;
                }
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x0, bottom), (x1, bottom + v)],
                    PALETTE[i % PALETTE.len()].filled(),
                )))?;
                bottom += v;
            }
        }
        for line in &self.lines {
            let (from, to) = line.x.unwrap_or((0.0, x_max));
            draw_line(
                &mut chart,
                &[(from, line.y), (to, line.y)],
                line.color,
                line.style,
            )?;
        }
        frame.axes(&root, &chart)?;

        let mut entries: Vec<(Swatch, String)> = Vec::new();
        for (i, (label, _)) in self.stacks.iter().enumerate().rev() {
            entries.push((
                Swatch::Box(PALETTE[i % PALETTE.len()].mix(1.0)),
                label.clone(),
            ));
        }
        for line in &self.lines {
            entries.push((Swatch::Line(line.color, line.style), line.label.clone()));
        }
        for shade in &self.shades {
            entries.push((Swatch::Box(shade_color()), shade.label.clone()));
        }
        draw_legend(&root, &entries, &self.notes)?;
        root.present()?;
        Ok(())
    }
}

/// How the x axis of a [`LineChart`] is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XScale {
    /// Linear.
    Linear,
    /// Base-2 logarithmic, for doubling sweeps (1, 2, 4 ... callers); labels are the values.
    Log2,
}

/// One line of a [`LineChart`].
#[derive(Clone, Debug)]
pub struct Series {
    /// Its legend entry.
    pub label: String,
    /// The points, in x order.
    pub points: Vec<(f64, f64)>,
    /// Whether each point gets a marker (sweeps: yes; distributions: no).
    pub markers: bool,
    /// Solid or dashed.
    pub style: LineStyle,
}

/// Lines of points on shared axes.
#[derive(Clone, Debug)]
pub struct LineChart {
    /// The caption above the chart.
    pub title: String,
    /// The x axis' name.
    pub x_label: String,
    /// The y axis' name.
    pub y_label: String,
    /// How the x axis is scaled.
    pub x_scale: XScale,
    /// The x range shown (`None`: the points' range).
    pub x_range: Option<(f64, f64)>,
    /// The y range shown (`None`: from 0 to a little above the highest point).
    pub y_range: Option<(f64, f64)>,
    /// The lines, each in the next colour of [`PALETTE`].
    pub series: Vec<Series>,
    /// Paragraphs under the legend.
    pub notes: Vec<String>,
}

impl LineChart {
    /// Draws the chart into a PNG file at `path`.
    pub fn draw(&self, path: &Path) -> PlotResult {
        let log2 = self.x_scale == XScale::Log2;
        let scale = |x: f64| {
            if log2 {
                x.max(f64::MIN_POSITIVE).log2()
            } else {
                x
            }
        };
        let points = || self.series.iter().flat_map(|s| s.points.iter().copied());
        let (x_min, x_max) = self.x_range.unwrap_or_else(|| {
            points().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (x, _)| {
                (lo.min(x), hi.max(x))
            })
        });
        if !x_min.is_finite() || !x_max.is_finite() {
            return Err("a line chart needs at least one point".into());
        }
        let (mut x0, mut x1) = (scale(x_min), scale(x_max));
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if log2 {
            // A little room around the first and last marker.
            let pad = (x1 - x0) * 0.03;
            x0 -= pad;
            x1 += pad;
        }
        let (y0, y1) = self.y_range.unwrap_or_else(|| {
            let top = points().map(|(_, y)| y).fold(0.0, f64::max);
            (0.0, round_up(top * 1.08))
        });

        let root = BitMapBackend::new(path, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = plot_area(&root, x0..x1, y0..y1)?;
        let x_ticks = if log2 {
            (x_min.log2().ceil() as i32..=x_max.log2().floor() as i32)
                .map(|k| (f64::from(k), count_label(2f64.powi(k))))
                .collect()
        } else {
            ticks(x0, x1, 10, count_label)
        };
        let frame = Frame {
            title: &self.title,
            x_label: &self.x_label,
            y_label: &self.y_label,
            x_ticks,
            y_ticks: ticks(y0, y1, 10, count_label),
        };
        frame.grid(&root, &chart)?;
        for (i, series) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let pts: Vec<(f64, f64)> = series
                .points
                .iter()
                .map(|&(x, y)| (scale(x), y))
                .filter(|&(x, y)| x >= x0 && x <= x1 && y >= y0 && y <= y1)
                .collect();
            draw_line(&mut chart, &pts, color, series.style)?;
            if series.markers {
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 5, color.filled())))?;
            }
        }
        frame.axes(&root, &chart)?;
        let entries: Vec<(Swatch, String)> = self
            .series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    Swatch::Line(PALETTE[i % PALETTE.len()], s.style),
                    s.label.clone(),
                )
            })
            .collect();
        draw_legend(&root, &entries, &self.notes)?;
        root.present()?;
        Ok(())
    }
}

type Root<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type Chart<'a> = ChartContext<'a, BitMapBackend<'a>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// The plotting area: the picture less the legend panel and the margins for text.
fn plot_area<'a>(
    root: &Root<'a>,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<Chart<'a>, Box<dyn Error>> {
    let (plot, _) = root.split_horizontally(SIZE.0 as i32 - LEGEND_WIDTH);
    let chart = ChartBuilder::on(&plot)
        .margin_top(MARGIN_TOP)
        .margin_left(MARGIN_LEFT)
        .margin_bottom(MARGIN_BOTTOM)
        .margin_right(MARGIN_RIGHT)
        .build_cartesian_2d(x, y)?;
    Ok(chart)
}

/// The title, the grid, the axes and their labels.
struct Frame<'t> {
    title: &'t str,
    x_label: &'t str,
    y_label: &'t str,
    x_ticks: Vec<(f64, String)>,
    y_ticks: Vec<(f64, String)>,
}

impl Frame<'_> {
    /// The horizontal grid lines, under the data.
    fn grid(&self, root: &Root<'_>, chart: &Chart<'_>) -> PlotResult {
        let (xs, _) = chart.plotting_area().get_pixel_range();
        for (y, _) in &self.y_ticks {
            let (_, py) = chart.backend_coord(&(0.0, *y));
            root.draw(&PathElement::new(
                vec![(xs.start, py), (xs.end - 1, py)],
                GRID.stroke_width(1),
            ))?;
        }
        Ok(())
    }

    /// Axes, ticks, tick labels, axis names and the title, over the data.
    fn axes(&self, root: &Root<'_>, chart: &Chart<'_>) -> PlotResult {
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        let (left, right, top, bottom) = (xs.start, xs.end - 1, ys.start, ys.end - 1);
        let axis = BLACK.stroke_width(1);
        root.draw(&PathElement::new(vec![(left, top), (left, bottom)], axis))?;
        root.draw(&PathElement::new(
            vec![(left, bottom), (right, bottom)],
            axis,
        ))?;
        for (x, label) in &self.x_ticks {
            let (px, _) = chart.backend_coord(&(*x, 0.0));
            root.draw(&PathElement::new(
                vec![(px, bottom), (px, bottom + 5)],
                axis,
            ))?;
            text(root, label, (px, bottom + 9), 15.0, TEXT, Anchor::TopCenter)?;
        }
        for (y, label) in &self.y_ticks {
            let (_, py) = chart.backend_coord(&(0.0, *y));
            root.draw(&PathElement::new(vec![(left - 5, py), (left, py)], axis))?;
            text(root, label, (left - 9, py), 15.0, TEXT, Anchor::MiddleRight)?;
        }
        text(
            root,
            self.x_label,
            ((left + right) / 2, bottom + 34),
            16.0,
            TEXT,
            Anchor::TopCenter,
        )?;
        text(
            root,
            self.y_label,
            (left - MARGIN_LEFT + 8 + 10, (top + bottom) / 2),
            16.0,
            TEXT,
            Anchor::Vertical,
        )?;
        text(root, self.title, (left, 16), 21.0, TEXT, Anchor::TopLeft)?;
        Ok(())
    }
}

fn draw_line(
    chart: &mut Chart<'_>,
    points: &[(f64, f64)],
    color: RGBColor,
    style: LineStyle,
) -> PlotResult {
    match style {
        LineStyle::Solid => {
            chart.draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(3),
            ))?;
        }
        LineStyle::Dashed => {
            chart.draw_series(DashedLineSeries::new(
                points.iter().copied(),
                12,
                7,
                color.stroke_width(3),
            ))?;
        }
    }
    Ok(())
}

fn shade_color() -> RGBAColor {
    RGBColor(220, 50, 47).mix(0.16)
}

/// What stands before a legend entry.
enum Swatch {
    Box(RGBAColor),
    Line(RGBColor, LineStyle),
}

/// The legend panel right of the plot: one row per entry, then the notes, wrapped.
fn draw_legend(root: &Root<'_>, entries: &[(Swatch, String)], notes: &[String]) -> PlotResult {
    let x = SIZE.0 as i32 - LEGEND_WIDTH + 6;
    let wrap_width = f64::from(LEGEND_WIDTH - 50);
    let mut y = MARGIN_TOP + 8;
    for (swatch, label) in entries {
        match swatch {
            Swatch::Box(color) => {
                root.draw(&Rectangle::new(
                    [(x, y - 7), (x + 26, y + 7)],
                    color.filled(),
                ))?;
            }
            Swatch::Line(color, LineStyle::Solid) => {
                root.draw(&PathElement::new(
                    vec![(x, y), (x + 26, y)],
                    color.stroke_width(3),
                ))?;
            }
            Swatch::Line(color, LineStyle::Dashed) => {
                for (a, b) in [(0, 8), (12, 20), (24, 26)] {
                    root.draw(&PathElement::new(
                        vec![(x + a, y), (x + b, y)],
                        color.stroke_width(3),
                    ))?;
                }
            }
        }
        let lines = wrap(label, 15.0, wrap_width);
        for (i, line) in lines.iter().enumerate() {
            text(
                root,
                line,
                (x + 36, y + 19 * i as i32),
                15.0,
                TEXT,
                Anchor::MiddleLeft,
            )?;
        }
        y += 19 * lines.len().saturating_sub(1) as i32 + 28;
    }
    y += 4;
    for note in notes {
        for line in wrap(note, 14.0, wrap_width + 30.0) {
            text(root, &line, (x, y), 14.0, NOTE, Anchor::MiddleLeft)?;
            y += 18;
        }
        y += 8;
    }
    Ok(())
}

// ---- text -------------------------------------------------------------------------------

fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(
        || match FontRef::try_from_slice(epaint_default_fonts::UBUNTU_LIGHT) {
            Ok(font) => font,
            // The bytes are compiled in and were parsed by the tests: this cannot happen.
            Err(e) => panic!("the compiled-in font: {e}"),
        },
    )
}

/// Where the point given to [`text`] is on the text's box.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Anchor {
    TopLeft,
    TopCenter,
    MiddleLeft,
    MiddleRight,
    /// Rotated a quarter turn to read bottom to top, centred on the point (a y axis' name).
    Vertical,
}

/// The width of `s` at `size` pixels.
fn text_width(s: &str, size: f32) -> f64 {
    let font = font().as_scaled(PxScale::from(size));
    let mut width = 0.0;
    let mut prev = None;
    for c in s.chars() {
        let id = font.glyph_id(c);
        if let Some(p) = prev {
            width += font.kern(p, id);
        }
        width += font.h_advance(id);
        prev = Some(id);
    }
    f64::from(width)
}

/// Sets `s` at `size` pixels with its `anchor` at `at`, in `color`.
fn text(
    root: &Root<'_>,
    s: &str,
    at: (i32, i32),
    size: f32,
    color: RGBColor,
    anchor: Anchor,
) -> PlotResult {
    let scale = PxScale::from(size);
    let font = font();
    let scaled = font.as_scaled(scale);
    let ascent = scaled.ascent();
    // Cap height is about 0.7 em: centre on the capitals, not on ascent + descent.
    let middle = ascent - size * 0.36;
    let width = text_width(s, size) as f32;
    let (dx, dy) = match anchor {
        Anchor::TopLeft => (0.0, 0.0),
        Anchor::TopCenter => (-width / 2.0, 0.0),
        Anchor::MiddleLeft => (0.0, -middle),
        Anchor::MiddleRight => (-width, -middle),
        Anchor::Vertical => (-width / 2.0, -middle),
    };
    let mut pen = 0.0;
    let mut prev = None;
    let mut result = Ok(());
    for c in s.chars() {
        let id = scaled.glyph_id(c);
        if let Some(p) = prev {
            pen += scaled.kern(p, id);
        }
        prev = Some(id);
        let glyph = id.with_scale_and_position(scale, point(pen + dx, ascent + dy));
        pen += scaled.h_advance(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            if coverage <= 0.0 || result.is_err() {
                return;
            }
            let lx = bounds.min.x as i32 + gx as i32;
            let ly = bounds.min.y as i32 + gy as i32;
            let (px, py) = match anchor {
                Anchor::Vertical => (at.0 + ly, at.1 - lx),
                _ => (at.0 + lx, at.1 + ly),
            };
            // A little gamma: light text on white stays legible.
            let alpha = f64::from(coverage.min(1.0)).powf(0.8);
            result = root.draw_pixel((px, py), &color.mix(alpha));
        });
    }
    result?;
    Ok(())
}

/// Splits `s` into lines no wider than `width` pixels at `size`, at spaces.
fn wrap(s: &str, size: f32, width: f64) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in s.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_owned()
        } else {
            format!("{line} {word}")
        };
        if !line.is_empty() && text_width(&candidate, size) > width {
            lines.push(std::mem::replace(&mut line, word.to_owned()));
        } else {
            line = candidate;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

// ---- numbers ----------------------------------------------------------------------------

/// Ticks at a round step (1, 2, 2.5, 5 x 10^k) giving at most `most` ticks from `lo` to `hi`.
fn ticks(lo: f64, hi: f64, most: usize, label: impl Fn(f64) -> String) -> Vec<(f64, String)> {
    let span = (hi - lo).abs().max(f64::MIN_POSITIVE);
    let step = nice_ceiling(span / most.max(1) as f64);
    ticks_with_step(lo, hi, step, label)
}

fn ticks_with_step(
    lo: f64,
    hi: f64,
    step: f64,
    label: impl Fn(f64) -> String,
) -> Vec<(f64, String)> {
    let mut out = Vec::new();
    let mut k = (lo / step).ceil();
    while k * step <= hi + step * 1e-9 {
        let v = k * step;
        out.push((v, label(v)));
        k += 1.0;
    }
    out
}

/// `v` rounded up to a whole number of round steps (about 5 to 10 of them): an axis' end.
fn round_up(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let step = nice_ceiling(v / 8.0);
    (v / step).ceil() * step
}

/// The smallest of 1, 2, 2.5, 5 x 10^k at or above `v`: an axis that ends on a round number.
fn nice_ceiling(v: f64) -> f64 {
    if !v.is_finite() || v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if step * magnitude >= v * (1.0 - 1e-12) {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// `64`, `2.5k`, `160k`, `1M`, `0.5`: a tick label.
fn count_label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6).replace(".0M", "M")
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3).replace(".0k", "k")
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(9.0), 10.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(11.0), 20.0);
        assert_eq!(nice_ceiling(56.0), 100.0);
        assert_eq!(nice_ceiling(230.0), 250.0);
    }

    #[test]
    fn axis_ends() {
        assert_eq!(round_up(54.0), 60.0);
        assert_eq!(round_up(10.8), 12.0);
        assert_eq!(round_up(170_000.0), 175_000.0);
    }

    #[test]
    fn tick_positions() {
        let t: Vec<f64> = ticks(0.0, 100.0, 10, count_label)
            .iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(
            t,
            vec![
                0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 100.0
            ]
        );
        let t: Vec<f64> = ticks(0.0, 20.0, 5, count_label)
            .iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(t, vec![0.0, 5.0, 10.0, 15.0, 20.0]);
    }

    #[test]
    fn labels() {
        assert_eq!(count_label(64.0), "64");
        assert_eq!(count_label(2500.0), "2.5k");
        assert_eq!(count_label(160_000.0), "160k");
        assert_eq!(count_label(1_000_000.0), "1M");
    }

    #[test]
    fn wraps_at_spaces() {
        let lines = wrap("one two three four five six seven", 15.0, 80.0);
        assert!(lines.len() > 2, "{lines:?}");
        assert!(
            lines
                .iter()
                .all(|l| text_width(l, 15.0) <= 80.0 || !l.contains(' '))
        );
        assert_eq!(lines.join(" "), "one two three four five six seven");
    }

    #[test]
    fn draws_both_kinds() {
        let dir = std::env::temp_dir().join(format!("flux-demo-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bars = SecondsChart {
            title: "test".into(),
            x_label: "second".into(),
            y_label: "requests".into(),
            stacks: vec![("a".into(), vec![1.0, 2.0]), ("b".into(), vec![3.0, 0.0])],
            lines: vec![HLine {
                label: "limit".into(),
                y: 2.0,
                x: None,
                color: LIMIT_RED,
                style: LineStyle::Dashed,
            }],
            shades: vec![Shade {
                label: "outage".into(),
                from: 0.5,
                to: 1.5,
            }],
            notes: vec!["a note".into()],
        };
        bars.draw(&dir.join("bars.png")).unwrap();
        let lines = LineChart {
            title: "test".into(),
            x_label: "callers".into(),
            y_label: "ops/s".into(),
            x_scale: XScale::Log2,
            x_range: None,
            y_range: None,
            series: vec![Series {
                label: "s".into(),
                points: vec![(1.0, 10.0), (2.0, 20.0), (4.0, 25.0)],
                markers: true,
                style: LineStyle::Solid,
            }],
            notes: Vec::new(),
        };
        lines.draw(&dir.join("lines.png")).unwrap();
        for name in ["bars.png", "lines.png"] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            assert!(bytes.starts_with(b"\x89PNG"), "{name} is a PNG");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
