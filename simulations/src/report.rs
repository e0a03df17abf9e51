//! Output of a scenario: CSV files, SVG plots drawn with plotters, and a summary table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::*;

/// Rows of cells under a header: written as CSV, or rendered as an aligned table for the terminal.
#[derive(Clone, Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// A table meant for a CSV file.
pub type Csv = Table;

impl Table {
    /// A table with these columns.
    pub fn new(header: &[&str]) -> Self {
        Table { header: header.iter().map(|s| s.to_string()).collect(), rows: Vec::new() }
    }

    /// Appends a row (cells already formatted).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The CSV text.
    pub fn text(&self) -> String {
        let mut s = self.header.join(",");
        s.push('\n');
        for r in &self.rows {
            s.push_str(&r.join(","));
            s.push('\n');
        }
        s
    }

    /// Writes the table as CSV to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.text()).with_context(|| format!("writing {}", path.display()))
    }

    /// The rendered table (markdown-compatible).
    pub fn render(&self) -> String {
        let cols = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in width.iter().enumerate().take(cols) {
                let c = cells.get(i).map_or("", String::as_str);
                let _ = write!(s, " {c:<w$} |");
            }
            s.push('\n');
            s
        };
        let mut out = line(&self.header);
        out.push('|');
        for w in &width {
            out.push_str(&"-".repeat(w + 2));
            out.push('|');
        }
        out.push('\n');
        for r in &self.rows {
            out.push_str(&line(r));
        }
        out
    }
}

/// One line of a plot.
#[derive(Clone, Debug)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// Points in x order.
    pub points: Vec<(f64, f64)>,
    /// Dashed reference line (e.g. a paper's figure or log2 N) rather than a measurement.
    pub reference: bool,
}

impl Series {
    /// A measured series.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, reference: false }
    }

    /// A reference series, drawn dashed without markers.
    pub fn reference(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points, reference: true }
    }
}

/// How to draw a plot.
#[derive(Clone, Debug)]
pub struct Plot {
    /// Title at the top.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic x axis.
    pub log_x: bool,
    /// Fixed y range, else from the data (from 0).
    pub y_range: Option<(f64, f64)>,
}

impl Plot {
    /// A linear plot.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Plot { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), log_x: false, y_range: None }
    }
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

fn bounds(series: &[Series], log_x: bool) -> (f64, f64, f64) {
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).filter(|x| x.is_finite());
    let ys = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).filter(|y| y.is_finite());
    let (mut x0, mut x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    if log_x {
        x0 = x0.max(1e-9);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let y1 = ys.fold(0.0f64, f64::max);
    (x0, x1, if y1 > 0.0 { y1 * 1.1 } else { 1.0 })
}

/// Draws `series` as lines with markers (references dashed) into an SVG at `path`; the two
/// branches differ only in the x axis type (linear or logarithmic).
pub fn line_plot(path: &Path, plot: &Plot, series: &[Series]) -> Result<()> {
    let (x0, x1, ymax) = bounds(series, plot.log_x);
    let (y0, y1) = plot.y_range.unwrap_or((0.0, ymax));
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut b = ChartBuilder::on(&root);
    b.caption(&plot.title, ("sans-serif", 22)).margin(16).x_label_area_size(46).y_label_area_size(64);
    if plot.log_x {
        let mut chart = b.build_cartesian_2d((x0..x1).log_scale(), y0..y1).map_err(plot_err)?;
        chart.configure_mesh().x_desc(plot.x_label.as_str()).y_desc(plot.y_label.as_str()).draw().map_err(plot_err)?;
        draw_series(&mut chart, series)?;
    } else {
        let mut chart = b.build_cartesian_2d(x0..x1, y0..y1).map_err(plot_err)?;
        chart.configure_mesh().x_desc(plot.x_label.as_str()).y_desc(plot.y_label.as_str()).draw().map_err(plot_err)?;
        draw_series(&mut chart, series)?;
    }
    root.present().map_err(plot_err)?;
    Ok(())
}

fn draw_series<'a, DB, X>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, plotters::coord::types::RangedCoordf64>>,
    series: &[Series],
) -> Result<()>
where
    DB: DrawingBackend + 'a,
    X: Ranged<ValueType = f64>,
{
    for (i, s) in series.iter().enumerate() {
        let color = COLORS.get(i % COLORS.len()).copied().unwrap_or(BLACK);
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
        if s.reference {
            chart
                .draw_series(DashedLineSeries::new(pts, 6, 4, color.stroke_width(2)))
                .map_err(plot_err)?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        } else {
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(plot_err)?
                .label(s.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(plot_err)?;
        }
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.85)).border_style(BLACK).draw().map_err(plot_err)?;
    Ok(())
}

fn plot_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("plot: {e:?}")
}

/// Creates `dir` and returns a joiner for files in it.
pub fn out_dir(dir: &Path) -> Result<impl Fn(&str) -> PathBuf + use<>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let d = dir.to_path_buf();
    Ok(move |name: &str| d.join(name))
}

/// Percentile `p` (0–100) of sorted values (nearest rank); 0 when empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied().unwrap_or_default()
}

/// Mean of values; 0 when empty.
pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 }
}

/// Bytes as MB with one decimal.
pub fn mb(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}
