//! The printed report: sections of aligned plain-text tables, then the targets; and the data
//! of its pictures (drawn by `pictures.rs`).

use std::fmt::Write as _;

pub(crate) struct Section {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    notes: Vec<String>,
}

impl Section {
    pub(crate) fn new(title: &str, headers: &[&str]) -> Section {
        Section {
            title: title.to_owned(),
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    fn render(&self, out: &mut String) {
        let columns = self.headers.len();
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate().take(columns) {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let _ = writeln!(out, "{}", self.title);
        let line = |out: &mut String, cells: &[String]| {
            let mut text = String::new();
            for (i, width) in widths.iter().enumerate() {
                let cell = cells.get(i).map_or("", String::as_str);
                if i == 0 {
                    let _ = write!(text, "{cell:<width$}");
                } else {
                    let _ = write!(text, "  {cell:>width$}");
                }
            }
            let _ = writeln!(out, "{}", text.trim_end());
        };
        line(out, &self.headers);
        let total: usize = widths.iter().sum::<usize>() + 2 * (columns.saturating_sub(1));
        let _ = writeln!(out, "{}", "-".repeat(total));
        for row in &self.rows {
            line(out, row);
        }
        for note in &self.notes {
            let _ = writeln!(out, "  * {note}");
        }
        out.push('\n');
    }
}

/// How a figure compares with its target.
#[derive(Clone, Copy)]
pub(crate) enum Cmp {
    AtLeast,
    AtMost,
}

pub(crate) struct Target {
    pub(crate) id: &'static str,
    pub(crate) what: String,
    pub(crate) figure: f64,
    pub(crate) cmp: Cmp,
    pub(crate) threshold: f64,
}

impl Target {
    pub(crate) fn met(&self) -> Option<bool> {
        if !self.figure.is_finite() {
            return None;
        }
        Some(match self.cmp {
            Cmp::AtLeast => self.figure >= self.threshold,
            Cmp::AtMost => self.figure <= self.threshold,
        })
    }

    pub(crate) fn wanted(&self) -> String {
        match self.cmp {
            Cmp::AtLeast => format!(">= {:.2}x", self.threshold),
            Cmp::AtMost => format!("<= {:.2}x", self.threshold),
        }
    }

    pub(crate) fn verdict(&self) -> &'static str {
        // A debug build (CI's smoke run) says nothing about a target: no verdict.
        if cfg!(debug_assertions) {
            return "(debug build)";
        }
        match self.met() {
            Some(true) => "MET",
            Some(false) => "MISSED",
            None => "n/a",
        }
    }
}

#[derive(Default)]
pub(crate) struct Report {
    pub(crate) preamble: Vec<String>,
    pub(crate) sections: Vec<Section>,
    pub(crate) targets: Vec<Target>,
    pub(crate) quick: bool,
    /// What the pictures show, filled by the parts that measure it.
    pub(crate) pictures: PictureData,
}

/// The figures behind the report's pictures.
#[derive(Default)]
pub(crate) struct PictureData {
    /// Part 1's alternating caller: the latency distribution of `flux.ping` (PING on Flux's
    /// connection) and of `flux.check`, as (latency in µs, share of calls at or below it in %).
    pub(crate) ping_cdf: Vec<(f64, f64)>,
    pub(crate) check_cdf: Vec<(f64, f64)>,
    /// p50 and p99 in µs of each, for the legend: (ping, check).
    pub(crate) ping_p50_p99: (f64, f64),
    pub(crate) check_p50_p99: (f64, f64),
    /// Part 1's sweep: decisions per second of `flux.check` by number of callers, and of
    /// `redis-benchmark` running the same script (`None` without `redis-benchmark`).
    pub(crate) callers: Vec<CallersPoint>,
    /// How many distinct client keys the sweep's checks spread over.
    pub(crate) callers_keys: usize,
}

/// One point of the callers sweep.
pub(crate) struct CallersPoint {
    pub(crate) callers: usize,
    pub(crate) flux_rps: f64,
    pub(crate) evalsha_rps: Option<f64>,
}

impl Report {
    pub(crate) fn target(
        &mut self,
        id: &'static str,
        what: &str,
        figure: f64,
        cmp: Cmp,
        threshold: f64,
    ) {
        self.targets.push(Target {
            id,
            what: what.to_owned(),
            figure,
            cmp,
            threshold,
        });
    }

    /// The verdict column for the row that carries target `id`.
    pub(crate) fn verdict_of(&self, id: &str) -> String {
        self.targets
            .iter()
            .find(|t| t.id == id)
            .map_or_else(String::new, |t| format!("{} {}", t.wanted(), t.verdict()))
    }

    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        for line in &self.preamble {
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
        for section in &self.sections {
            section.render(&mut out);
        }
        let mut targets = Section::new("Targets", &["target", "figure", "wanted", "verdict"]);
        for t in &self.targets {
            targets.row(vec![
                t.what.clone(),
                ratio(t.figure),
                t.wanted(),
                t.verdict().to_owned(),
            ]);
        }
        if self.quick {
            targets.note(
                "quick mode: counts are tiny and timings are noise; verdicts are printed, never asserted",
            );
        }
        targets.render(&mut out);
        out
    }
}

/// `12,345` (operations per second and other counts).
pub(crate) fn count(v: f64) -> String {
    if !v.is_finite() {
        return "-".to_owned();
    }
    let digits = format!("{:.0}", v.round());
    let (sign, digits) = digits
        .strip_prefix('-')
        .map_or(("", digits.as_str()), |d| ("-", d));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// Microseconds with 3 significant figures or so.
pub(crate) fn micros(v: f64) -> String {
    if !v.is_finite() {
        "-".to_owned()
    } else if v < 10.0 {
        format!("{v:.2}")
    } else if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

pub(crate) fn opt_micros(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), micros)
}

pub(crate) fn ratio(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.2}x")
    } else {
        "-".to_owned()
    }
}
