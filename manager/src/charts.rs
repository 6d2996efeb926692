//! Line charts drawn on the server as SVG: no script, no library, nothing from the network.

use std::fmt::Write;

use crate::samples::Window;

/// Colours of the lines, in order (also used for the legend's swatches).
const PALETTE: [&str; 4] = ["#2f7d4f", "#2b6cb0", "#c05621", "#805ad5"];

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 200.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 26.0;

/// One line: a value per bucket of the window, `None` where nothing was sampled.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<Option<f64>>,
}

#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    /// Shown after each value on the y axis, such as "%" or " ms".
    pub unit: &'static str,
    /// A fixed top of the y axis (100 for percentages); otherwise a round number above the
    /// largest value.
    pub y_max: Option<f64>,
    pub window: Window,
    pub series: Vec<Series>,
}

/// Text safe inside SVG or HTML.
pub fn escape(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&#39;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

/// The smallest of 1, 2, 5 × 10ⁿ at or above `v`.
fn round_up(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|top| *top >= v)
        .unwrap_or(10.0 * magnitude)
}

/// A short number for an axis: 1.5k, 20M, 0.25.
pub fn short_number(v: f64) -> String {
    let trim = |s: String| {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        }
    };
    let abs = v.abs();
    if abs >= 1e9 {
        format!("{}G", trim(format!("{:.1}", v / 1e9)))
    } else if abs >= 1e6 {
        format!("{}M", trim(format!("{:.1}", v / 1e6)))
    } else if abs >= 1e3 {
        format!("{}k", trim(format!("{:.1}", v / 1e3)))
    } else if abs >= 10.0 || abs == 0.0 {
        format!("{v:.0}")
    } else {
        trim(format!("{v:.2}"))
    }
}

impl Chart {
    fn y_top(&self) -> f64 {
        self.y_max.unwrap_or_else(|| {
            round_up(
                self.series
                    .iter()
                    .flat_map(|s| s.points.iter().flatten())
                    .fold(0.0, |a: f64, b| a.max(*b)),
            )
        })
    }

    fn has_data(&self) -> bool {
        self.series
            .iter()
            .any(|s| s.points.iter().any(Option::is_some))
    }

    /// The chart as an HTML figure: title, SVG, legend.
    pub fn html(&self) -> String {
        let mut out = String::new();
        let title = escape(&self.title);
        let _ = write!(
            out,
            "<figure class=\"chart\"><figcaption>{title}</figcaption>\
             <svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{title}\" \
             preserveAspectRatio=\"none\">"
        );
        self.axes(&mut out);
        if self.has_data() {
            for (i, series) in self.series.iter().enumerate() {
                self.line(&mut out, series, PALETTE[i % PALETTE.len()]);
            }
        } else {
            let _ = write!(
                out,
                "<text class=\"empty\" x=\"{}\" y=\"{}\" text-anchor=\"middle\">No samples in \
                 this period yet</text>",
                LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
                TOP + (HEIGHT - TOP - BOTTOM) / 2.0
            );
        }
        out.push_str("</svg><ul class=\"legend\">");
        for (i, series) in self.series.iter().enumerate() {
            let _ = write!(
                out,
                "<li><span class=\"swatch\" style=\"background:{}\"></span>{}</li>",
                PALETTE[i % PALETTE.len()],
                escape(&series.name)
            );
        }
        out.push_str("</ul></figure>");
        out
    }

    fn axes(&self, out: &mut String) {
        let top = self.y_top();
        let plot_h = HEIGHT - TOP - BOTTOM;
        for step in 0..=4 {
            let value = top * f64::from(step) / 4.0;
            let y = TOP + plot_h - plot_h * f64::from(step) / 4.0;
            let _ = write!(
                out,
                "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/>\
                 <text class=\"axis\" x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}{}</text>",
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                short_number(value),
                self.unit
            );
        }
        let minutes = self.window.seconds / 60;
        let labels = [
            (LEFT, "start", format!("{minutes} min ago")),
            (
                LEFT + (WIDTH - LEFT - RIGHT) / 2.0,
                "middle",
                format!("{} min ago", minutes / 2),
            ),
            (WIDTH - RIGHT, "end", "now".to_owned()),
        ];
        for (x, anchor, label) in labels {
            let _ = write!(
                out,
                "<text class=\"axis\" x=\"{x:.1}\" y=\"{}\" text-anchor=\"{anchor}\">{label}</text>",
                HEIGHT - 8.0
            );
        }
    }

    fn line(&self, out: &mut String, series: &Series, colour: &str) {
        let top = self.y_top();
        let n = series.points.len().max(1) as f64;
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let point = |i: usize, v: f64| {
            let x = LEFT + (i as f64 + 0.5) * plot_w / n;
            let y = TOP + plot_h - plot_h * (v / top).clamp(0.0, 1.0);
            (x, y)
        };
        let mut path = String::new();
        let mut dots = String::new();
        let points = &series.points;
        for (i, value) in points.iter().enumerate() {
            let Some(v) = value else { continue };
            let (x, y) = point(i, *v);
            let joined = i > 0 && points[i - 1].is_some();
            let _ = write!(path, "{}{x:.1},{y:.1} ", if joined { "L" } else { "M" });
            let alone = !joined && points.get(i + 1).is_none_or(Option::is_none);
            if alone {
                let _ = write!(
                    dots,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{colour}\"/>"
                );
            }
        }
        let _ = write!(
            out,
            "<path d=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" \
             vector-effect=\"non-scaling-stroke\" stroke-linejoin=\"round\"/>{dots}",
            path.trim_end()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<Option<f64>>) -> Chart {
        Chart {
            title: "Hit <ratio>".into(),
            unit: "%",
            y_max: Some(100.0),
            window: Window::last_hour(3600),
            series: vec![Series {
                name: "hits & misses".into(),
                points,
            }],
        }
    }

    #[test]
    fn gaps_break_the_line_and_names_are_escaped() {
        let html = chart(vec![Some(50.0), Some(100.0), None, Some(0.0), None]).html();
        assert!(html.contains("Hit &lt;ratio&gt;"));
        assert!(html.contains("hits &amp; misses"));
        assert_eq!(html.matches(" M").count() + html.matches("\"M").count(), 2);
        assert!(html.contains("<circle"), "a lone point is drawn as a dot");
        assert!(html.contains("100%"));
    }

    #[test]
    fn an_empty_chart_says_so() {
        assert!(chart(vec![None; 60]).html().contains("No samples"));
    }

    #[test]
    fn axes_round_up_to_readable_numbers() {
        assert_eq!(round_up(0.0), 1.0);
        assert_eq!(round_up(3.2), 5.0);
        assert_eq!(round_up(120.0), 200.0);
        assert_eq!(short_number(1500.0), "1.5k");
        assert_eq!(short_number(0.25), "0.25");
        assert_eq!(short_number(20_000_000.0), "20M");
    }
}
