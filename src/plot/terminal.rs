//! The chart `homewright plot` prints without `--out`: text that fits an 80-column terminal. Each
//! column covers an equal slice of time and shows the range of the values in it (`│`, or `•` for one
//! value); on/off states are one band (`█` while on, `─` while off, `▒` for a column that was both, so
//! that a short off period in a long chart still shows). Under the axis, time labels at round local
//! times.

use std::fmt::Write;

use super::Series;
use super::time_axis::Ticks;
use crate::scheduler::Zone;

/// Columns of the plot area; with the labels the chart is [`WIDTH`] columns wide.
const PLOT_WIDTH: usize = 68;
/// Columns for the y labels and the axis.
const LABEL_WIDTH: usize = 10;
/// The widest line printed.
pub const WIDTH: usize = LABEL_WIDTH + PLOT_WIDTH;
/// Rows of the plot area for numbers.
const HEIGHT: usize = 12;

/// Renders `series` over `[from, to)` (unix ms) with `title` above it, times in `zone`.
pub fn render(title: &str, series: &Series, from: i64, to: i64, zone: &Zone) -> String {
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
    let (marks, labels) = time_axis(from, to, zone);
    let _ = writeln!(out, "{}└{marks}", " ".repeat(LABEL_WIDTH - 1));
    let _ = writeln!(out, "{}", labels.trim_end());
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
    // Milliseconds of "on" in each column, against the column's length: a column is on, off, or both.
    let column_start = |c: usize| from + (span as i128 * c as i128 / PLOT_WIDTH as i128) as i64;
    let mut on_ms = [0i64; PLOT_WIDTH];
    for (start, end) in series.on_periods(from + span) {
        let (first, last) = (column(start, from, span), column(end - 1, from, span));
        for (c, cell) in on_ms.iter_mut().enumerate().take(last.max(first) + 1).skip(first) {
            let overlap = end.min(column_start(c + 1)) - start.max(column_start(c));
            *cell += overlap.max(0);
        }
    }
    let band: String = on_ms
        .iter()
        .enumerate()
        .map(|(c, &on)| {
            let length = column_start(c + 1) - column_start(c);
            match on {
                0 => '─',
                on if on >= length => '█',
                _ => '▒',
            }
        })
        .collect();
    vec![format!("{:>width$}┤{band}", "█on ─off", width = LABEL_WIDTH - 1)]
}

/// The axis line with a `┬` at each tick, and the ticks' labels centred under them (round local
/// times; as many as fit with two spaces between them, none cut at the edge).
fn time_axis(from: i64, to: i64, zone: &Zone) -> (String, String) {
    let span = (to - from).max(1);
    // Room for labels as wide as "12-04 16:00" and a gap.
    let ticks = Ticks::new(from, to, zone, PLOT_WIDTH / 13);
    let mut marks: Vec<char> = vec!['─'; PLOT_WIDTH];
    let mut labels: Vec<char> = vec![' '; WIDTH];
    let mut free_from = 0;
    for &at in &ticks.at {
        let column = column(at, from, span);
        let label: Vec<char> = ticks.label(at).chars().collect();
        let centre = LABEL_WIDTH + column;
        let Some(start) = centre.checked_sub(label.len() / 2) else {
            continue;
        };
        if start < free_from || start + label.len() > WIDTH {
            continue;
        }
        marks[column] = '┬';
        labels[start..start + label.len()].copy_from_slice(&label);
        free_from = start + label.len() + 2;
    }
    (marks.into_iter().collect(), labels.into_iter().collect())
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
        let text = render(&"t/".repeat(60), &series, 0, 500_000, &Zone::utc());
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
        let text = render("relay", &series, 0, 100, &Zone::utc());
        let band = text.lines().nth(1).unwrap().split('┤').nth(1).unwrap();
        // 0..50 ms of 100 covers columns 0..=33 of 68.
        assert_eq!(band.matches('█').count(), 34, "{text}");
        assert_eq!(band.matches('─').count(), 34, "{text}");
    }

    #[test]
    fn a_short_off_period_in_a_long_chart_still_shows() {
        // On for two hours but for 8 s in the middle: each column covers about 106 s.
        let hour = 3_600_000;
        let series = Series {
            points: vec![(0, 1.0), (hour, 0.0), (hour + 8_000, 1.0)],
            on_off: true,
            skipped: 0,
        };
        let text = render("relay", &series, 0, 2 * hour, &Zone::utc());
        let band = text.lines().nth(1).unwrap().split('┤').nth(1).unwrap();
        assert_eq!(band.matches('▒').count(), 1, "{text}");
        assert_eq!(band.matches('█').count(), PLOT_WIDTH - 1, "{text}");
    }

    #[test]
    fn time_labels_sit_at_round_local_times_and_fit() {
        let zone = Zone::named("Europe/Amsterdam").unwrap();
        // 2026-12-04 10:00:17 UTC, 11:00:17 in Amsterdam, for six minutes.
        let from = 1_796_378_417_000;
        let series = Series {
            points: vec![(from, 1.0), (from + 60_000, 2.0)],
            on_off: false,
            skipped: 0,
        };
        let text = render("t", &series, from, from + 360_000, &zone);
        let labels = text.lines().last().unwrap();
        let words: Vec<&str> = labels.split_whitespace().collect();
        assert!(words.len() >= 3, "{text}");
        for word in &words {
            assert!(word.starts_with("11:0") && word.len() == 5, "{word} in {text}");
        }
        assert!(labels.chars().count() <= WIDTH, "{text}");
    }
}
