//! `timeline.png`: the faults of a run as shaded spans, over acknowledged
//! publishes and publish errors per second.

use std::path::{Path, PathBuf};

use hermod_bench::font::{self, FAMILY};
use plotters::prelude::*;

use super::nemesis::FaultRecord;

const SIZE: (u32, u32) = (1400, 600);
const CAPTION_SIZE: u32 = 26;
const LABEL_SIZE: u32 = 15;
/// The top of the axis over the highest count, leaving room for fault names.
const HEADROOM: f64 = 1.35;
const ACKED: RGBColor = RGBColor(31, 119, 180);
const ERRORS: RGBColor = RGBColor(214, 39, 40);
const FAULT: RGBColor = RGBColor(255, 200, 120);
const RECOVERY: RGBColor = RGBColor(220, 235, 200);

/// Counts per whole second from 0 to the last event.
fn per_second(times_s: &[f64], seconds: usize) -> Vec<(f64, f64)> {
    let mut counts = vec![0.0; seconds];
    for t in times_s.iter().filter(|t| **t >= 0.0) {
        if let Some(slot) = counts.get_mut(*t as usize) {
            *slot += 1.0;
        }
    }
    counts
        .into_iter()
        .enumerate()
        .map(|(s, n)| (s as f64, n))
        .collect()
}

/// Draws the timeline into `dir/timeline.png`.
pub fn draw(
    dir: &Path,
    faults: &[FaultRecord],
    acked_s: &[f64],
    errors_s: &[f64],
) -> anyhow::Result<PathBuf> {
    font::load(None)?;
    let end = acked_s
        .iter()
        .chain(errors_s)
        .copied()
        .chain(faults.iter().map(|f| f.healed_s))
        .fold(1.0_f64, f64::max);
    let seconds = end.ceil() as usize + 1;
    let acked = per_second(acked_s, seconds);
    let errors = per_second(errors_s, seconds);
    let top = acked.iter().chain(&errors).map(|(_, n)| *n).fold(1.0, f64::max) * HEADROOM;

    let path = dir.join("timeline.png");
    let root = BitMapBackend::new(&path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "chaos run: faults, acknowledged publishes and errors per second",
            (FAMILY, CAPTION_SIZE),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..seconds as f64, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the workload started")
        .y_desc("per second")
        .label_style((FAMILY, LABEL_SIZE))
        .axis_desc_style((FAMILY, LABEL_SIZE))
        .draw()?;
    for fault in faults {
        let recovered = fault.healed_s + fault.recovery.map_or(0.0, |d| d.as_secs_f64());
        chart.draw_series([
            Rectangle::new([(fault.healed_s, 0.0), (recovered, top)], RECOVERY.filled()),
            Rectangle::new([(fault.started_s, 0.0), (fault.healed_s, top)], FAULT.filled()),
        ])?;
        chart.draw_series([Text::new(
            fault.kind.name(),
            (fault.started_s, top * 0.97),
            (FAMILY, LABEL_SIZE)
                .into_font()
                .transform(FontTransform::Rotate90),
        )])?;
    }
    chart
        .draw_series(LineSeries::new(acked, ACKED.stroke_width(2)))?
        .label("acknowledged publishes")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], ACKED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(errors, ERRORS.stroke_width(2)))?
        .label("publish errors (retried)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], ERRORS.stroke_width(2)));
    chart
        .draw_series([Rectangle::new([(0.0, 0.0), (0.0, 0.0)], FAULT.filled())])?
        .label("fault injected")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], FAULT.filled()));
    chart
        .draw_series([Rectangle::new([(0.0, 0.0), (0.0, 0.0)], RECOVERY.filled())])?
        .label("healed, until healthy again")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], RECOVERY.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, LABEL_SIZE))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(path.clone())
}

#[cfg(test)]
mod tests {
    use super::per_second;

    #[test]
    fn counts_fall_into_their_second_and_late_ones_are_dropped() {
        let counts = per_second(&[0.1, 0.9, 1.0, 2.5, 7.0, -1.0], 3);
        assert_eq!(counts, vec![(0.0, 2.0), (1.0, 1.0), (2.0, 1.0)]);
    }
}
