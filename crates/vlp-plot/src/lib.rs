//! PNG charts for vlp: training curves, score histograms, recall against speed.
//!
//! A thin layer over `plotters` that knows nothing of models or indexes: callers hand it
//! [`Series`] of points, grouped into [`Panel`]s, or bin counts for a [`Histogram`]. Text is
//! drawn with an embedded DejaVu Sans Mono, so a chart looks the same on a machine without
//! fonts. Charts are drawn into a pixel buffer and encoded with `image` (which the rest of vlp
//! already builds, where plotters' own encoder would compile a second, older `image`), under a
//! temporary name that is then renamed, so a reader never sees half a PNG.

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use std::path::Path;
use std::sync::Once;

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PlotError {
    pub path: String,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, PlotError>;

const FONT: &str = "sans-serif";
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn fonts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let bytes: &'static [u8] = include_bytes!("../fonts/DejaVuSansMono.ttf");
        // only fails on a malformed font, and this one is compiled in
        let _ = register_font(FONT, FontStyle::Normal, bytes);
    });
}

/// One named line.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series { name: name.into(), points: points.into_iter().filter(|(x, y)| x.is_finite() && y.is_finite()).collect() }
    }
}

/// One chart of a figure: lines sharing axes.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Log-scaled x axis (queries/s spans decades).
    pub log_x: bool,
    /// Draw a marker at every point, for short series where the points are the data.
    pub markers: bool,
}

impl Panel {
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Panel { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), series: Vec::new(), log_x: false, markers: false }
    }
    pub fn with(mut self, s: Series) -> Self {
        self.series.push(s);
        self
    }
}

fn err(path: &Path, e: impl std::fmt::Display) -> PlotError {
    PlotError { path: path.display().to_string(), message: e.to_string() }
}

/// Padded [lo, hi] of some values; a flat series still gets a visible range.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { (hi - lo) * 0.05 } else { lo.abs().max(1.0) * 0.05 };
    (lo - pad, hi + pad)
}

/// Draws on a white RGB canvas of `size` and writes it to `path` as a PNG.
fn render(path: &Path, size: (u32, u32), draw: impl FnOnce(&Area) -> Drawn) -> Result<()> {
    let mut pixels = vec![0u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(path, e))?;
        draw(&root).map_err(|e| err(path, e))?;
        root.present().map_err(|e| err(path, e))?;
    }
    let mut png = std::io::Cursor::new(Vec::new());
    image::write_buffer_with_format(&mut png, &pixels, size.0, size.1, image::ExtendedColorType::Rgb8, image::ImageFormat::Png)
        .map_err(|e| err(path, e))?;
    vlp_atomic::write(path, png.get_ref()).map_err(|e| err(path, e))
}

type Drawn = std::result::Result<(), Box<dyn std::error::Error>>;

/// Draws `panels` in a grid of `columns`, each `cell` pixels, under a figure title.
pub fn panels_png(path: &Path, title: &str, panels: &[Panel], columns: usize, cell: (u32, u32)) -> Result<()> {
    fonts();
    let columns = columns.max(1);
    let rows = panels.len().div_ceil(columns).max(1);
    let size = (cell.0 * columns as u32, cell.1 * rows as u32 + 40);
    render(path, size, |root| {
        let root = root.titled(title, (FONT, 22))?;
        let areas = root.split_evenly((rows, columns));
        for (panel, area) in panels.iter().zip(areas.iter()) {
            draw_panel(panel, area)?;
        }
        Ok(())
    })
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

fn draw_panel(panel: &Panel, area: &Area) -> Drawn {
    let points = || panel.series.iter().flat_map(|s| s.points.iter());
    let (x0, x1) = range(points().map(|p| p.0));
    let (y0, y1) = range(points().map(|p| p.1));
    let mut builder = ChartBuilder::on(area);
    builder.caption(&panel.title, (FONT, 16)).margin(10).x_label_area_size(40).y_label_area_size(60);
    if panel.log_x {
        let lo = points().map(|p| p.0).filter(|x| *x > 0.0).fold(f64::INFINITY, f64::min);
        let lo = if lo.is_finite() { lo * 0.8 } else { 1.0 };
        let mut chart = builder.build_cartesian_2d((lo..x1.max(lo * 2.0)).log_scale(), y0..y1)?;
        chart.configure_mesh().x_desc(&panel.x_label).y_desc(&panel.y_label).label_style((FONT, 12)).draw()?;
        draw_series(&mut chart, panel)?;
    } else {
        let mut chart = builder.build_cartesian_2d(x0..x1, y0..y1)?;
        chart.configure_mesh().x_desc(&panel.x_label).y_desc(&panel.y_label).label_style((FONT, 12)).draw()?;
        draw_series(&mut chart, panel)?;
    }
    Ok(())
}

fn draw_series<'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    panel: &Panel,
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    X: plotters::coord::ranged1d::Ranged<ValueType = f64>,
    Y: plotters::coord::ranged1d::Ranged<ValueType = f64>,
{
    for (i, s) in panel.series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let drawn = chart.draw_series(LineSeries::new(s.points.iter().copied(), colour.stroke_width(2)))?;
        drawn.label(&s.name).legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2)));
        if panel.markers {
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?;
        }
    }
    if panel.series.len() > 1 || panel.series.iter().any(|s| !s.name.is_empty()) {
        chart
            .configure_series_labels()
            .label_font((FONT, 12))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    Ok(())
}

/// Counts in equal bins over `[lo, hi]`, with an optional marked threshold. Callers that stream
/// (the curation filter) keep only the counts; [`Histogram::of_values`] bins a slice.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    pub title: String,
    pub x_label: String,
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<u64>,
    /// A vertical line and its label, e.g. the filter's threshold.
    pub marker: Option<(f64, String)>,
}

impl Histogram {
    /// Bins `values` over their own range (padded by 5%) into `bins` bins.
    pub fn of_values(title: impl Into<String>, x_label: impl Into<String>, values: &[f64], bins: usize) -> Self {
        let (lo, hi) = range(values.iter().copied().filter(|v| v.is_finite()));
        let counts = bin_counts(values, lo, hi, bins);
        Histogram { title: title.into(), x_label: x_label.into(), lo, hi, counts, marker: None }
    }

    pub fn with_marker(mut self, x: f64, label: impl Into<String>) -> Self {
        self.marker = Some((x, label.into()));
        self
    }
}

/// Bin counts of `values` over [lo, hi] in `bins` equal bins.
pub fn bin_counts(values: &[f64], lo: f64, hi: f64, bins: usize) -> Vec<u64> {
    let n = bins.max(1);
    let mut counts = vec![0u64; n];
    for &v in values.iter().filter(|v| v.is_finite()) {
        counts[bin_of(v, lo, hi, n)] += 1;
    }
    counts
}

/// The bin of `v` among `bins` equal bins over [lo, hi]; values outside go to the end bins.
pub fn bin_of(v: f64, lo: f64, hi: f64, bins: usize) -> usize {
    let width = (hi - lo) / bins as f64;
    let i = if width > 0.0 { ((v - lo) / width).floor() as isize } else { 0 };
    i.clamp(0, bins as isize - 1) as usize
}

pub fn histogram_png(path: &Path, h: &Histogram, size: (u32, u32)) -> Result<()> {
    fonts();
    let (lo, hi) = (h.lo, if h.hi > h.lo { h.hi } else { h.lo + 1.0 });
    let counts = if h.counts.is_empty() { vec![0] } else { h.counts.clone() };
    let width = (hi - lo) / counts.len() as f64;
    let top = counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.1;
    render(path, size, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&h.title, (FONT, 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0.0..top)?;
        chart.configure_mesh().x_desc(&h.x_label).y_desc("count").label_style((FONT, 12)).draw()?;
        chart.draw_series(counts.iter().enumerate().map(|(i, &c)| {
            let x = lo + i as f64 * width;
            Rectangle::new([(x, 0.0), (x + width, c as f64)], COLOURS[0].mix(0.7).filled())
        }))?;
        if let Some((x, label)) = &h.marker {
            let red = COLOURS[3];
            chart
                .draw_series(LineSeries::new(vec![(*x, 0.0), (*x, top)], red.stroke_width(2)))?
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], red.stroke_width(2)));
            chart.configure_series_labels().label_font((FONT, 12)).background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_the_range_and_clamp_the_top_edge() {
        assert_eq!(bin_counts(&[0.0, 0.1, 0.5, 0.99, 1.0, f64::NAN], 0.0, 1.0, 2), vec![2, 3]);
        assert_eq!(bin_counts(&[5.0, 5.0], 5.0, 5.0, 3), vec![2, 0, 0]);
    }

    #[test]
    fn writes_decodable_pngs_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("curves.png");
        let loss =
            Panel::new("loss", "step", "loss").with(Series::new("train", (0..50).map(|i| (i as f64, 3.0 / (1.0 + i as f64))).collect()));
        let empty = Panel::new("nothing yet", "step", "R@1");
        let speed = Panel { log_x: true, markers: true, ..Panel::new("recall vs speed", "queries/s", "recall@10") }
            .with(Series::new("a", vec![(100.0, 0.9), (1000.0, 0.8), (f64::NAN, 1.0)]))
            .with(Series::new("b", vec![(300.0, 0.95)]));
        panels_png(&p, "run", &[loss, empty, speed], 2, (400, 300)).unwrap();
        let png = image::open(&p).unwrap().to_rgb8();
        assert_eq!(png.dimensions(), (800, 640));
        let inked = png.pixels().filter(|px| px.0 != [255, 255, 255]).count();
        assert!(inked > 5_000, "only {inked} pixels drawn");
        let values: Vec<f64> = (0..200).map(|i| (i as f64 / 200.0).powi(2)).collect();
        let h = Histogram::of_values("scores", "cosine", &values, 20).with_marker(0.3, "threshold 0.3");
        assert_eq!(h.counts.iter().sum::<u64>(), 200);
        histogram_png(&dir.path().join("hist.png"), &h, (500, 300)).unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
