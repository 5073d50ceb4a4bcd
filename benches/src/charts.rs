//! PNG charts of a report, drawn with plotters: throughput over time, latency percentiles, 1-node against 3-node, and resident memory over time.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::font::{FAMILY, Font};
use crate::measure::Percentiles;
use crate::memory::{MIB, MemoryUse, RSS_ALLOWANCE_MIB};
use crate::outcome::Measured;
use crate::report::{Report, ScenarioReport};
use crate::scenario::ScenarioName;

/// Pixels of one panel of a chart grid.
const PANEL: (u32, u32) = (600, 380);
/// Panels side by side in a chart grid.
const COLUMNS: usize = 3;
/// Pixels above the panels for the chart's title.
const TITLE_HEIGHT: u32 = 60;
const TITLE_SIZE: u32 = 30;
const CAPTION_SIZE: u32 = 20;
const LABEL_SIZE: u32 = 15;
/// Percentiles on a latency chart: p50, p90, p99, p99.9 and max.
const POINTS: usize = 5;
/// At most this many labels on a log-scale axis.
const LOG_LABELS: usize = 8;
/// Decades above the highest latency, leaving room for the legend.
const LOG_HEADROOM: f64 = 0.5;
/// The fine grid between labelled lines.
const LIGHT_LINES: RGBColor = RGBColor(242, 242, 242);
const HERMOD: RGBColor = RGBColor(31, 119, 180);
const NATS: RGBColor = RGBColor(230, 120, 20);
/// The top of a throughput axis over the highest value, leaving room for the
/// legend above the lines.
const HEADROOM: f64 = 1.4;
/// The measured window, shaded behind the throughput lines.
const WINDOW_SHADE: RGBColor = RGBColor(235, 235, 235);
/// Hermod's memory bound, dashed across the memory chart.
const BOUND: RGBColor = RGBColor(200, 30, 30);
/// Pixels of a dash and of the gap after it.
const DASH: (u32, u32) = (8, 6);

/// Draws every chart the report has data for into `dir`; returns their paths.
pub fn draw_all(report: &Report, dir: &Path, _font: Font) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let timelines: Vec<&ScenarioReport> = report
        .scenarios
        .iter()
        .filter(|s| s.systems().iter().any(|(_, m)| !m.per_second.is_empty()))
        .collect();
    if !timelines.is_empty() {
        let path = dir.join("throughput.png");
        grid(
            &path,
            "Throughput over time (msg/s per second; measured window shaded)",
            &timelines,
            throughput_panel,
        )?;
        written.push(path);
    }
    let latencies: Vec<&ScenarioReport> = report
        .scenarios
        .iter()
        .filter(|s| s.systems().iter().any(|(_, m)| primary_latency(m).is_some()))
        .collect();
    if !latencies.is_empty() {
        let path = dir.join("latency.png");
        grid(
            &path,
            "Latency percentiles (log scale)",
            &latencies,
            latency_panel,
        )?;
        written.push(path);
    }
    if let (Some(one), Some(three)) = (
        report.scenario(ScenarioName::AloPublish),
        report.scenario(ScenarioName::ClusterPublish),
    ) {
        let path = dir.join("cluster.png");
        nodes_chart(&path, one, three)?;
        written.push(path);
    }
    if let Some(memory) = report
        .scenario(ScenarioName::MemoryBacklog)
        .filter(|s| !memory_of(s).is_empty())
    {
        let path = dir.join("memory.png");
        memory_chart(&path, memory)?;
        written.push(path);
    }
    Ok(written)
}

/// Each system's memory figures, for those that ran and sampled.
fn memory_of(scenario: &ScenarioReport) -> Vec<(&'static str, &MemoryUse)> {
    scenario
        .systems()
        .into_iter()
        .filter_map(|(system, m)| Some((system, m.memory.as_ref()?)))
        .collect()
}

/// The latency a scenario reports as its p50/p99, with every percentile.
fn primary_latency(m: &Measured) -> Option<Percentiles> {
    match m.latency {
        "publish_to_ack" => m.publish_to_ack,
        "publish_to_delivery" => m.publish_to_delivery,
        _ => None,
    }
}

fn color(system: &str) -> RGBColor {
    if system == "hermod" { HERMOD } else { NATS }
}

/// 12345 as "12.3k", for axis labels.
fn short(value: f64) -> String {
    match value.abs() {
        v if v >= 1e6 => format!("{:.1}M", value / 1e6),
        v if v >= 1e3 => format!("{:.1}k", value / 1e3),
        _ => format!("{value:.0}"),
    }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// A white bitmap of `size` at `path` with `title` across its top; the
/// area returned is what lies below the title.
fn titled_canvas<'a>(path: &'a Path, size: (u32, u32), title: &str) -> anyhow::Result<Area<'a>> {
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root.titled(title, (FAMILY, TITLE_SIZE))?)
}

/// A PNG with a title and one panel per scenario, `COLUMNS` to a row.
fn grid(
    path: &Path,
    title: &str,
    scenarios: &[&ScenarioReport],
    panel: fn(&Area, &ScenarioReport) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let rows = scenarios.len().div_ceil(COLUMNS);
    let columns = scenarios.len().min(COLUMNS);
    let size = (PANEL.0 * columns as u32, PANEL.1 * rows as u32 + TITLE_HEIGHT);
    let root = titled_canvas(path, size, title)?;
    for (area, scenario) in root.split_evenly((rows, columns)).iter().zip(scenarios) {
        panel(area, scenario)?;
    }
    root.present()?;
    Ok(())
}

/// One scenario's completions per second, a line per system.
fn throughput_panel(area: &Area, scenario: &ScenarioReport) -> anyhow::Result<()> {
    let systems = scenario.systems();
    let seconds = systems
        .iter()
        .map(|(_, m)| m.per_second.len())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let peak = systems
        .iter()
        .flat_map(|(_, m)| m.per_second.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(scenario.name, (FAMILY, CAPTION_SIZE))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(58)
        .build_cartesian_2d(0f64..seconds, 0f64..peak * HEADROOM)?;
    chart
        .configure_mesh()
        .x_desc("seconds from the start of the load")
        .y_label_formatter(&|v| short(*v))
        .light_line_style(LIGHT_LINES)
        .label_style((FAMILY, LABEL_SIZE))
        .draw()?;
    let shades = systems.iter().map(|(_, m)| {
        let from = m.warmup_s;
        Rectangle::new(
            [(from, 0.0), (from + m.measured_s, peak * HEADROOM)],
            WINDOW_SHADE.mix(0.6).filled(),
        )
    });
    chart.draw_series(shades)?;
    for (system, m) in &systems {
        let points: Vec<(f64, f64)> = m
            .per_second
            .iter()
            .enumerate()
            .map(|(s, n)| (s as f64 + 0.5, *n as f64))
            .collect();
        let line = color(system);
        // Markers too: a backlog drained within a second is a single point.
        chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, line.filled())))?;
        chart
            .draw_series(LineSeries::new(points, line.stroke_width(2)))?
            .label(format!("{system} ({} msg/s)", short(m.msgs_per_s)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], line.stroke_width(2)));
    }
    legend(&mut chart)
}

/// memory-backlog's chart: one panel as wide as two, since the timeline
/// is the whole chart and its title is long.
fn memory_chart(path: &Path, scenario: &ScenarioReport) -> anyhow::Result<()> {
    let root = titled_canvas(
        path,
        (2 * PANEL.0, PANEL.1 + TITLE_HEIGHT),
        "Resident memory (VmRSS) while an unconsumed backlog fills",
    )?;
    memory_panel(&root, scenario)?;
    root.present()?;
    Ok(())
}

/// One scenario's resident memory over time, a line per system, with a
/// dashed mark where each fill ended and Hermod's bound dashed across.
fn memory_panel(area: &Area, scenario: &ScenarioReport) -> anyhow::Result<()> {
    let systems = memory_of(scenario);
    let to_mib = |bytes: u64| bytes as f64 / MIB as f64;
    let seconds = systems
        .iter()
        .flat_map(|(_, m)| m.rss_timeline.last().map(|(t, _)| *t))
        .fold(1.0, f64::max);
    let bound = systems.iter().find_map(|(_, m)| m.bound);
    let highest = systems
        .iter()
        .map(|(_, m)| m.rss_peak_bytes)
        .chain(bound.map(|b| b.bound_bytes))
        .max()
        .unwrap_or(MIB);
    let top = to_mib(highest) * HEADROOM;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} (vertical dashes: where each fill ended)", scenario.name),
            (FAMILY, CAPTION_SIZE),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(58)
        .build_cartesian_2d(0f64..seconds, 0f64..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds from the start of the fill")
        .y_desc("MiB")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(LIGHT_LINES)
        .label_style((FAMILY, LABEL_SIZE))
        .draw()?;
    for (system, m) in &systems {
        let line = color(system);
        let points = m.rss_timeline.iter().map(|(t, rss)| (*t, to_mib(*rss)));
        chart
            .draw_series(LineSeries::new(points, line.stroke_width(2)))?
            .label(format!("{system} (peak {:.0} MiB)", to_mib(m.rss_peak_bytes)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], line.stroke_width(2)));
        let fill_end = [(m.fill_end_s, 0.0), (m.fill_end_s, top)];
        chart.draw_series(DashedLineSeries::new(
            fill_end,
            DASH.0,
            DASH.1,
            line.stroke_width(1),
        ))?;
    }
    if let Some(bound) = bound {
        let level = to_mib(bound.bound_bytes);
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, level), (seconds, level)],
                DASH.0,
                DASH.1,
                BOUND.stroke_width(2),
            ))?
            .label(format!(
                "hermod bound: cache {:.0} + {RSS_ALLOWANCE_MIB} MiB",
                to_mib(bound.cache_bytes)
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BOUND.stroke_width(2)));
    }
    legend(&mut chart)
}

/// One scenario's latency percentiles, a line per system.
fn latency_panel(area: &Area, scenario: &ScenarioReport) -> anyhow::Result<()> {
    let series: Vec<(String, RGBColor, Percentiles)> = scenario
        .systems()
        .into_iter()
        .filter_map(|(system, m)| Some((system.to_owned(), color(system), primary_latency(m)?)))
        .collect();
    let caption = format!("{} ({})", scenario.name, scenario_latency(scenario));
    percentile_chart(area, &caption, &series)
}

/// Which latency a scenario's panel shows.
fn scenario_latency(scenario: &ScenarioReport) -> &'static str {
    let label = scenario.systems().first().map_or("", |(_, m)| m.latency);
    label.strip_prefix("publish_to_").map_or(label, |rest| {
        if rest == "ack" {
            "publish->ack"
        } else {
            "publish->delivery"
        }
    })
}

/// Percentile lines (p50 … max) on a log scale, one per series. The axis
/// is linear in log10(µs), so its labels fall on round powers and halves.
fn percentile_chart(
    area: &Area,
    caption: &str,
    series: &[(String, RGBColor, Percentiles)],
) -> anyhow::Result<()> {
    let values = series
        .iter()
        .flat_map(|(_, _, p)| p.points().map(|(_, v)| (v.max(1) as f64).log10()));
    let (low, high) = values.fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let labels = series
        .first()
        .map_or([""; POINTS], |(_, _, p)| p.points().map(|(l, _)| l));
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, CAPTION_SIZE))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(64)
        .build_cartesian_2d(
            -0.4f64..(POINTS as f64 - 0.6),
            (low.min(high).floor())..(high.ceil().max(low.floor() + 1.0) + LOG_HEADROOM),
        )?;
    chart
        .configure_mesh()
        .x_labels(POINTS)
        .x_label_formatter(&|x| category(*x, &labels))
        .y_labels(LOG_LABELS)
        .y_label_formatter(&|v| latency_label(10f64.powf(*v)))
        .light_line_style(LIGHT_LINES)
        .label_style((FAMILY, LABEL_SIZE))
        .draw()?;
    for (name, line, percentiles) in series {
        let points: Vec<(f64, f64)> = percentiles
            .points()
            .iter()
            .enumerate()
            .map(|(i, (_, v))| (i as f64, ((*v).max(1) as f64).log10()))
            .collect();
        let line = *line;
        chart
            .draw_series(LineSeries::new(points.clone(), line.stroke_width(2)))?
            .label(format!(
                "{name} (p99 {})",
                latency_label(percentiles.p99_us as f64)
            ))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], line.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 4, line.filled())))?;
    }
    legend(&mut chart)
}

/// Microseconds as "850 µs", "12.5 ms" or "2.3 s".
fn latency_label(micros: f64) -> String {
    match micros {
        m if m >= 1e6 => format!("{:.1} s", m / 1e6),
        m if m >= 1e5 => format!("{:.0} ms", m / 1e3),
        m if m >= 1e3 => format!("{:.1} ms", m / 1e3),
        m => format!("{m:.0} µs"),
    }
}

fn legend<'a, X, Y>(chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>) -> anyhow::Result<()>
where
    X: Ranged,
    Y: Ranged,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FAMILY, LABEL_SIZE))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

/// Durable publish on one node (`alo-publish`) against three (`cluster-publish`):
/// throughput bars on the left, latency percentiles on the right.
fn nodes_chart(path: &Path, one: &ScenarioReport, three: &ScenarioReport) -> anyhow::Result<()> {
    let mut bars = Vec::new();
    let mut series = Vec::new();
    for (scenario, nodes) in [(one, 1), (three, 3)] {
        for (system, m) in scenario.systems() {
            let name = format!("{system} {nodes} node{}", if nodes > 1 { "s" } else { "" });
            // One node in a lighter shade of the system's colour.
            let shade = if nodes == 1 {
                blend(color(system).mix(0.5))
            } else {
                color(system)
            };
            bars.push((name.clone(), shade, m.msgs_per_s));
            if let Some(p) = primary_latency(m) {
                series.push((name, shade, p));
            }
        }
    }
    // Hermod's bars first, then the peer's, one node before three.
    bars.sort_by(|a, b| a.0.cmp(&b.0));
    let root = titled_canvas(
        path,
        (2 * PANEL.0, PANEL.1 + TITLE_HEIGHT),
        "Durable publish: 1 node vs 3 nodes (3 replicas)",
    )?;
    let (left, right) = root.split_horizontally(PANEL.0);
    let peak = bars.iter().map(|b| b.2).fold(1.0, f64::max);
    let count = bars.len();
    let mut chart = ChartBuilder::on(&left)
        .caption("throughput (acked msg/s)", (FAMILY, CAPTION_SIZE))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(58)
        .build_cartesian_2d(-0.5f64..count as f64 - 0.5, 0f64..peak * 1.15)?;
    let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(count)
        .x_label_formatter(&|x| category(*x, &names))
        .y_label_formatter(&|v| short(*v))
        .light_line_style(LIGHT_LINES)
        .label_style((FAMILY, LABEL_SIZE))
        .draw()?;
    for (index, (_, shade, value)) in bars.iter().enumerate() {
        let x = index as f64;
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x - 0.35, 0.0), (x + 0.35, *value)],
            shade.filled(),
        )))?;
        let text = Text::new(
            short(*value),
            (x - 0.2, *value + peak * 0.08),
            (FAMILY, LABEL_SIZE),
        );
        chart.draw_series(std::iter::once(text))?;
    }
    percentile_chart(&right, "publish->ack latency (log scale)", &series)?;
    root.present()?;
    Ok(())
}

/// The name of the category at `x` on an axis whose categories sit at 0, 1, 2, …;
/// nothing between them.
fn category<S: AsRef<str>>(x: f64, names: &[S]) -> String {
    let index = x.round();
    if (x - index).abs() > 0.01 || index < 0.0 {
        return String::new();
    }
    names
        .get(index as usize)
        .map_or(String::new(), |n| n.as_ref().to_owned())
}

/// A translucent colour as the opaque one it shows on white.
fn blend(color: RGBAColor) -> RGBColor {
    let RGBAColor(r, g, b, a) = color;
    let mix = |c: u8| (f64::from(c) * a + 255.0 * (1.0 - a)).round() as u8;
    RGBColor(mix(r), mix(g), mix(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short_and_colours_blend_onto_white() {
        assert_eq!(short(950.0), "950");
        assert_eq!(short(12_345.0), "12.3k");
        assert_eq!(short(2_500_000.0), "2.5M");
        assert_eq!(blend(RGBAColor(0, 0, 0, 0.5)), RGBColor(128, 128, 128));
        assert_eq!(blend(HERMOD.mix(1.0)), HERMOD);
        assert_eq!(category(2.0, &["a", "b", "c"]), "c");
        assert_eq!(category(1.5, &["a", "b", "c"]), "");
        assert_eq!(category(7.0, &["a"]), "");
        assert_eq!(latency_label(850.0), "850 µs");
        assert_eq!(latency_label(12_340.0), "12.3 ms");
        assert_eq!(latency_label(250_000.0), "250 ms");
        assert_eq!(latency_label(2_300_000.0), "2.3 s");
    }
}
