//! A latency-by-percentile plot (SVG), the classic HdrHistogram view: the x axis stretches the
//! tail (1/(1-percentile), log scale), so p99.99 is as visible as the median.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// Renders the named histograms (microsecond values) into an SVG document.
pub fn latency_plot(title: &str, series: &[(&str, &Histogram<u64>)]) -> String {
    // x: log10(1/(1-q)) from 0 (p0) to 6 (p99.9999); y: latency in ms, linear from 0.
    let max_x = 6.0;
    let max_ms = series
        .iter()
        .filter(|(_, h)| !h.is_empty())
        .map(|(_, h)| h.max() as f64 / 1000.0)
        .fold(0.0, f64::max)
        .max(0.001);
    let y_top = nice_ceiling(max_ms);
    let px = |x: f64| LEFT + (x / max_x) * (WIDTH - LEFT - RIGHT);
    let py = |ms: f64| HEIGHT - BOTTOM - (ms / y_top) * (HEIGHT - TOP - BOTTOM);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="24" font-size="16" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Axes and grid.
    for (i, label) in ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"].iter().enumerate() {
        let x = px(i as f64);
        let _ =
            writeln!(svg, r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/>"##, HEIGHT - BOTTOM);
        let _ =
            writeln!(svg, r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#, HEIGHT - BOTTOM + 18.0);
    }
    for i in 0..=5 {
        let ms = y_top * i as f64 / 5.0;
        let y = py(ms);
        let _ =
            writeln!(svg, r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/>"##, WIDTH - RIGHT);
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            y + 4.0,
            format_ms(ms)
        );
    }
    let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>"#, WIDTH / 2.0, HEIGHT - 16.0);
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">latency (ms)</text>"#,
        HEIGHT / 2.0,
        HEIGHT / 2.0
    );
    // Series.
    for (i, (name, h)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        if !h.is_empty() {
            let mut points = String::new();
            for v in h.iter_quantiles(10) {
                let q = v.quantile_iterated_to().min(0.999_999);
                let x = (1.0 / (1.0 - q)).log10().min(max_x);
                let ms = h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
                let _ = write!(points, "{:.1},{:.1} ", px(x), py(ms));
            }
            let _ = writeln!(svg, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>"#);
        }
        let y = TOP + 16.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="3"/>"#,
            LEFT + 12.0,
            LEFT + 36.0
        );
        let _ = writeln!(svg, r#"<text x="{}" y="{}">{}</text>"#, LEFT + 42.0, y + 4.0, escape(name));
    }
    svg.push_str("</svg>\n");
    svg
}

fn nice_ceiling(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if v <= step * magnitude {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

fn format_ms(ms: f64) -> String {
    if ms >= 10.0 {
        format!("{ms:.0}")
    } else if ms >= 1.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.3}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_well_formed_svg_with_one_line_per_series() {
        let mut a = crate::bench::stats::new_histogram();
        let mut b = crate::bench::stats::new_histogram();
        for v in 1..1000u64 {
            a.record(v * 10).unwrap();
            b.record(v * 20).unwrap();
        }
        let svg = latency_plot("test <run>", &[("publish", &a), ("end-to-end", &b)]);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains("test &lt;run&gt;"));
        assert!(svg.contains("99.99%"));
    }
}
