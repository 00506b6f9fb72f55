//! Draws a latency report: per-frame timeline and queue-latency histogram, as PNG or SVG.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use spiral_nodes::LatencyReport;

/// Writes `report` as a picture at `path`; the extension picks the format (`.svg`, else PNG).
/// Parent directories are created.
pub fn write(report: &LatencyReport, path: &Path) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    spiral_nodes::sink::create_parent_dir(path).map_err(|e| fail(&e))?;
    register_font();
    let size = (1000, 700);
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("svg")) {
        draw(report, SVGBackend::new(path, size).into_drawing_area()).map_err(|e| fail(&e))
    } else {
        draw(report, BitMapBackend::new(path, size).into_drawing_area()).map_err(|e| fail(&e))
    }
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // DejaVu ships inside the binary, so a headless machine needs no font packages.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw<DB: DrawingBackend>(report: &LatencyReport, root: DrawingArea<DB, Shift>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(400);
    timeline(report, &top)?;
    histogram(report, &bottom)?;
    root.present()?;
    Ok(())
}

/// Each frame's produced, enqueued and handed times against its index, with the underruns
/// and, for a source fed over time, each input's arrival.
fn timeline<DB: DrawingBackend>(report: &LatencyReport, area: &DrawingArea<DB, Shift>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let series = [
        (
            "produced",
            RGBColor(90, 90, 90),
            report.per_frame.iter().map(|f| (f.index, f.produced_ms)).collect::<Vec<_>>(),
        ),
        ("enqueued", BLUE, report.per_frame.iter().map(|f| (f.index, f.enqueued_ms)).collect()),
        ("handed to device", RED, report.per_frame.iter().map(|f| (f.index, f.handed_ms)).collect()),
    ];
    let y_max = series.iter().flat_map(|s| s.2.iter().filter_map(|p| p.1)).fold(1.0, f64::max) * 1.05;
    let x_max = report.per_frame.len().max(1) as u64;
    let title = format!(
        "{} frames, first audio {} ms, {} underruns, sink {}",
        report.frames,
        report.time_to_first_audio_ms.map_or("-".into(), |v| format!("{v:.1}")),
        report.run.underruns,
        report.run.sink
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..x_max, 0f64..y_max)?;
    chart.configure_mesh().x_desc("frame").y_desc("ms since start").draw()?;
    for (name, color, points) in series {
        chart
            .draw_series(LineSeries::new(points.into_iter().filter_map(|(i, v)| v.map(|v| (i, v))), color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    let underruns: Vec<_> = report.underruns_at.iter().filter_map(|u| u.awaiting_frame.map(|f| (f, u.at_ms))).collect();
    if !underruns.is_empty() {
        chart
            .draw_series(underruns.into_iter().map(|p| Cross::new(p, 5, MAGENTA.stroke_width(2))))?
            .label("underrun (awaited frame)")
            .legend(|(x, y)| Cross::new((x + 10, y), 5, MAGENTA.stroke_width(2)));
    }
    if !report.inputs.is_empty() {
        let green = RGBColor(0, 140, 60);
        chart
            .draw_series(report.inputs.iter().map(|i| TriangleMarker::new((i.frame, i.arrived_ms), 6, green.filled())))?
            .label("input arrived (its first frame)")
            .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, green.filled()));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    Ok(())
}

/// Distribution of per-frame queue latency (enqueued to handed).
fn histogram<DB: DrawingBackend>(report: &LatencyReport, area: &DrawingArea<DB, Shift>) -> DrawResult
where
    DB::ErrorType: 'static,
{
    const BINS: usize = 40;
    let values: Vec<f64> = report.per_frame.iter().filter_map(|f| f.queue_ms).collect();
    let max = values.iter().copied().fold(1e-3, f64::max);
    let width = max / BINS as f64;
    let mut counts = [0u32; BINS];
    for v in &values {
        counts[((v / width) as usize).min(BINS - 1)] += 1;
    }
    let peak = counts.iter().copied().max().unwrap_or(0).max(1);
    let title = format!(
        "queue latency p50 {} ms, p99 {} ms",
        report.queue_latency_ms_p50.map_or("-".into(), |v| format!("{v:.2}")),
        report.queue_latency_ms_p99.map_or("-".into(), |v| format!("{v:.2}"))
    );
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..max, 0u32..peak + 1)?;
    chart.configure_mesh().x_desc("ms enqueued -> handed").y_desc("frames").draw()?;
    chart.draw_series(counts.iter().enumerate().map(|(i, &c)| {
        let x0 = i as f64 * width;
        Rectangle::new([(x0, 0), (x0 + width, c)], BLUE.mix(0.6).filled())
    }))?;
    Ok(())
}
