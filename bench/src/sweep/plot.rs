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
const FONT: &str = "sans-serif";
/// Where Debian, Fedora and Arch keep a plain sans font.
const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];
/// The percentiles plotted against throughput, as (summary label, legend, colour).
const PERCENTILES: [(&str, &str, RGBColor); 4] = [
    ("p50", "p50", RGBColor(31, 119, 180)),
    ("p99", "p99", RGBColor(255, 127, 14)),
    ("p99_9", "p99.9", RGBColor(44, 160, 44)),
    ("p99_99", "p99.99", RGBColor(214, 39, 40)),
];

type PlotResult = Result<(), Box<dyn Error>>;

pub fn write_all(out: &Path, plan: &Plan, results: &[RunResult]) -> Result<(), SweepError> {
    if let Err(reason) = register_font() {
        eprintln!("no plots: {reason}");
        return Ok(());
    }
    let mut written = Vec::new();
    for axis in plan::varied(plan) {
        let stem = out.join(format!("throughput-by-{}", file_safe(&axis.name)));
        let svg = stem.with_extension("svg");
        let png = stem.with_extension("png");
        report(
            throughput_by(
                &SVGBackend::new(&svg, SIZE).into_drawing_area(),
                axis,
                results,
            ),
            &svg,
            &mut written,
        );
        report(
            throughput_by(
                &BitMapBackend::new(&png, SIZE).into_drawing_area(),
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
    report(
        latency_vs_throughput(&SVGBackend::new(&svg, SIZE).into_drawing_area(), results),
        &svg,
        &mut written,
    );
    report(
        latency_vs_throughput(&BitMapBackend::new(&png, SIZE).into_drawing_area(), results),
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

/// MB/s of every run against the values of `axis`, one dot per run and a line through the
/// mean at each value.
fn throughput_by<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    axis: &Axis,
    results: &[RunResult],
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let points: Vec<(usize, f64)> = results
        .iter()
        .filter_map(|result| {
            let value = result.param(&axis.name)?;
            let index = axis.values.iter().position(|v| v == value)?;
            Some((index, result.mb_per_s()?))
        })
        .collect();
    let y_max = points.iter().map(|&(_, y)| y).fold(0.0, f64::max).max(1e-3) * 1.15;
    let count = axis.values.len();
    assert!(count >= 2, "only varied axes are plotted");
    let mut chart = ChartBuilder::on(root)
        .caption(
            format!("Throughput by {} (dots: runs, line: mean)", axis.name),
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
    chart.draw_series(
        points
            .iter()
            .map(|&(i, y)| Circle::new((SegmentValue::CenterOf(i), y), 4, BLUE.mix(0.6).filled())),
    )?;
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
    chart.draw_series(LineSeries::new(means, RED.stroke_width(2)))?;
    root.present()?;
    Ok(())
}

/// Latency percentiles of every run against its throughput, latency on a log scale.
fn latency_vs_throughput<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    results: &[RunResult],
) -> PlotResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let series: Vec<Vec<(f64, f64)>> = PERCENTILES
        .iter()
        .map(|(label, _, _)| {
            let mut points: Vec<(f64, f64)> = results
                .iter()
                .filter_map(|r| Some((r.mb_per_s()?, r.latency_ms(label)?)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            points
        })
        .collect();
    let all = series.iter().flatten();
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
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("MB/s")
        .y_desc("latency ms (log)")
        .label_style((FONT, 15))
        .draw()?;
    for ((_, legend, colour), points) in PERCENTILES.iter().zip(&series) {
        let colour = *colour;
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 4, colour.filled())))?
            .label(*legend)
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 15))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
