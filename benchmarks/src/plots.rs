//! The experiment report's figures, drawn with `plotters` as SVG (no font or image
//! libraries needed): grouped bars (one group per scenario, one bar per case) and
//! cumulative distributions (latency on a log axis against the share of requests).

use anyhow::{anyhow, Result};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// One colour per series, stable across figures (case 1..4 keep theirs).
const COLOURS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

pub fn colour(index: usize) -> RGBColor {
    COLOURS[index % COLOURS.len()]
}

/// Grouped bars: `groups` along x, one bar per series in each group.
pub struct Bars<'a> {
    pub title: &'a str,
    pub y_label: &'a str,
    pub groups: Vec<String>,
    /// (series name, colour index, one value per group; `None` = no bar, "n/a").
    pub series: Vec<(String, usize, Vec<Option<f64>>)>,
}

fn err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow!("drawing: {e:?}")
}

/// The bar chart's plotting area: x is the group index (a group spans 1.0), y the value.
type BarChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

pub fn grouped_bars(path: &Path, bars: &Bars<'_>) -> Result<()> {
    let width = (220 + 130 * bars.groups.len() as u32).clamp(640, 1400);
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let max = bars
        .series
        .iter()
        .flat_map(|(_, _, v)| v.iter().flatten())
        .fold(0.0_f64, |a, &b| a.max(b));
    let top = if max > 0.0 { max * 1.15 } else { 1.0 };
    let groups = bars.groups.len().max(1) as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(bars.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..groups, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_desc(bars.y_label)
        .draw()
        .map_err(err)?;
    let slot = 0.8 / bars.series.len().max(1) as f64;
    for (s, series) in bars.series.iter().enumerate() {
        draw_bar_series(&mut chart, series, slot * s as f64, slot, top)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    label_groups(&root, &chart, &bars.groups)?;
    root.present().map_err(err)?;
    Ok(())
}

/// One series' bars, `shift` into each group and `slot` wide (90 % drawn, the rest a
/// gap), with "n/a" where a case produced no value.
fn draw_bar_series(
    chart: &mut BarChart<'_, '_>,
    (name, colour_index, values): &(String, usize, Vec<Option<f64>>),
    shift: f64,
    slot: f64,
    top: f64,
) -> Result<()> {
    let colour = colour(*colour_index);
    let rects: Vec<Rectangle<(f64, f64)>> = values
        .iter()
        .enumerate()
        .filter_map(|(g, v)| {
            let v = (*v)?;
            let x0 = g as f64 + 0.1 + shift;
            Some(Rectangle::new(
                [(x0, 0.0), (x0 + slot * 0.9, v)],
                colour.filled(),
            ))
        })
        .collect();
    chart
        .draw_series(rects)
        .map_err(err)?
        .label(name.as_str())
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled()));
    let missing: Vec<Text<'_, (f64, f64), String>> = values
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_none())
        .map(|(g, _)| {
            let x0 = g as f64 + 0.1 + shift;
            Text::new(
                "n/a".to_owned(),
                (x0, top * 0.02),
                ("sans-serif", 10).into_font(),
            )
        })
        .collect();
    chart.draw_series(missing).map_err(err)?;
    Ok(())
}

/// Group names under their groups: drawn on `root` in pixels, because the x axis has
/// no labels of its own (its values are group indices).
fn label_groups(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    chart: &BarChart<'_, '_>,
    groups: &[String],
) -> Result<()> {
    for (g, name) in groups.iter().enumerate() {
        let (px, py) = chart.backend_coord(&(g as f64 + 0.5, 0.0));
        let style = TextStyle::from(("sans-serif", 13).into_font()).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Top,
            ),
        );
        root.draw_text(name, &style, (px, py + 8)).map_err(err)?;
    }
    Ok(())
}

/// One line of a [`Cdf`]: name, colour index, (value ms, percentile 0–100) points.
pub type CdfSeries = (String, usize, Vec<(f64, f64)>);

/// Cumulative distributions.
pub struct Cdf<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub series: Vec<CdfSeries>,
}

pub fn cdf(path: &Path, cdf: &Cdf<'_>) -> Result<()> {
    let root = SVGBackend::new(path, (760, 440)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let values = cdf
        .series
        .iter()
        .flat_map(|(_, _, pts)| pts.iter().map(|(v, _)| *v));
    let (mut lo, mut hi) = (f64::MAX, 0.0_f64);
    for v in values {
        lo = lo.min(v.max(0.01));
        hi = hi.max(v);
    }
    if hi <= 0.0 || lo == f64::MAX {
        lo = 0.1;
        hi = 10.0;
    }
    let lo = lo.min(hi / 10.0) * 0.8;
    let hi = hi * 1.25;
    let mut chart = ChartBuilder::on(&root)
        .caption(cdf.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..100.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(cdf.x_label)
        .y_desc("% of orders at or below")
        .x_label_formatter(&|v| {
            if *v >= 1000.0 {
                format!("{:.0} s", v / 1000.0)
            } else if *v >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
        .draw()
        .map_err(err)?;
    for (name, colour_index, points) in &cdf.series {
        let colour = colour(*colour_index);
        let pts: Vec<(f64, f64)> = points
            .iter()
            .map(|&(v, p)| (v.max(lo), p.clamp(0.0, 100.0)))
            .collect();
        chart
            .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_written_as_svg() {
        let dir = std::env::temp_dir().join(format!("plots-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let bars = Bars {
            title: "accepted orders/s",
            y_label: "orders/s",
            groups: vec!["baseline".into(), "gateway 1 s".into()],
            series: vec![
                ("case 1".into(), 0, vec![Some(90.0), None]),
                ("case 3".into(), 2, vec![Some(100.0), Some(99.0)]),
            ],
        };
        grouped_bars(&dir.join("bars.svg"), &bars).expect("bars");
        let c = Cdf {
            title: "accept latency",
            x_label: "ms",
            series: vec![(
                "case 3".into(),
                2,
                vec![(1.0, 10.0), (5.0, 50.0), (40.0, 99.0), (80.0, 100.0)],
            )],
        };
        cdf(&dir.join("cdf.svg"), &c).expect("cdf");
        let svg = std::fs::read_to_string(dir.join("bars.svg")).expect("svg");
        assert!(svg.starts_with("<svg") && svg.contains("gateway 1 s") && svg.contains("n/a"));
        let svg = std::fs::read_to_string(dir.join("cdf.svg")).expect("svg");
        assert!(svg.contains("case 3"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
