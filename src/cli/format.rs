//! Result sets as a table for people, CSV for spreadsheets, JSON for scripts.

use std::io::{self, Write};

use crate::store::{QueryResult, SqlValue};

/// Output format of `query`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// Writes `result` in `format`.
pub fn write_result(out: &mut impl Write, result: &QueryResult, format: Format) -> io::Result<()> {
    match format {
        Format::Table => table(out, result),
        Format::Csv => csv(out, result),
        Format::Json => json(out, result),
    }
}

/// A cell as text: blobs as an SQL hex literal, so bytes that are not text stay readable and exact.
fn text(value: &SqlValue) -> String {
    match value {
        SqlValue::Null => "NULL".into(),
        SqlValue::Integer(i) => i.to_string(),
        SqlValue::Real(f) => f.to_string(),
        SqlValue::Text(t) => t.clone(),
        SqlValue::Blob(b) => format!(
            "x'{}'",
            b.iter().map(|byte| format!("{byte:02x}")).collect::<String>()
        ),
    }
}

fn table(out: &mut impl Write, result: &QueryResult) -> io::Result<()> {
    // Control characters would break the grid; show them escaped.
    let cell = |v: &SqlValue| {
        text(v)
            .escape_debug()
            .to_string()
            .replace("\\\"", "\"")
            .replace("\\'", "'")
    };
    let rows: Vec<Vec<String>> = result.rows.iter().map(|r| r.iter().map(cell).collect()).collect();
    let mut widths: Vec<usize> = result.columns.iter().map(|c| c.chars().count()).collect();
    for row in &rows {
        for (i, value) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(value.chars().count());
            }
        }
    }
    let line = |out: &mut dyn Write, cells: &[String]| -> io::Result<()> {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        writeln!(out, "{}", padded.join(" | ").trim_end())
    };
    line(out, &result.columns)?;
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    writeln!(out, "{}", rule.join("-+-"))?;
    for row in &rows {
        line(out, row)?;
    }
    writeln!(
        out,
        "({} row{})",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    )
}

/// A CSV field, quoted when it needs to be (RFC 4180).
pub(super) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn csv(out: &mut impl Write, result: &QueryResult) -> io::Result<()> {
    let field = csv_field;
    let header: Vec<String> = result.columns.iter().map(|c| field(c)).collect();
    writeln!(out, "{}", header.join(","))?;
    for row in &result.rows {
        let cells: Vec<String> = row
            .iter()
            .map(|v| {
                if *v == SqlValue::Null {
                    String::new()
                } else {
                    field(&text(v))
                }
            })
            .collect();
        writeln!(out, "{}", cells.join(","))?;
    }
    Ok(())
}

fn json(out: &mut impl Write, result: &QueryResult) -> io::Result<()> {
    let rows: Vec<serde_json::Value> = result
        .rows
        .iter()
        .map(|row| {
            let object = result.columns.iter().cloned().zip(row.iter().map(|v| match v {
                SqlValue::Null => serde_json::Value::Null,
                SqlValue::Integer(i) => (*i).into(),
                SqlValue::Real(f) => {
                    serde_json::Number::from_f64(*f).map_or(serde_json::Value::Null, Into::into)
                }
                other => text(other).into(),
            }));
            serde_json::Value::Object(object.collect())
        })
        .collect();
    serde_json::to_writer_pretty(&mut *out, &rows)?;
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> QueryResult {
        QueryResult {
            columns: vec!["topic".into(), "payload".into(), "n".into()],
            rows: vec![
                vec![
                    SqlValue::Text("a/b".into()),
                    SqlValue::Text("say \"hi\", then\nbye".into()),
                    SqlValue::Integer(3),
                ],
                vec![
                    SqlValue::Text("c".into()),
                    SqlValue::Blob(vec![0xff, 0x00]),
                    SqlValue::Null,
                ],
            ],
        }
    }

    fn render(format: Format) -> String {
        let mut out = Vec::new();
        write_result(&mut out, &sample(), format).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn table_aligns_columns_and_escapes_newlines() {
        assert_eq!(
            render(Format::Table),
            "topic | payload             | n\n\
             ------+---------------------+-----\n\
             a/b   | say \"hi\", then\\nbye | 3\n\
             c     | x'ff00'             | NULL\n\
             (2 rows)\n"
        );
    }

    #[test]
    fn csv_quotes_what_needs_quoting() {
        assert_eq!(
            render(Format::Csv),
            "topic,payload,n\na/b,\"say \"\"hi\"\", then\nbye\",3\nc,x'ff00',\n"
        );
    }

    #[test]
    fn json_keeps_types() {
        let value: serde_json::Value = serde_json::from_str(&render(Format::Json)).unwrap();
        assert_eq!(value[0]["n"], 3);
        assert_eq!(value[1]["n"], serde_json::Value::Null);
        assert_eq!(value[1]["payload"], "x'ff00'");
    }
}
