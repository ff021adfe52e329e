//! A sweep's results as tables: `results.csv` (every parameter and every summary field of
//! every run) and `results.md` (the varied parameters against throughput and latency).

use std::fmt::Write as _;
use std::path::Path;

use super::plan::{self, Plan, Run};
use super::SweepError;

/// One run's outcome: the summary fields its child printed, or why there are none.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub run: Run,
    pub fields: Vec<(String, String)>,
    pub error: Option<String>,
}

impl RunResult {
    pub fn ok(run: Run, fields: Vec<(String, String)>) -> Self {
        Self {
            run,
            fields,
            error: None,
        }
    }

    pub fn failed(run: Run, reason: String) -> Self {
        Self {
            run,
            fields: Vec::new(),
            error: Some(reason),
        }
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    pub fn number(&self, name: &str) -> Option<f64> {
        self.field(name)?.parse().ok()
    }

    /// Throughput in MB/s: message values, as producers and end-to-end runs count them.
    pub fn mb_per_s(&self) -> Option<f64> {
        self.number("payload_mb_per_s")
            .or_else(|| self.number("batch_mb_per_s"))
    }

    /// A latency percentile in milliseconds, by its CSV label (p50, p99_9, max...).
    pub fn latency_ms(&self, label: &str) -> Option<f64> {
        self.number(&format!("latency_{label}_us"))
            .map(|us| us / 1000.0)
    }

    /// The value of parameter `name` in this run.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.run
            .broker
            .iter()
            .chain(&self.run.client)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn brief(&self) -> String {
        if let Some(error) = &self.error {
            return format!("failed: {error}");
        }
        format!(
            "{} msg/s, {} MB/s, p99 {} ms",
            format_number(self.number("msgs_per_s"), 0),
            format_number(self.mb_per_s(), 1),
            format_number(self.latency_ms("p99"), 3),
        )
    }
}

fn format_number(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The fields of a `--csv` summary: a header line and one row. None if it is not one.
pub fn parse_summary_csv(text: &str) -> Option<Vec<(String, String)>> {
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let header = split_csv_line(lines.next()?);
    let row = split_csv_line(lines.next()?);
    (header.len() == row.len() && !header.is_empty()).then(|| header.into_iter().zip(row).collect())
}

/// Splits one CSV line, honouring double quotes (and "" inside them).
fn split_csv_line(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(std::mem::take(&mut field)),
            (c, _) => field.push(c),
        }
    }
    fields.push(field);
    fields
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Every run as a CSV row: run index, status, each parameter, then each summary field.
pub fn csv(plan: &Plan, results: &[RunResult]) -> String {
    let params: Vec<&str> = plan
        .broker_params
        .iter()
        .chain(&plan.client)
        .map(|axis| axis.name.as_str())
        .collect();
    // The summary fields in the order the first successful run printed them.
    let mut fields: Vec<&str> = Vec::new();
    for result in results {
        for (name, _) in &result.fields {
            if !fields.contains(&name.as_str()) && !params.contains(&name.as_str()) {
                fields.push(name);
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = ["run", "status"]
        .iter()
        .chain(&params)
        .chain(&fields)
        .map(|name| csv_field(name))
        .collect();
    let _ = writeln!(out, "{}", header.join(","));
    for result in results {
        let status = result.error.as_deref().unwrap_or("ok");
        let mut row = vec![result.run.index.to_string(), csv_field(status)];
        row.extend(
            params
                .iter()
                .map(|p| csv_field(result.param(p).unwrap_or(""))),
        );
        row.extend(
            fields
                .iter()
                .map(|f| csv_field(result.field(f).unwrap_or(""))),
        );
        let _ = writeln!(out, "{}", row.join(","));
    }
    out
}

/// The varied parameters against throughput and latency, as a Markdown table.
pub fn markdown(plan: &Plan, results: &[RunResult]) -> String {
    let varied: Vec<&str> = plan::varied(plan)
        .iter()
        .map(|axis| axis.name.as_str())
        .collect();
    let latency = ["p50", "p90", "p99", "p99_9", "p99_99", "max"];
    let mut header = vec!["run".to_owned()];
    header.extend(varied.iter().map(|name| format!("`{name}`")));
    header.extend(["msgs/s".to_owned(), "MB/s".to_owned()]);
    header.extend(
        latency
            .iter()
            .map(|label| format!("{} ms", label.replace('_', "."))),
    );
    header.push("errors".to_owned());
    let mut out = format!("| {} |\n", header.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(header.len()));
    for result in results {
        let mut row = vec![result.run.index.to_string()];
        row.extend(
            varied
                .iter()
                .map(|p| result.param(p).unwrap_or("").to_owned()),
        );
        if let Some(error) = &result.error {
            row.push(format!("failed: {}", error.replace('|', "/")));
            row.extend(std::iter::repeat_n(String::new(), latency.len() + 2));
        } else {
            row.push(format_number(result.number("msgs_per_s"), 0));
            row.push(format_number(result.mb_per_s(), 1));
            row.extend(
                latency
                    .iter()
                    .map(|label| format_number(result.latency_ms(label), 3)),
            );
            row.push(result.field("errors").unwrap_or("-").to_owned());
        }
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

pub fn write_tables(out: &Path, plan: &Plan, results: &[RunResult]) -> Result<(), SweepError> {
    write(&out.join("results.csv"), &csv(plan, results))?;
    write(&out.join("results.md"), &markdown(plan, results))
}

pub fn write(path: &Path, contents: &str) -> Result<(), SweepError> {
    std::fs::write(path, contents).map_err(|source| SweepError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "mode,topic,acks,msgs_per_s,payload_mb_per_s,latency_p50_us,\
                           latency_p99_us,latency_p99_9_us,errors\n\
                           produce,\"t,1\",1,1000.5,1.024,250,1500,,0\n";

    fn plan() -> Plan {
        plan::parse(
            "[client]\nacks = [\"1\", \"all\"]\n\"linger.ms\" = 5\n\
             [broker]\nbootstrap = \"h:1\"\n[broker.params]\n\"log.segment.bytes\" = [1, 2]",
        )
        .unwrap()
    }

    fn results() -> Vec<RunResult> {
        let runs = plan::expand(&plan());
        vec![
            RunResult::ok(runs[0].clone(), parse_summary_csv(SUMMARY).unwrap()),
            RunResult::failed(runs[1].clone(), "exited with 1, badly".to_owned()),
        ]
    }

    #[test]
    fn reads_a_summary_back() {
        let fields = parse_summary_csv(SUMMARY).unwrap();
        assert_eq!(fields[1], ("topic".to_owned(), "t,1".to_owned()));
        let result = RunResult::ok(plan::expand(&plan())[0].clone(), fields);
        assert_eq!(result.number("msgs_per_s"), Some(1000.5));
        assert_eq!(result.latency_ms("p99"), Some(1.5));
        assert_eq!(
            result.latency_ms("p99_9"),
            None,
            "an empty field is no figure"
        );
        assert_eq!(result.mb_per_s(), Some(1.024));
        assert_eq!(result.brief(), "1000 msg/s, 1.0 MB/s, p99 1.500 ms");
        assert_eq!(parse_summary_csv("a,b\n1\n"), None);
        assert_eq!(parse_summary_csv(""), None);
        assert_eq!(
            split_csv_line(r#"a,"b ""q"", c",,d"#),
            ["a", "b \"q\", c", "", "d"]
        );
    }

    #[test]
    fn csv_has_params_then_fields_and_equal_widths() {
        let csv = csv(&plan(), &results());
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0]
            .starts_with("run,status,log.segment.bytes,acks,linger-ms,mode,topic,msgs_per_s,"));
        assert!(lines[1].starts_with("0,ok,1,1,5,produce,\"t,1\",1000.5,"));
        assert!(lines[2].starts_with("1,\"exited with 1, badly\",1,all,5,,,"));
        let widths: Vec<usize> = lines.iter().map(|l| split_csv_line(l).len()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{widths:?}");
    }

    #[test]
    fn markdown_shows_varied_params_and_percentiles() {
        let md = markdown(&plan(), &results());
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(
            lines[0],
            "| run | `log.segment.bytes` | `acks` | msgs/s | MB/s | p50 ms | p90 ms | p99 ms \
             | p99.9 ms | p99.99 ms | max ms | errors |"
        );
        assert_eq!(lines[1], format!("|{}", "---|".repeat(12)));
        assert_eq!(
            lines[2],
            "| 0 | 1 | 1 | 1000 | 1.0 | 0.250 | - | 1.500 | - | - | - | 0 |"
        );
        assert!(lines[3].starts_with("| 1 | 1 | all | failed: exited with 1, badly |"));
        assert_eq!(lines[3].matches('|').count(), lines[2].matches('|').count());
    }
}
