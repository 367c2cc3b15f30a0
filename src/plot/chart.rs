//! SVG and PNG charts with plotters: time on the x axis in local time, a line for numbers, shaded
//! bands for the periods a state was on.
//!
//! plotters measures and draws text with a font we must hand it (its `ab_glyph` backend; the `ttf`
//! one would link fontconfig and freetype, C libraries that complicate the Pi cross build). The font
//! is read at run time from the system's DejaVu Sans, which Debian and Raspberry Pi OS install with
//! almost everything (package `fonts-dejavu-core`), rather than adding 700 KB to the binary.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::Series;
use super::time_axis::Ticks;
use crate::scheduler::Zone;

/// Where the font is looked for, first found wins.
const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Pixel size of a chart.
const SIZE: (u32, u32) = (1000, 500);

const LINE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const BAND: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// The file formats a chart can be written in, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    /// The format for `path`'s extension.
    pub fn for_path(path: &Path) -> Result<Format, String> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            _ => Err(format!(
                "{}: write the chart to a .svg or .png file",
                path.display()
            )),
        }
    }
}

/// Time ticks on the x axis at most: room for labels as wide as "12-04 16:00".
const X_TICKS: usize = 8;

/// Room right of the plot for half of the last time label, which is centred on its tick.
const RIGHT_MARGIN: u32 = 56;

/// Draws `series` over `[from, to)` (unix ms) into `out`, with time in `zone`.
pub fn write(
    out: &Path,
    title: &str,
    series: &Series,
    from: i64,
    to: i64,
    zone: &Zone,
) -> Result<(), String> {
    load_font()?;
    let failed = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", out.display());
    match Format::for_path(out)? {
        Format::Svg => draw(
            SVGBackend::new(out, SIZE).into_drawing_area(),
            title,
            series,
            (from, to),
            zone,
        )
        .map_err(|e| failed(&e)),
        Format::Png => draw(
            BitMapBackend::new(out, SIZE).into_drawing_area(),
            title,
            series,
            (from, to),
            zone,
        )
        .map_err(|e| failed(&e)),
    }
}

/// Draws `series` over `[from, to)` as SVG text, for a page.
pub fn svg(title: &str, series: &Series, from: i64, to: i64, zone: &Zone) -> Result<String, String> {
    load_font()?;
    let mut out = String::new();
    draw(
        SVGBackend::with_string(&mut out, SIZE).into_drawing_area(),
        title,
        series,
        (from, to),
        zone,
    )
    .map_err(|e| format!("cannot draw the chart: {e}"))?;
    Ok(out)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    series: &Series,
    (from, to): (i64, i64),
    zone: &Zone,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let (low, high) = y_range(series);
    let ticks = Ticks::new(from, to, zone, X_TICKS);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .margin_right(RIGHT_MARGIN)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(
            (from..to.max(from + 1)).with_key_points(ticks.at.clone()),
            low..high,
        )?;
    let on_off = series.on_off;
    let y_label = |v: &f64| match (on_off, *v) {
        (true, v) if v >= 0.99 => "on".to_string(),
        (true, v) if v <= 0.01 => "off".to_string(),
        (true, _) => String::new(),
        (false, v) => format!("{v}"),
    };
    chart
        .configure_mesh()
        .x_labels(X_TICKS)
        .y_labels(if on_off { 2 } else { 8 })
        .x_label_formatter(&|ms| ticks.label(*ms))
        .y_label_formatter(&y_label)
        .label_style(("sans-serif", 14))
        .draw()?;
    if on_off {
        let bands = series
            .on_periods(to)
            .into_iter()
            .map(|(start, end)| Rectangle::new([(start, 0.0), (end, 1.0)], BAND.mix(0.35).filled()));
        chart.draw_series(bands)?;
    } else {
        chart.draw_series(LineSeries::new(
            series.points.iter().copied(),
            LINE.stroke_width(2),
        ))?;
        if series.points.len() < 100 {
            let dots = series.points.iter().map(|&p| Circle::new(p, 3, LINE.filled()));
            chart.draw_series(dots)?;
        }
    }
    root.present()
}

/// The y range: the data's, with a margin so the line does not run along the frame.
fn y_range(series: &Series) -> (f64, f64) {
    if series.on_off {
        return (0.0, 1.05);
    }
    match series.range() {
        Some((low, high)) if high > low => {
            let margin = (high - low) * 0.05;
            (low - margin, high + margin)
        }
        Some((value, _)) => (value - 1.0, value + 1.0),
        None => (0.0, 1.0),
    }
}

fn load_font() -> Result<(), String> {
    static LOADED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    LOADED
        .get_or_init(|| {
            let bytes = FONT_PATHS
                .iter()
                .find_map(|path| std::fs::read(path).ok())
                .ok_or_else(|| {
                    format!(
                        "no font for the chart's text: install DejaVu Sans (apt install fonts-dejavu-core); looked in {}",
                        FONT_PATHS.join(", ")
                    )
                })?;
            // plotters keeps fonts for the life of the process; this runs once per process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| "the DejaVu Sans font file is not a usable font".to_string())
        })
        .clone()
}
