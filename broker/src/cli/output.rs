//! What a command prints: a table for people or JSON for scripts, and errors with what to do.

use std::io::Write;

use serde_json::{json, Value};

use super::error::CliError;

/// A command's result, in both forms. `problems` are failures of some of the things asked
/// while others succeeded (one topic of several not deleted): printed after the result, and
/// they make the exit non-zero.
pub struct Printed {
    pub text: String,
    pub json: Value,
    pub problems: Vec<CliError>,
}

impl Printed {
    pub fn new(text: String, json: Value) -> Self {
        Printed {
            text,
            json,
            problems: Vec::new(),
        }
    }

    /// Writes the chosen form to stdout. A closed pipe (`| head`) is not an error worth a
    /// message, so write errors are dropped.
    pub fn emit(&self, json: bool) {
        let mut out = std::io::stdout().lock();
        // A command that streamed its output as it went has nothing left to print.
        let _ = if json {
            if self.json.is_null() {
                return;
            }
            writeln!(out, "{}", self.json)
        } else {
            write!(out, "{}", self.text)
        };
        let _ = out.flush();
    }
}

/// Prints `error` and what to do about it on stderr; as one JSON object with `--json`.
pub fn report(error: &CliError, json: bool) {
    let mut err = std::io::stderr().lock();
    let _ = if json {
        let value = json!({
            "error": error.kafka_name().unwrap_or_else(|| "CLIENT_ERROR".to_owned()),
            "message": error.to_string(),
            "what_to_do": error.advice(),
        });
        writeln!(err, "{value}")
    } else {
        writeln!(err, "sluice: {error}\n  what to do: {}", error.advice())
    };
}

/// Left-aligned columns two spaces apart, headers first.
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&'static str]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        debug_assert_eq!(cells.len(), self.headers.len(), "a row for every column");
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let headers: Vec<String> = self.headers.iter().map(|h| (*h).to_owned()).collect();
        for row in std::iter::once(&headers).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, width)) in row.iter().zip(&widths).enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  "));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// A list of broker ids as a table cell: `1,2,3`.
pub fn ids(list: &[i32]) -> String {
    let shown: Vec<String> = list.iter().map(i32::to_string).collect();
    shown.join(",")
}

/// An optional number as a table cell: `-` when absent.
pub fn cell<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(headers: &[&'static str], rows: &[&[&str]], expected: &str) {
        let mut table = Table::new(headers);
        for row in rows {
            table.row(row.iter().map(|c| (*c).to_owned()).collect());
        }
        assert_eq!(table.render(), expected);
    }

    #[test]
    fn columns_line_up() {
        check(
            &["TOPIC", "PARTITIONS"],
            &[&["a-long-name", "3"], &["b", "12"]],
            "TOPIC        PARTITIONS\na-long-name  3\nb            12\n",
        );
        check(&["A", "B"], &[], "A  B\n");
    }
}
