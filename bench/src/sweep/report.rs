//! A sweep's results as tables: `results.csv` (every parameter and every summary field of
//! every run) and `results.md` (the varied parameters against throughput and latency, each
//! combination's median when the plan repeats).

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

    /// A consume run's fill (its produce) in MB/s.
    pub fn fill_mb_per_s(&self) -> Option<f64> {
        self.number("fill_payload_mb_per_s")
            .or_else(|| self.number("fill_batch_mb_per_s"))
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

/// One result per combination of parameters, in the order each first ran: every numeric
/// summary field is the median over the rounds that reported (other fields come from the
/// first of them). A combination fails only if every round of it failed.
pub fn medians(results: &[RunResult]) -> Vec<RunResult> {
    let mut groups: Vec<Vec<&RunResult>> = Vec::new();
    for result in results {
        let same = |other: &&RunResult| {
            other.run.broker == result.run.broker && other.run.client == result.run.client
        };
        match groups
            .iter_mut()
            .find(|group| group.first().is_some_and(same))
        {
            Some(group) => group.push(result),
            None => groups.push(vec![result]),
        }
    }
    groups
        .into_iter()
        .map(|group| {
            let reported: Vec<&RunResult> = group
                .iter()
                .copied()
                .filter(|r| r.error.is_none())
                .collect();
            let Some(first) = reported.first() else {
                return group[0].clone();
            };
            let fields = first
                .fields
                .iter()
                .map(|(name, value)| {
                    let numbers: Option<Vec<f64>> =
                        reported.iter().map(|r| r.number(name)).collect();
                    let value = match numbers {
                        Some(numbers) if reported.len() > 1 => {
                            median(numbers).map_or_else(|| value.clone(), |m| format!("{m}"))
                        }
                        _ => value.clone(),
                    };
                    (name.clone(), value)
                })
                .collect();
            RunResult::ok(first.run.clone(), fields)
        })
        .collect()
}

/// The middle value (the mean of the two middle ones for an even count); None if empty.
pub fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
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

/// Every run as a CSV row: run index, round, status, each parameter, then each summary field.
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
    let header: Vec<String> = ["run", "round", "status"]
        .iter()
        .chain(&params)
        .chain(&fields)
        .map(|name| csv_field(name))
        .collect();
    let _ = writeln!(out, "{}", header.join(","));
    for result in results {
        let status = result.error.as_deref().unwrap_or("ok");
        let mut row = vec![
            result.run.index.to_string(),
            result.run.round.to_string(),
            csv_field(status),
        ];
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

/// The runs of a `results.csv` that `csv` wrote for this plan, back as results: None if its
/// header does not match the plan's parameters.
pub fn read_csv(plan: &Plan, text: &str) -> Option<Vec<RunResult>> {
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let header = split_csv_line(lines.next()?);
    let broker: Vec<&str> = plan.broker_params.iter().map(|a| a.name.as_str()).collect();
    let client: Vec<&str> = plan.client.iter().map(|a| a.name.as_str()).collect();
    let params = 3 + broker.len() + client.len();
    let expected = ["run", "round", "status"]
        .into_iter()
        .chain(broker.iter().copied())
        .chain(client.iter().copied());
    if header.len() < params || !header.iter().map(String::as_str).take(params).eq(expected) {
        return None;
    }
    let mut results = Vec::new();
    for line in lines {
        let row = split_csv_line(line);
        if row.len() != header.len() {
            return None;
        }
        let named = |names: &[&str], from: usize| -> Vec<(String, String)> {
            names
                .iter()
                .zip(&row[from..])
                .map(|(name, value)| ((*name).to_owned(), value.clone()))
                .collect()
        };
        let run = Run {
            index: row[0].parse().ok()?,
            round: row[1].parse().ok()?,
            broker: named(&broker, 3),
            client: named(&client, 3 + broker.len()),
        };
        results.push(if row[2] == "ok" {
            let fields = header[params..]
                .iter()
                .zip(&row[params..])
                .filter(|(_, value)| !value.is_empty())
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            RunResult::ok(run, fields)
        } else {
            RunResult::failed(run, row[2].clone())
        });
    }
    Some(results)
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
    let fill = plan.mode == plan::RunMode::Consume;
    header.extend(["msgs/s".to_owned(), "MB/s".to_owned()]);
    if fill {
        header.push("fill MB/s".to_owned());
    }
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
            let empty = latency.len() + 2 + usize::from(fill);
            row.extend(std::iter::repeat_n(String::new(), empty));
        } else {
            row.push(format_number(result.number("msgs_per_s"), 0));
            row.push(format_number(result.mb_per_s(), 1));
            if fill {
                row.push(format_number(result.fill_mb_per_s(), 1));
            }
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

/// `results.csv` with every run, and `results.md` with each combination's median.
pub fn write_tables(out: &Path, plan: &Plan, results: &[RunResult]) -> Result<(), SweepError> {
    write(&out.join("results.csv"), &csv(plan, results))?;
    let mut md = String::new();
    if plan.repeat > 1 {
        let _ = writeln!(
            md,
            "Each row is the median of the rounds that ran, of {}; results.csv has every \
             run.\n",
            plan.repeat
        );
    }
    md.push_str(&markdown(plan, &medians(results)));
    write(&out.join("results.md"), &md)
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
        assert!(lines[0].starts_with(
            "run,round,status,log.segment.bytes,acks,linger-ms,mode,topic,msgs_per_s,"
        ));
        assert!(lines[1].starts_with("0,0,ok,1,1,5,produce,\"t,1\",1000.5,"));
        assert!(lines[2].starts_with("1,0,\"exited with 1, badly\",1,all,5,,,"));
        let widths: Vec<usize> = lines.iter().map(|l| split_csv_line(l).len()).collect();
        assert!(widths.iter().all(|&w| w == widths[0]), "{widths:?}");
    }

    #[test]
    fn a_written_csv_reads_back() {
        let results = results();
        let back = read_csv(&plan(), &csv(&plan(), &results)).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].run, results[0].run);
        assert_eq!(back[0].field("topic"), Some("t,1"));
        assert_eq!(back[0].number("msgs_per_s"), Some(1000.5));
        assert_eq!(back[0].latency_ms("p99_9"), None);
        assert_eq!(back[1].run, results[1].run);
        assert_eq!(back[1].error.as_deref(), Some("exited with 1, badly"));
        let other = plan::parse("[client]\nacks = [\"1\"]").unwrap();
        assert!(read_csv(&other, &csv(&plan(), &results)).is_none());
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

    #[test]
    fn medians_take_the_middle_of_each_combinations_rounds() {
        let plan = plan::parse("repeat = 3\n[client]\nacks = [\"1\", \"all\"]").unwrap();
        let runs = plan::expand(&plan);
        let summary = |rate: &str| {
            vec![
                ("topic".to_owned(), format!("t{rate}")),
                ("msgs_per_s".to_owned(), rate.to_owned()),
            ]
        };
        let results = vec![
            RunResult::ok(runs[0].clone(), summary("10")),
            RunResult::ok(runs[1].clone(), summary("5")),
            RunResult::ok(runs[2].clone(), summary("30")),
            RunResult::failed(runs[3].clone(), "gone".to_owned()),
            RunResult::ok(runs[4].clone(), summary("20")),
            RunResult::failed(runs[5].clone(), "gone".to_owned()),
        ];
        let middle = medians(&results);
        assert_eq!(middle.len(), 2);
        assert_eq!(middle[0].number("msgs_per_s"), Some(20.0));
        assert_eq!(
            middle[0].field("topic"),
            Some("t10"),
            "text from the first round"
        );
        assert_eq!(
            middle[1].number("msgs_per_s"),
            Some(5.0),
            "the round that ran"
        );
        assert!(middle[1].error.is_none());
        let all_failed = medians(&results[3..4]);
        assert_eq!(all_failed[0].error.as_deref(), Some("gone"));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }
}
