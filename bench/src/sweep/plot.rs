//! A sweep's plots, each as SVG and PNG: throughput against every varied parameter, and
//! latency percentiles against throughput. Text is drawn with a TrueType font read at run
//! time (`SLUICE_BENCH_FONT`, or the first of a few common system paths), so no font
//! library is needed; without a font the plots are skipped with a message.

use std::error::Error;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::plan::{self, Axis, Plan};
use super::report::RunResult;
use super::SweepError;

const SIZE: (u32, u32) = (900, 540);
/// Series on the latency plot up to which every percentile is drawn; past it, p99 alone.
const ALL_PERCENTILES_UP_TO: usize = 3;
/// Height of one legend line, in pixels.
const LEGEND_LINE: i32 = 22;

/// The latency plot's size: wider by its legend (as wide as its longest line needs), and
/// taller when the legend needs it.
fn latency_size(plan: &Plan, results: &[RunResult]) -> (u32, u32) {
    let (width, lines) = latency_legend(plan, results);
    let height = 90 + LEGEND_LINE as u32 * lines as u32;
    (SIZE.0 + width, SIZE.1.max(height))
}

/// The latency legend's width in pixels and its number of lines.
fn latency_legend(plan: &Plan, results: &[RunResult]) -> (u32, usize) {
    let split = series(plan, &[LOAD_AXIS], results);
    let lines = latency_lines(split.len());
    let longest = lines
        .iter()
        .map(|&(n, p, _)| legend(PERCENTILES[p].1, &split[n].0).chars().count())
        .max()
        .unwrap_or(0);
    // About 8 pixels a character at the legend's font size, past the marker.
    let width = (40 + 8 * longest as u32).clamp(LEGEND_WIDTH, 3 * LEGEND_WIDTH);
    (width, lines.len())
}

/// For `count` series, the (series, percentile, marker) drawn, in legend order: every
/// percentile of few series (a marker each), or p99 of many (a marker per eight series, so
/// colour and marker together tell them apart).
fn latency_lines(count: usize) -> Vec<(usize, usize, usize)> {
    if count <= ALL_PERCENTILES_UP_TO {
        (0..count)
            .flat_map(|n| (0..PERCENTILES.len()).map(move |p| (n, p, p)))
            .collect()
    } else {
        (0..count)
            .map(|n| (n, 1, (n / PALETTE.len()) % 4))
            .collect()
    }
}
const FONT: &str = "sans-serif";
/// Where Debian, Fedora and Arch keep a plain sans font.
const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];
/// The percentiles plotted against throughput, as (summary label, legend); each has its
/// own marker.
const PERCENTILES: [(&str, &str); 4] = [
    ("p50", "p50"),
    ("p99", "p99"),
    ("p99_9", "p99.9"),
    ("p99_99", "p99.99"),
];
/// One colour per series (a combination of the other varied parameters), in turn.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];
/// The parameter that sets the offered load: on the latency plot its values are the
/// points of a series, not series of their own.
const LOAD_AXIS: &str = "rate";
/// Pixels kept right of the latency plot for its legend, at least.
const LEGEND_WIDTH: u32 = 250;
/// Combinations of the other varied parameters up to which a throughput plot draws a line
/// for each; past it, one line through the mean of every run, as a legend of more would
/// hide the plot.
const THROUGHPUT_SERIES_MAX: usize = 4;

type PlotResult = Result<(), Box<dyn Error>>;

/// What a throughput plot shows: its file name's start, its title, and each run's MB/s.
struct Measure {
    stem: &'static str,
    title: &'static str,
    value: fn(&RunResult) -> Option<f64>,
}

const THROUGHPUT: Measure = Measure {
    stem: "throughput",
    title: "Throughput",
    value: RunResult::mb_per_s,
};
/// A consume run's fill: the produce that wrote what the consumer read.
const FILL: Measure = Measure {
    stem: "fill-throughput",
    title: "Fill (produce) throughput",
    value: RunResult::fill_mb_per_s,
};

pub fn write_all(out: &Path, plan: &Plan, results: &[RunResult]) -> Result<(), SweepError> {
    if let Err(reason) = register_font() {
        eprintln!("no plots: {reason}");
        return Ok(());
    }
    let mut written = Vec::new();
    let measures: &[&Measure] = match plan.mode {
        plan::RunMode::Consume => &[&THROUGHPUT, &FILL],
        _ => &[&THROUGHPUT],
    };
    for (axis, measure) in plan::varied(plan)
        .into_iter()
        .flat_map(|axis| measures.iter().map(move |measure| (axis, *measure)))
    {
        let stem = out.join(format!("{}-by-{}", measure.stem, file_safe(&axis.name)));
        let svg = stem.with_extension("svg");
        let png = stem.with_extension("png");
        report(
            throughput_by(
                &SVGBackend::new(&svg, SIZE).into_drawing_area(),
                (plan, measure),
                axis,
                results,
            ),
            &svg,
            &mut written,
        );
        report(
            throughput_by(
                &BitMapBackend::new(&png, SIZE).into_drawing_area(),
                (plan, measure),
                axis,
                results,
            ),
            &png,
            &mut written,
        );
    }
    let stem = out.join("latency-vs-throughput");
    let svg = stem.with_extension("svg");
    let png = stem.with_extension("png");
    let latency_size = latency_size(plan, results);
    report(
        latency_vs_throughput(
            &SVGBackend::new(&svg, latency_size).into_drawing_area(),
            plan,
            results,
        ),
        &svg,
        &mut written,
    );
    report(
        latency_vs_throughput(
            &BitMapBackend::new(&png, latency_size).into_drawing_area(),
            plan,
            results,
        ),
        &png,
        &mut written,
    );
    if !written.is_empty() {
        eprintln!("plots: {}", written.join(", "));
    }
    Ok(())
}

/// A failed plot does not fail the sweep: the tables already hold every figure.
fn report(result: PlotResult, path: &Path, written: &mut Vec<String>) {
    match result {
        Ok(()) => written.push(
            path.file_name()
                .map_or_else(String::new, |name| name.to_string_lossy().into_owned()),
        ),
        Err(error) => eprintln!("cannot draw {}: {error}", path.display()),
    }
}

fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn register_font() -> Result<(), String> {
    let candidates: Vec<PathBuf> = std::env::var_os("SLUICE_BENCH_FONT")
        .map(PathBuf::from)
        .into_iter()
        .chain(FONT_PATHS.iter().map(PathBuf::from))
        .collect();
    let (path, bytes) = candidates
        .iter()
        .find_map(|path| std::fs::read(path).ok().map(|bytes| (path, bytes)))
        .ok_or_else(|| {
            format!(
                "no TrueType font at {}; set SLUICE_BENCH_FONT to one",
                FONT_PATHS.join(", ")
            )
        })?;
    // plotters keeps registered fonts for the life of the process, and wants them 'static.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FONT, FontStyle::Normal, bytes)
        .map_err(|_| format!("{} is not a font plotters can read", path.display()))
}

/// The runs split into series: one per combination of the varied parameters other than
/// `except`, named by those values (`linger.ms=5, acks=1`; empty when nothing else varies),
/// in the order the runs came.
fn series<'a>(
    plan: &Plan,
    except: &[&str],
    results: &'a [RunResult],
) -> Vec<(String, Vec<&'a RunResult>)> {
    let others: Vec<&Axis> = plan::varied(plan)
        .into_iter()
        .filter(|axis| !except.contains(&axis.name.as_str()))
        .collect();
    let mut out: Vec<(String, Vec<&RunResult>)> = Vec::new();
    for result in results {
        let name = others
            .iter()
            .map(|axis| {
                let value = result.param(&axis.name).unwrap_or("?");
                format!("{}={value}", axis.name)
            })
            .collect::<Vec<_>>()
            .join(", ");
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, runs)) => runs.push(result),
            None => out.push((name, vec![result])),
        }
    }
    out
}

/// A legend entry: the series' name after `what`, or `what` alone.
fn legend(what: &str, series: &str) -> String {
    if series.is_empty() {
        what.to_owned()
    } else {
        format!("{what}, {series}")
    }
}

/// Marker `index` (one per percentile, or per eight series), centred on `at`.
fn marker<DB: DrawingBackend>(
    index: usize,
    at: (i32, i32),
    style: ShapeStyle,
) -> DynElement<'static, DB, (i32, i32)> {
    match index {
        0 => Circle::new(at, 4, style).into_dyn(),
        1 => TriangleMarker::new(at, 5, style).into_dyn(),
        2 => Rectangle::new([(at.0 - 4, at.1 - 4), (at.0 + 4, at.1 + 4)], style).into_dyn(),
        _ => Cross::new(at, 4, style.stroke_width(2)).into_dyn(),
    }
}

/// MB/s of every run against the values of `axis`: one dot per run and a line through the
/// mean at each value, one colour per combination of the other varied parameters (when
/// there are few).
fn throughput_by<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    (plan, measure): (&Plan, &Measure),
    axis: &Axis,
    results: &[RunResult],
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let at = |result: &RunResult| -> Option<(usize, f64)> {
        let value = result.param(&axis.name)?;
        let index = axis.values.iter().position(|v| v == value)?;
        Some((index, (measure.value)(result)?))
    };
    let y_max = results
        .iter()
        .filter_map(at)
        .map(|(_, y)| y)
        .fold(0.0, f64::max)
        .max(1e-3)
        * 1.15;
    let count = axis.values.len();
    assert!(count >= 2, "only varied axes are plotted");
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!(
                "{} by {} (dots: runs, line: mean)",
                measure.title, axis.name
            ),
            (FONT, 22),
        )
        .margin(20)
        .x_label_area_size(45)
        .y_label_area_size(70)
        // A segmented range has one slot per value from start to end inclusive.
        .build_cartesian_2d((0..count - 1).into_segmented(), 0.0..y_max)?;
    let label = |value: &SegmentValue<usize>| match value {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
            axis.values.get(*i).cloned().unwrap_or_default()
        }
        SegmentValue::Last => String::new(),
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(count)
        .x_label_formatter(&label)
        .x_desc(axis.name.as_str())
        .y_desc("MB/s")
        .label_style((FONT, 15))
        .draw()?;
    let mut all = series(plan, &[axis.name.as_str()], results);
    if all.len() > THROUGHPUT_SERIES_MAX {
        all = vec![(String::new(), results.iter().collect())];
    }
    let named = all.len() > 1;
    for (n, (name, runs)) in all.iter().enumerate() {
        let colour = PALETTE[n % PALETTE.len()];
        let points: Vec<(usize, f64)> = runs.iter().filter_map(|r| at(r)).collect();
        chart.draw_series(points.iter().map(|&(i, y)| {
            Circle::new((SegmentValue::CenterOf(i), y), 4, colour.mix(0.6).filled())
        }))?;
        let means: Vec<(SegmentValue<usize>, f64)> = (0..count)
            .filter_map(|i| {
                let ys: Vec<f64> = points.iter().filter(|p| p.0 == i).map(|p| p.1).collect();
                (!ys.is_empty()).then(|| {
                    (
                        SegmentValue::CenterOf(i),
                        ys.iter().sum::<f64>() / ys.len() as f64,
                    )
                })
            })
            .collect();
        let drawn = chart.draw_series(LineSeries::new(means, colour.stroke_width(2)))?;
        if named {
            drawn.label(name.as_str()).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2))
            });
        }
    }
    if named {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// One line of the latency plot: a percentile of one series, its points by throughput.
struct Line<'a> {
    series: usize,
    name: &'a str,
    percentile: usize,
    shape: usize,
    points: Vec<(f64, f64)>,
}

/// Latency percentiles of every run against its throughput, latency on a log scale: one
/// colour per combination of the varied parameters other than the offered load, one marker
/// per percentile (p99 alone when there are many combinations), each line named in the
/// legend and its points joined in order of throughput.
fn latency_vs_throughput<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plan: &Plan,
    results: &[RunResult],
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let split = series(plan, &[LOAD_AXIS], results);
    let mut lines: Vec<Line> = Vec::new();
    for (n, p, shape) in latency_lines(split.len()) {
        let (name, runs) = &split[n];
        let label = PERCENTILES[p].0;
        let mut points: Vec<(f64, f64)> = runs
            .iter()
            .filter_map(|r| Some((r.mb_per_s()?, r.latency_ms(label)?)))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        lines.push(Line {
            series: n,
            name: name.as_str(),
            percentile: p,
            shape,
            points,
        });
    }
    let all = lines.iter().flat_map(|line| &line.points);
    let x_max = all.clone().map(|p| p.0).fold(0.0, f64::max).max(1e-3) * 1.1;
    let y_min = all
        .clone()
        .map(|p| p.1)
        .fold(f64::INFINITY, f64::min)
        .clamp(1e-3, 1e6)
        / 1.5;
    let y_max = all.map(|p| p.1).fold(0.0, f64::max).max(y_min * 10.0) * 1.5;
    let mut chart = ChartBuilder::on(root)
        .caption("Latency against throughput", (FONT, 24))
        .margin(20)
        // Room on the right for the legend, which would hide points inside the plot.
        .margin_right(latency_legend(plan, results).0)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("MB/s")
        .y_desc("latency ms (log)")
        .label_style((FONT, 15))
        .draw()?;
    let mut entries: Vec<(String, usize, RGBColor)> = Vec::new();
    for line in &lines {
        let (colour, shape) = (PALETTE[line.series % PALETTE.len()], line.shape);
        let points = &line.points;
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            colour.stroke_width(1),
        ))?;
        chart.draw_series(
            points
                .iter()
                .map(|&at| EmptyElement::at(at) + marker::<DB>(shape, (0, 0), colour.filled())),
        )?;
        entries.push((
            legend(PERCENTILES[line.percentile].1, line.name),
            shape,
            colour,
        ));
    }
    // The legend goes right of the plot, in pixels of the whole picture.
    let (right, top) = {
        let (x, y) = chart.plotting_area().get_base_pixel();
        let (w, _) = chart.plotting_area().dim_in_pixel();
        (x + w as i32 + 16, y)
    };
    for (i, (label, p, colour)) in entries.iter().enumerate() {
        let y = top + 10 + LEGEND_LINE * i as i32;
        root.draw(&marker::<DB>(*p, (right + 6, y), colour.filled()))?;
        root.draw(&Text::new(
            label.as_str(),
            (right + 18, y - 8),
            (FONT, 14).into_font(),
        ))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(plan: &Plan) -> Vec<RunResult> {
        plan::expand(plan)
            .into_iter()
            .map(|run| RunResult::ok(run, Vec::new()))
            .collect()
    }

    #[test]
    fn each_combination_of_the_other_varied_parameters_is_a_named_series() {
        let plan = plan::parse(
            r#"
name = "t"
mode = "end-to-end"
[client]
rate = ["10k", "50k"]
"linger.ms" = [1, 5]
acks = [1]
"#,
        )
        .expect("plan");
        let runs = results(&plan);
        let split = series(&plan, &[LOAD_AXIS], &runs);
        let names: Vec<&str> = split.iter().map(|(name, _)| name.as_str()).collect();
        // Client parameters are named as sluice-bench's flags.
        assert_eq!(names, ["linger-ms=1", "linger-ms=5"]);
        assert!(split.iter().all(|(_, runs)| runs.len() == 2));
        for (name, runs) in &split {
            let linger = name.trim_start_matches("linger-ms=");
            assert!(runs.iter().all(|r| r.param("linger-ms") == Some(linger)));
        }
        assert_eq!(legend("p99", "linger-ms=5"), "p99, linger-ms=5");
        // With nothing else varied there is one series, and the legend names the percentile.
        let lone = series(&plan, &[LOAD_AXIS, "linger-ms"], &runs);
        assert_eq!(lone.len(), 1);
        assert_eq!(legend("p50", &lone[0].0), "p50");
    }

    #[test]
    fn many_series_draw_p99_alone_with_colour_and_marker_telling_them_apart() {
        let few = latency_lines(2);
        assert_eq!(few.len(), 2 * PERCENTILES.len());
        assert!(few.iter().all(|&(_, p, shape)| p == shape));
        let many = latency_lines(24);
        assert_eq!(many.len(), 24);
        assert!(many.iter().all(|&(_, p, _)| PERCENTILES[p].1 == "p99"));
        let looks: std::collections::BTreeSet<(usize, usize)> = many
            .iter()
            .map(|&(n, _, shape)| (n % PALETTE.len(), shape))
            .collect();
        assert_eq!(looks.len(), 24, "no two series look alike");
    }
}
