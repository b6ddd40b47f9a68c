//! A small SVG line chart, rendered on the server: a metric's canary and baseline over a rollout
//! against its threshold. No script and no styles: presentation attributes only, so the page's
//! Content-Security-Policy can forbid inline styles, and the chart is the same in every browser.

use std::fmt::Write;

use crate::html::{escape, num};

const W: f64 = 640.0;
const H: f64 = 200.0;
/// Room for the y labels on the left and the x labels below.
const LEFT: f64 = 56.0;
const RIGHT: f64 = 8.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 24.0;

/// One line. `None` values are gaps (a tick with no data), not zeros.
pub struct Line<'a> {
    pub label: &'a str,
    pub color: &'static str,
    pub dashed: bool,
    /// The y range always includes this line. A threshold far from the data does not: a 5 %
    /// rollback line would flatten a 0.05 % error rate into the bottom edge, so it is left out
    /// and named in a note instead.
    pub fit: bool,
    pub points: Vec<(f64, Option<f64>)>,
}

/// How far (in multiples of the data's own scale) a line that does not `fit` may lie and still
/// widen the y range.
const NEAR: f64 = 2.0;

/// A chart: lines over x in seconds since the rollout started, vertical marks (step changes).
pub struct Chart<'a> {
    pub title: &'a str,
    pub lines: Vec<Line<'a>>,
    pub marks: Vec<(f64, String)>,
}

/// Finite bounds of every value, widened when flat so a constant line sits mid-chart.
fn bounds(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return None;
    }
    // Rates, ratios and latencies are never negative: padding must not invent a negative axis.
    let floor = |v: f64| if lo >= 0.0 { v.max(0.0) } else { v };
    if hi - lo < f64::EPSILON * hi.abs().max(1.0) {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return Some((floor(lo - pad), hi + pad));
    }
    let pad = (hi - lo) * 0.05;
    Some((floor(lo - pad), hi + pad))
}

impl Chart<'_> {
    /// The chart as an `<svg>` element; a short note instead when there is nothing to draw.
    pub fn render(&self) -> String {
        let finite = |l: &Line<'_>| -> Vec<f64> {
            l.points
                .iter()
                .filter_map(|p| p.1)
                .filter(|v| v.is_finite())
                .collect()
        };
        let data: Vec<f64> = self
            .lines
            .iter()
            .filter(|l| l.fit)
            .flat_map(finite)
            .collect();
        let (dlo, dhi) = data
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(*v), hi.max(*v))
            });
        let scale = (dhi - dlo).max(dlo.abs()).max(dhi.abs());
        let near =
            |v: f64| data.is_empty() || (dlo - NEAR * scale..=dhi + NEAR * scale).contains(&v);
        let mut far = Vec::new();
        let mut ys = data.clone();
        for l in self.lines.iter().filter(|l| !l.fit) {
            let vals = finite(l);
            if vals.iter().all(|v| near(*v)) {
                ys.extend(vals);
            } else if let Some(v) = vals.last() {
                far.push((l.label, *v, *v > dhi));
            }
        }
        let xs = self.lines.iter().flat_map(|l| l.points.iter().map(|p| p.0));
        let (Some((y0, y1)), Some((x0, x1))) = (bounds(ys.into_iter()), bounds(xs)) else {
            return format!(
                "<p class=\"empty\">{}: no judged values yet</p>",
                escape(self.title)
            );
        };
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * (W - LEFT - RIGHT);
        let sy = |y: f64| TOP + (y1 - y) / (y1 - y0) * (H - TOP - BOTTOM);
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg class=\"chart\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\" \
             xmlns=\"http://www.w3.org/2000/svg\"><title>{t}</title>",
            t = escape(self.title)
        );
        // Frame and the y range's ends.
        let _ = write!(
            s,
            "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"none\" \
             stroke=\"#bbb\"/>",
            W - LEFT - RIGHT,
            H - TOP - BOTTOM
        );
        for (y, anchor) in [(y1, TOP + 10.0), (y0, H - BOTTOM)] {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{anchor:.1}\" font-size=\"11\" text-anchor=\"end\" \
                 fill=\"#555\">{}</text>",
                LEFT - 4.0,
                escape(&num(Some(y)))
            );
        }
        let _ = write!(
            s,
            "<text x=\"{LEFT}\" y=\"{:.1}\" font-size=\"11\" fill=\"#555\">0s</text>\
             <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" \
             fill=\"#555\">{}s</text>",
            H - 6.0,
            W - RIGHT,
            H - 6.0,
            x1.round()
        );
        for (x, label) in &self.marks {
            if !(x0..=x1).contains(x) {
                continue;
            }
            let x = sx(*x);
            let _ = write!(
                s,
                "<line x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{TOP}\" y2=\"{:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" fill=\"#888\">{}</text>",
                H - BOTTOM,
                x + 2.0,
                H - BOTTOM - 4.0,
                escape(label),
            );
        }
        for (i, (label, v, above)) in far.iter().enumerate() {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\" \
                 fill=\"#7d3c98\">{} {} is {} the chart</text>",
                W - RIGHT - 4.0,
                if *above { TOP + 14.0 } else { H - BOTTOM - 6.0 } + 13.0 * i as f64,
                escape(label),
                escape(&num(Some(*v))),
                if *above { "above" } else { "below" }
            );
        }
        for line in &self.lines {
            if far.iter().any(|f| f.0 == line.label) {
                continue;
            }
            let mut d = String::new();
            let mut pen_down = false;
            let mut last = None;
            for (x, y) in &line.points {
                match y.filter(|v| v.is_finite()) {
                    Some(y) => {
                        let _ = write!(
                            d,
                            "{}{:.1},{:.1} ",
                            if pen_down { "L" } else { "M" },
                            sx(*x),
                            sy(y)
                        );
                        pen_down = true;
                        last = Some((sx(*x), sy(y)));
                    }
                    None => pen_down = false,
                }
            }
            if d.is_empty() {
                continue;
            }
            let _ = write!(
                s,
                "<path d=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{}>\
                 <title>{}</title></path>",
                d.trim_end(),
                line.color,
                if line.dashed {
                    " stroke-dasharray=\"6 4\""
                } else {
                    ""
                },
                escape(line.label)
            );
            // The latest value as a dot: visible from the first tick, when a path is one point.
            if let Some((x, y)) = last {
                let _ = write!(
                    s,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{}\"/>",
                    line.color
                );
            }
        }
        s.push_str("</svg>");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(f64, Option<f64>)>) -> String {
        Chart {
            title: "error_rate <b>",
            lines: vec![Line {
                label: "canary",
                color: "#c0392b",
                dashed: false,
                fit: true,
                points,
            }],
            marks: vec![(5.0, "25%".into())],
        }
        .render()
    }

    #[test]
    fn draws_a_path_through_every_point_and_breaks_at_gaps() {
        let svg = chart(vec![
            (0.0, Some(1.0)),
            (5.0, None),
            (10.0, Some(3.0)),
            (15.0, Some(2.0)),
        ]);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        let d = svg
            .split("d=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("path");
        assert_eq!(d.matches('M').count(), 2, "a gap starts a new segment: {d}");
        assert_eq!(d.matches('L').count(), 1, "{d}");
        assert!(svg.contains("error_rate &lt;b&gt;"), "titles are escaped");
        assert!(!svg.contains("<b>"));
    }

    #[test]
    fn the_highest_value_is_drawn_higher_than_the_lowest() {
        let svg = chart(vec![(0.0, Some(1.0)), (10.0, Some(3.0))]);
        let d = svg
            .split("d=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("path");
        let ys: Vec<f64> = d
            .split_whitespace()
            .filter_map(|p| p[1..].split(',').nth(1)?.parse().ok())
            .collect();
        assert!(ys[1] < ys[0], "SVG y grows downwards: {ys:?}");
    }

    #[test]
    fn nothing_to_draw_says_so_instead_of_dividing_by_zero() {
        assert!(chart(vec![]).contains("no judged values yet"));
        assert!(chart(vec![(0.0, None), (1.0, Some(f64::NAN))]).contains("no judged values"));
        let flat = chart(vec![(0.0, Some(0.0)), (0.0, Some(0.0))]);
        assert!(
            flat.contains("<path") && !flat.contains("NaN") && !flat.contains("inf"),
            "{flat}"
        );
        assert!(flat.contains("<circle"), "a single point is still drawn");
    }

    #[test]
    fn a_far_threshold_is_named_instead_of_flattening_the_data() {
        let render = |limit: f64| {
            Chart {
                title: "error_rate",
                lines: vec![
                    Line {
                        label: "canary",
                        color: "#c0392b",
                        dashed: false,
                        fit: true,
                        points: vec![(0.0, Some(0.0004)), (1.0, Some(0.0006))],
                    },
                    Line {
                        label: "threshold",
                        color: "#7d3c98",
                        dashed: true,
                        fit: false,
                        points: vec![(0.0, Some(limit)), (1.0, Some(limit))],
                    },
                ],
                marks: vec![],
            }
            .render()
        };
        let far = render(0.05);
        assert!(far.contains("threshold 0.05 is above the chart"), "{far}");
        assert_eq!(far.matches("<path").count(), 1, "{far}");
        let near = render(0.001);
        assert!(!near.contains("is above the chart"), "{near}");
        assert_eq!(near.matches("<path").count(), 2, "{near}");
    }

    #[test]
    fn a_positive_metric_gets_no_negative_axis() {
        assert_eq!(bounds([0.0005, 0.05].into_iter()).map(|b| b.0), Some(0.0));
        assert!(bounds([-1.0, 1.0].into_iter()).is_some_and(|b| b.0 < -1.0));
    }
}
