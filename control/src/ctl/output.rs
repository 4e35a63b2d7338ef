//! Rendering results: aligned text tables for people, JSON for scripts.
//!
//! Commands build small serde view structs (never the generated protobuf types, whose shape is
//! the wire's, not the CLI's) and hand them to [`emit`].

use std::io::Write;

use clap::ValueEnum;
use serde::Serialize;

use super::error::CtlError;

/// How results are printed on stdout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// Pretty-printed JSON, stable for scripts.
    Json,
}

/// A result that can be shown either way.
pub trait Render: Serialize {
    /// The text shown with `--output table`, ending in a newline.
    fn to_table(&self) -> String;
}

/// Writes `value` to `out` in `format`.
pub fn emit<W: Write, R: Render>(
    out: &mut W,
    format: OutputFormat,
    value: &R,
) -> Result<(), CtlError> {
    match format {
        OutputFormat::Table => out.write_all(value.to_table().as_bytes())?,
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, value)?;
            out.write_all(b"\n")?;
        }
    }
    out.flush()?;
    Ok(())
}

/// Columns separated by two spaces, each as wide as its widest cell; no trailing spaces.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank and extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let columns = self.headers.len();
        let lines: Vec<Vec<String>> = std::iter::once(&self.headers)
            .chain(&self.rows)
            .map(|cells| {
                (0..columns)
                    .map(|i| cells.get(i).map(|c| clean(c)).unwrap_or_default())
                    .collect()
            })
            .collect();
        let mut widths = vec![0; columns];
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut text = String::new();
        for line in &lines {
            let mut rendered = String::new();
            for (i, (cell, width)) in line.iter().zip(&widths).enumerate() {
                if i > 0 {
                    rendered.push_str("  ");
                }
                rendered.push_str(cell);
                let pad = width - cell.chars().count();
                rendered.extend(std::iter::repeat_n(' ', pad));
            }
            text.push_str(rendered.trim_end());
            text.push('\n');
        }
        text
    }
}

/// Text that came from a replica (error messages, names) must not break the table or send
/// escape sequences to the terminal, so control characters become spaces.
pub fn clean(cell: &str) -> String {
    cell.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A table cell for an optional number: the number, or `-`.
pub fn opt_cell<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// A table cell for optional text: the text, or `-` when absent or empty.
pub fn text_cell(value: Option<&str>) -> String {
    match value {
        Some(text) if !text.is_empty() => text.to_owned(),
        _ => "-".to_owned(),
    }
}

/// A table cell for a duration in milliseconds, in its two largest units (`850ms`, `42s`,
/// `3m05s`, `2h07m`, `4d03h`): precise enough to tell a new connection from an old one.
pub fn duration_cell(millis: u64) -> String {
    const SECOND: u64 = 1_000;
    const MINUTE: u64 = 60 * SECOND;
    const HOUR: u64 = 60 * MINUTE;
    const DAY: u64 = 24 * HOUR;
    match millis {
        m if m < SECOND => format!("{m}ms"),
        m if m < MINUTE => format!("{}s", m / SECOND),
        m if m < HOUR => format!("{}m{:02}s", m / MINUTE, m % MINUTE / SECOND),
        m if m < DAY => format!("{}h{:02}m", m / HOUR, m % HOUR / MINUTE),
        m => format!("{}d{:02}h", m / DAY, m % DAY / HOUR),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// Columns line up on the widest cell, rows end without padding, short rows are blank-filled.
    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut table = Table::new(&["ID", "ADDRESS", "STATE"]);
        table.row(vec!["1".into(), "127.0.0.1:7100".into(), "leader".into()]);
        table.row(vec!["22".into(), "h:1".into()]);
        assert_eq!(
            table.render(),
            "ID  ADDRESS         STATE\n\
             1   127.0.0.1:7100  leader\n\
             22  h:1\n"
        );
    }

    /// Width counts characters, not bytes, and control characters cannot break a row.
    #[test]
    fn tables_handle_unicode_and_control_characters() {
        let mut table = Table::new(&["A", "B"]);
        table.row(vec!["zoné".into(), "x\ny".into()]);
        table.row(vec!["z".into(), "\u{1b}[31m".into()]);
        assert_eq!(table.render(), "A     B\nzoné  x y\nz      [31m\n");
    }

    #[derive(Serialize)]
    struct Sample {
        n: u64,
    }

    impl Render for Sample {
        fn to_table(&self) -> String {
            format!("n is {}\n", self.n)
        }
    }

    /// The same value prints as its table text or as pretty JSON with a final newline.
    #[test]
    fn emit_writes_the_chosen_format() {
        let mut out = Vec::new();
        emit(&mut out, OutputFormat::Table, &Sample { n: 3 }).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "n is 3\n");
        let mut out = Vec::new();
        emit(&mut out, OutputFormat::Json, &Sample { n: 3 }).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\n  \"n\": 3\n}\n");
    }

    /// Durations show their two largest units, truncated, from milliseconds to days.
    #[test]
    fn durations_show_two_units() {
        let cells: Vec<String> = [0, 999, 1_000, 59_999, 185_000, 7_620_000, 356_400_000]
            .into_iter()
            .map(duration_cell)
            .collect();
        assert_eq!(
            cells,
            ["0ms", "999ms", "1s", "59s", "3m05s", "2h07m", "4d03h"]
        );
    }

    /// Absent values show as a dash so columns never collapse.
    #[test]
    fn optional_cells_show_a_dash() {
        assert_eq!(opt_cell::<u64>(None), "-");
        assert_eq!(opt_cell(Some(7)), "7");
        assert_eq!(text_cell(Some("")), "-");
        assert_eq!(text_cell(Some("a")), "a");
    }
}
