//! The latency CDF as an SVG (plotters, SVG backend): one curve per histogram, latency on a
//! logarithmic axis, the fraction of samples at or below it on the other.

use std::path::Path;

use anyhow::anyhow;
use hdrhistogram::Histogram;
use plotters::prelude::*;

/// (latency in ms, percent of samples at or below it), one point per recorded bucket.
pub fn cdf_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let total = h.len();
    if total == 0 {
        return Vec::new();
    }
    let mut cumulative = 0u64;
    let mut out: Vec<(f64, f64)> = Vec::new();
    for v in h.iter_recorded() {
        cumulative += v.count_at_value();
        let ms = h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
        if out.is_empty() {
            // The curve rises from 0% at the first value.
            out.push((ms, 0.0));
        }
        out.push((ms, cumulative as f64 * 100.0 / total as f64));
    }
    out
}

const COLOURS: [RGBColor; 4] = [RGBColor(31, 119, 180), RGBColor(214, 39, 40), RGBColor(44, 160, 44), RGBColor(148, 103, 189)];

/// Writes the CDF of each named histogram (µs values) to `path`.
pub fn write_cdf_svg(path: &Path, title: &str, series: &[(&str, &Histogram<u64>)]) -> anyhow::Result<()> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = series.iter().map(|(n, h)| (*n, cdf_points(h))).filter(|(_, p)| !p.is_empty()).collect();
    let lo = curves.iter().flat_map(|(_, p)| p.first()).map(|p| p.0).fold(f64::INFINITY, f64::min);
    let hi = curves.iter().flat_map(|(_, p)| p.last()).map(|p| p.0).fold(0.0, f64::max);
    let (lo, hi) = if curves.is_empty() { (0.1, 1000.0) } else { ((lo * 0.8).max(0.001), (hi * 1.25).max(lo * 10.0)) };
    let err = |e: DrawingAreaErrorKind<_>| anyhow!("cannot draw {}: {e:?}", path.display());

    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d((lo..hi).log_scale(), 0f64..100f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("latency (ms, logarithmic)")
        .y_desc("samples at or below (%)")
        .x_label_formatter(&|x| {
            if *x >= 10.0 {
                format!("{x:.0}")
            } else if *x >= 1.0 {
                format!("{x:.1}")
            } else {
                format!("{x:.2}")
            }
        })
        .y_label_formatter(&|y| format!("{y:.0}%"))
        .draw()
        .map_err(err)?;
    for (i, (name, points)) in curves.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(points.iter().copied(), colour.stroke_width(2)))
            .map_err(err)?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(2)));
    }
    if !curves.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{new_hist, record};

    #[test]
    fn cdf_ends_at_100_percent_and_the_svg_is_written() {
        let mut h = new_hist();
        for v in [1_000u64, 2_000, 2_000, 50_000] {
            record(&mut h, v);
        }
        let p = cdf_points(&h);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].1, 0.0);
        assert!((p[1].1 - 25.0).abs() < 1e-9);
        assert!((p.last().unwrap().1 - 100.0).abs() < 1e-9);
        assert!((p.last().unwrap().0 - 50.0).abs() < 0.1);
        assert!(p[1..].windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cdf.svg");
        write_cdf_svg(&path, "push latency", &[("push", &h), ("empty", &new_hist())]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("push latency") && svg.contains("<polyline"));
        // Nothing recorded at all still gives a (blank) chart rather than an error.
        write_cdf_svg(&path, "nothing", &[]).unwrap();
    }
}
