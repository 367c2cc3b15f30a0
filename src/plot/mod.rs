//! `homewright plot`: a topic's history as a chart. This module turns stored payloads into a
//! [`Series`] (numbers, or on/off states such as a relay's `ON`/`OFF`), and draws it as an SVG or PNG
//! file ([`chart`]) or as text that fits an 80-column terminal ([`terminal`]).
//!
//! Payloads are read as they were stored: a number (`21.5`), `ON`/`OFF`/`true`/`false`, or, with a JSON
//! path (`TOPIC:$.temperature`), the field of a JSON payload. Payloads that give no value (a status
//! text, JSON without the field) are skipped and counted, so a chart never invents a zero.

pub mod chart;
pub mod terminal;
pub mod time_axis;

use crate::store::query::QueryError;
use crate::store::{HistoryReader, SqlValue};

/// What to plot: a topic, and optionally a JSON path into its payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub topic: String,
    /// The keys and indexes of `$.a.b[0]`, in order.
    pub path: Vec<PathStep>,
    /// As the user wrote it, for titles.
    pub text: String,
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

impl Spec {
    /// Parses `TOPIC` or `TOPIC:$.field.sub[2]`.
    pub fn parse(text: &str) -> Result<Spec, String> {
        let (topic, path) = match text.split_once(":$") {
            Some((topic, path)) => (topic, parse_path(path).map_err(|e| format!("`{text}`: {e}"))?),
            None => (text, Vec::new()),
        };
        if topic.is_empty() || topic.contains(['+', '#']) {
            return Err(format!(
                "`{topic}` is not a topic to plot (one topic, no wildcards; e.g. greenhouse/temperature)"
            ));
        }
        Ok(Spec {
            topic: topic.to_string(),
            path,
            text: text.to_string(),
        })
    }
}

/// `.a.b[0]` (what follows `$`) into steps.
fn parse_path(path: &str) -> Result<Vec<PathStep>, String> {
    let mut steps = Vec::new();
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            if end == 0 {
                return Err("an empty key in the JSON path (write it like $.temperature)".into());
            }
            steps.push(PathStep::Key(after[..end].to_string()));
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let (index, tail) = after.split_once(']').ok_or("an unclosed `[` in the JSON path")?;
            let index = index
                .parse()
                .map_err(|_| format!("`[{index}]` is not an array index"))?;
            steps.push(PathStep::Index(index));
            rest = tail;
        } else {
            return Err("a JSON path goes on with `.key` or `[index]`, e.g. $.temperature".into());
        }
    }
    Ok(steps)
}

/// The values to draw, oldest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// (unix ms, value); on/off states are 1.0 and 0.0.
    pub points: Vec<(i64, f64)>,
    /// Every value was an on/off state: drawn as bands of "on" time rather than a line.
    pub on_off: bool,
    /// Stored messages on the topic that gave no value.
    pub skipped: usize,
}

/// A value read from one payload.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Number(f64),
    State(bool),
}

impl Series {
    /// Builds the series from `(ts, payload)` rows.
    pub fn from_payloads<'a>(rows: impl IntoIterator<Item = (i64, &'a [u8])>, spec: &Spec) -> Series {
        let mut points = Vec::new();
        let mut states = 0;
        let mut skipped = 0;
        for (ts, payload) in rows {
            match read_value(payload, &spec.path) {
                Some(Value::Number(n)) => points.push((ts, n)),
                Some(Value::State(on)) => {
                    states += 1;
                    points.push((ts, if on { 1.0 } else { 0.0 }));
                }
                None => skipped += 1,
            }
        }
        let on_off = states > 0 && states == points.len();
        Series {
            points,
            on_off,
            skipped,
        }
    }

    /// The lowest and highest value, or None when empty.
    pub fn range(&self) -> Option<(f64, f64)> {
        let mut values = self.points.iter().map(|p| p.1);
        let first = values.next()?;
        Some(values.fold((first, first), |(lo, hi), v| (lo.min(v), hi.max(v))))
    }

    /// The periods during which the state was on, as (from, to) in unix ms; the last one ends at
    /// `end` when nothing turned it off.
    pub fn on_periods(&self, end: i64) -> Vec<(i64, i64)> {
        let mut periods = Vec::new();
        let mut since = None;
        for &(ts, value) in &self.points {
            match (value > 0.5, since) {
                (true, None) => since = Some(ts),
                (false, Some(start)) => {
                    periods.push((start, ts));
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(start) = since {
            periods.push((start, end.max(start)));
        }
        periods
    }
}

fn read_value(payload: &[u8], path: &[PathStep]) -> Option<Value> {
    if path.is_empty() {
        let text = std::str::from_utf8(payload).ok()?.trim();
        return text_value(text);
    }
    let mut json: serde_json::Value = serde_json::from_slice(payload).ok()?;
    for step in path {
        json = match step {
            PathStep::Key(key) => json.get_mut(key.as_str())?.take(),
            PathStep::Index(index) => json.get_mut(*index)?.take(),
        };
    }
    match json {
        serde_json::Value::Number(n) => n.as_f64().map(Value::Number),
        serde_json::Value::Bool(b) => Some(Value::State(b)),
        serde_json::Value::String(s) => text_value(s.trim()),
        _ => None,
    }
}

fn text_value(text: &str) -> Option<Value> {
    if let Ok(number) = text.parse::<f64>() {
        return number.is_finite().then_some(Value::Number(number));
    }
    match text.to_ascii_lowercase().as_str() {
        "on" | "true" | "open" => Some(Value::State(true)),
        "off" | "false" | "closed" => Some(Value::State(false)),
        _ => None,
    }
}

/// Reads the topic's messages in `[from, to)` (unix ms) from the history.
pub async fn load(reader: &HistoryReader, spec: &Spec, from: i64, to: i64) -> Result<Series, QueryError> {
    load_bounded(reader, spec, (from, to), None).await
}

/// Like [`load`], failing once the messages pass `bounds` (a page must not take a Pi's memory for a
/// long period of a busy topic).
pub async fn load_bounded(
    reader: &HistoryReader,
    spec: &Spec,
    (from, to): (i64, i64),
    bounds: Option<crate::store::Bounds>,
) -> Result<Series, QueryError> {
    let result = reader
        .query_bounded(
            "SELECT ts, payload FROM messages WHERE topic = ? AND ts >= ? AND ts < ? ORDER BY ts, id",
            &[
                SqlValue::Text(spec.topic.clone()),
                SqlValue::Integer(from),
                SqlValue::Integer(to),
            ],
            None,
            bounds,
        )
        .await?;
    let rows = result.rows.iter().filter_map(|row| match row.as_slice() {
        [SqlValue::Integer(ts), SqlValue::Text(text)] => Some((*ts, text.as_bytes())),
        [SqlValue::Integer(ts), SqlValue::Blob(bytes)] => Some((*ts, bytes.as_slice())),
        _ => None,
    });
    Ok(Series::from_payloads(rows, spec))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(spec: &str, payloads: &[&str]) -> Series {
        let spec = Spec::parse(spec).unwrap();
        let rows = payloads.iter().enumerate().map(|(i, p)| (i as i64, p.as_bytes()));
        Series::from_payloads(rows, &spec)
    }

    #[test]
    fn numbers_and_json_fields_are_read_and_the_rest_skipped() {
        let plain = series("t", &["21.5", " 22\n", "warm", "{\"t\": 1}"]);
        assert_eq!(plain.points, vec![(0, 21.5), (1, 22.0)]);
        assert_eq!((plain.skipped, plain.on_off), (2, false));
        let field = series(
            "t:$.a.b[1]",
            &[
                "{\"a\":{\"b\":[0, 4.5]}}",
                "{\"a\":{}}",
                "7",
                "{\"a\":{\"b\":[1,\"8\"]}}",
            ],
        );
        assert_eq!(field.points, vec![(0, 4.5), (3, 8.0)]);
        assert_eq!(field.skipped, 2);
    }

    #[test]
    fn on_off_payloads_become_periods() {
        let relay = series("r", &["ON", "ON", "OFF", "on", "garbage"]);
        assert!(relay.on_off);
        assert_eq!(relay.on_periods(10), vec![(0, 2), (3, 10)]);
    }

    #[test]
    fn a_spec_names_one_topic_and_a_valid_path() {
        assert_eq!(
            Spec::parse("a/b:$.x[2]").unwrap().path,
            vec![PathStep::Key("x".into()), PathStep::Index(2)]
        );
        assert!(Spec::parse("a/+").is_err());
        assert!(Spec::parse("a:$.").is_err());
        assert!(Spec::parse("a:$x").is_err());
    }
}
