//! The chart `homewright plot` prints without `--out`: text that fits an 80-column terminal. Each
//! column covers an equal slice of time and shows the range of the values in it (`│`, or `•` for one
//! value); on/off states are one band (`█` while on).

use std::fmt::Write;

use super::Series;
use super::chart::time_label;

/// Columns of the plot area; with the labels the chart is [`WIDTH`] columns wide.
const PLOT_WIDTH: usize = 68;
/// Columns for the y labels and the axis.
const LABEL_WIDTH: usize = 10;
/// The widest line printed.
pub const WIDTH: usize = LABEL_WIDTH + PLOT_WIDTH;
/// Rows of the plot area for numbers.
const HEIGHT: usize = 12;

/// Renders `series` over `[from, to)` (unix ms) with `title` above it.
pub fn render(title: &str, series: &Series, from: i64, to: i64) -> String {
    let mut out = String::new();
    let values = match series.range() {
        Some((low, high)) if !series.on_off => format!(", {} .. {}", number(low), number(high)),
        _ => String::new(),
    };
    let count = series.points.len();
    let plural = if count == 1 { "" } else { "s" };
    let mut heading = format!("{title}  ({count} value{plural}{values})");
    truncate(&mut heading, WIDTH);
    let _ = writeln!(out, "{heading}");
    let span = (to - from).max(1);
    let rows = if series.on_off {
        on_off_rows(series, from, span)
    } else {
        number_rows(series, from, span)
    };
    for row in rows {
        let _ = writeln!(out, "{}", row.trim_end());
    }
    let _ = writeln!(out, "{}└{}", " ".repeat(LABEL_WIDTH - 1), "─".repeat(PLOT_WIDTH));
    let _ = writeln!(out, "{}", time_axis(from, to));
    out
}

fn column(ts: i64, from: i64, span: i64) -> usize {
    let offset = (ts - from).clamp(0, span - 1) as i128;
    (offset * PLOT_WIDTH as i128 / span as i128) as usize
}

fn number_rows(series: &Series, from: i64, span: i64) -> Vec<String> {
    let Some((low, high)) = series.range() else {
        return vec![format!(
            "{}│ (no values in this period)",
            " ".repeat(LABEL_WIDTH - 1)
        )];
    };
    // One distinct value: centre it rather than pin it to the bottom.
    let (low, high) = if high > low {
        (low, high)
    } else {
        (low - 1.0, high + 1.0)
    };
    let scale = high - low;
    // Row 0 is the top (high); a value maps to the nearest row.
    let row_of = |v: f64| HEIGHT - 1 - (((v - low) / scale) * (HEIGHT - 1) as f64).round() as usize;
    let mut columns: Vec<Option<(usize, usize)>> = vec![None; PLOT_WIDTH];
    for &(ts, value) in &series.points {
        let row = row_of(value);
        let cell = &mut columns[column(ts, from, span)];
        *cell = Some(match *cell {
            Some((top, bottom)) => (top.min(row), bottom.max(row)),
            None => (row, row),
        });
    }
    (0..HEIGHT)
        .map(|row| {
            let label = match row {
                0 => number(high),
                r if r == HEIGHT - 1 => number(low),
                r if r == HEIGHT / 2 => number(high - scale * r as f64 / (HEIGHT - 1) as f64),
                _ => String::new(),
            };
            let axis = if label.is_empty() { '│' } else { '┤' };
            let mut line = format!("{label:>width$}{axis}", width = LABEL_WIDTH - 1);
            for cell in &columns {
                line.push(match cell {
                    Some((top, bottom)) if top == bottom && *top == row => '•',
                    Some((top, bottom)) if (*top..=*bottom).contains(&row) => '│',
                    _ => ' ',
                });
            }
            line
        })
        .collect()
}

fn on_off_rows(series: &Series, from: i64, span: i64) -> Vec<String> {
    let mut on = [false; PLOT_WIDTH];
    for (start, end) in series.on_periods(from + span) {
        let (first, last) = (column(start, from, span), column(end - 1, from, span));
        for cell in &mut on[first..=last.max(first)] {
            *cell = true;
        }
    }
    let band: String = on.iter().map(|&on| if on { '█' } else { '─' }).collect();
    vec![format!("{:>width$}┤{band}", "█on ─off", width = LABEL_WIDTH - 1)]
}

/// Start, middle and end times under the axis.
fn time_axis(from: i64, to: i64) -> String {
    let span = to - from;
    let start = time_label(from, span);
    let middle = time_label(from + span / 2, span);
    let end = time_label(to, span);
    let mut line = " ".repeat(LABEL_WIDTH);
    line.push_str(&start);
    let middle_at = LABEL_WIDTH + PLOT_WIDTH / 2 - middle.chars().count() / 2;
    let end_at = WIDTH - end.chars().count();
    while line.chars().count() < middle_at {
        line.push(' ');
    }
    line.push_str(&middle);
    while line.chars().count() < end_at {
        line.push(' ');
    }
    line.push_str(&end);
    line
}

/// A value short enough for the label column.
fn number(value: f64) -> String {
    let text = format!("{value:.2}");
    let text = text.trim_end_matches('0').trim_end_matches('.').to_string();
    if text.len() < LABEL_WIDTH - 1 {
        text
    } else {
        format!("{value:.2e}")
    }
}

fn truncate(text: &mut String, width: usize) {
    if let Some((index, _)) = text.char_indices().nth(width) {
        text.truncate(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_fits_80_columns_and_extremes_are_labelled() {
        let points = (0..500)
            .map(|i| (i * 1000, (i as f64 / 30.0).sin() * 1234.5))
            .collect();
        let series = Series {
            points,
            on_off: false,
            skipped: 0,
        };
        let text = render(&"t/".repeat(60), &series, 0, 500_000);
        for line in text.lines() {
            assert!(
                line.chars().count() <= 80,
                "{} columns: {line}",
                line.chars().count()
            );
        }
        assert_eq!(text.lines().count(), 1 + HEIGHT + 2, "{text}");
        assert!(text.contains("1234.4"), "{text}");
        assert!(text.contains('•') || text.contains('│'), "{text}");
    }

    #[test]
    fn on_periods_are_a_band_in_their_columns() {
        let series = Series {
            points: vec![(0, 1.0), (50, 0.0)],
            on_off: true,
            skipped: 0,
        };
        let text = render("relay", &series, 0, 100);
        let band = text.lines().nth(1).unwrap().split('┤').nth(1).unwrap();
        // 0..50 ms of 100 covers columns 0..=33 of 68.
        assert_eq!(band.matches('█').count(), 34, "{text}");
        assert_eq!(band.matches('─').count(), 34, "{text}");
    }
}
