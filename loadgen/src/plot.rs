//! `compare` and `plot`: a side-by-side table of run summaries and a hand-written SVG of their latency
//! percentile distributions (x: percentile on the log "tail" axis 1/(1-p), y: latency in µs, log scale).

use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::histogram::LatencySummary;
use crate::summary::RunSummary;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 520.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 220.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 60.0;
const COLORS: [&str; 8] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

pub fn compare(files: &[PathBuf], svg: Option<PathBuf>) -> Result<(), String> {
    if files.is_empty() {
        return Err("compare needs at least one summary .json".into());
    }
    let runs = files.iter().map(|path| RunSummary::read(path)).collect::<Result<Vec<_>, _>>()?;
    print!("{}", table(&runs));
    let svg_path = svg.unwrap_or_else(|| sibling(&files[0], "compare.svg"));
    write_svg(&svg_path, &runs)
}

pub fn plot(file: &Path, svg: Option<PathBuf>) -> Result<(), String> {
    let run = RunSummary::read(file)?;
    let svg_path = svg.unwrap_or_else(|| file.with_extension("svg"));
    write_svg(&svg_path, std::slice::from_ref(&run))
}

fn sibling(path: &Path, name: &str) -> PathBuf {
    path.parent().map_or_else(|| PathBuf::from(name), |dir| dir.join(name))
}

fn write_svg(path: &Path, runs: &[RunSummary]) -> Result<(), String> {
    std::fs::write(path, svg(runs)).map_err(|err| format!("write {}: {err}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The latency a run is judged by: deliveries if it had any, otherwise CONNACK (conn-storm) or ping (idle).
pub fn headline_latency(run: &RunSummary) -> (&'static str, &LatencySummary) {
    if run.latency_us.count > 0 {
        ("delivery", &run.latency_us)
    } else if run.scenario == "idle" && run.ping_rtt_us.count > 0 {
        ("ping", &run.ping_rtt_us)
    } else {
        ("connack", &run.connack_us)
    }
}

pub fn table(runs: &[RunSummary]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{:<22} {:<10} {:>7} {:>12} {:>12} {:>9} {:>9} {:>9} {:>9} {:>8} {:>11} {:>10} {:>10}",
        "run",
        "scenario",
        "conns",
        "sent/s",
        "delivered/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "lost",
        "cpu-s/M del",
        "B/conn",
        "connects/s"
    );
    for run in runs {
        let (_, latency) = headline_latency(run);
        let broker = run.broker.as_ref();
        let _ = writeln!(
            text,
            "{:<22} {:<10} {:>7} {:>12.0} {:>12.0} {:>9} {:>9} {:>9} {:>9} {:>8} {:>11} {:>10} {:>10.0}",
            truncate(&run.label, 22),
            run.scenario,
            run.connections,
            run.sent_per_sec,
            run.delivered_per_sec,
            latency.p50,
            latency.p99,
            latency.p999,
            latency.max,
            run.lost,
            broker.and_then(|b| b.cpu_secs_per_million_deliveries).map_or("-".into(), |v| format!("{v:.3}")),
            broker.and_then(|b| b.rss_per_connection_bytes).map_or("-".into(), |v| format!("{v:.0}")),
            run.connects_per_sec,
        );
    }
    text
}

fn truncate(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

/// x position of percentile `p` (0..100) on the tail axis, spanning 1/(1-p) from 1 to 10^decades.
fn x_of(percentile: f64, decades: f64) -> f64 {
    let tail = 1.0 / (1.0 - (percentile / 100.0).min(1.0 - 1e-9));
    MARGIN_LEFT + (tail.log10() / decades).min(1.0) * (WIDTH - MARGIN_LEFT - MARGIN_RIGHT)
}

fn y_of(latency_us: u64, low_exp: f64, high_exp: f64) -> f64 {
    let value = (latency_us.max(1) as f64).log10();
    let fraction = ((value - low_exp) / (high_exp - low_exp)).clamp(0.0, 1.0);
    HEIGHT - MARGIN_BOTTOM - fraction * (HEIGHT - MARGIN_TOP - MARGIN_BOTTOM)
}

pub fn svg(runs: &[RunSummary]) -> String {
    let curves: Vec<(&RunSummary, &LatencySummary)> = runs.iter().map(|run| (run, headline_latency(run).1)).collect();
    let all_points = || curves.iter().flat_map(|(_, latency)| latency.percentiles.iter());
    let max_percentile = all_points().map(|(p, _)| *p).filter(|p| *p < 100.0).fold(0.0, f64::max);
    let decades = (1.0 / (1.0 - max_percentile / 100.0)).log10().ceil().clamp(2.0, 7.0);
    let low_exp = all_points().map(|(_, v)| (*v.max(&1) as f64).log10().floor()).fold(f64::INFINITY, f64::min).min(6.0);
    let high_exp = all_points().map(|(_, v)| (*v.max(&1) as f64).log10().ceil()).fold(0.0, f64::max).max(low_exp + 1.0);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(out, r#"<text x="{}" y="22" font-size="15">Latency by percentile</text>"#, MARGIN_LEFT);
    draw_axes(&mut out, decades, low_exp, high_exp);
    for (index, (run, latency)) in curves.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let points: Vec<String> = latency
            .percentiles
            .iter()
            .filter(|(p, _)| *p < 100.0)
            .map(|(p, v)| format!("{:.1},{:.1}", x_of(*p, decades), y_of(*v, low_exp, high_exp)))
            .collect();
        let _ =
            writeln!(out, r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#, points.join(" "));
        let legend_y = MARGIN_TOP + 20.0 + index as f64 * 34.0;
        let legend_x = WIDTH - MARGIN_RIGHT + 15.0;
        let _ = writeln!(
            out,
            r#"<line x1="{legend_x}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{color}" stroke-width="3"/>"#,
            legend_x + 20.0
        );
        let _ = writeln!(out, r#"<text x="{}" y="{}">{}</text>"#, legend_x + 26.0, legend_y + 4.0, escape(&run.label));
        let detail = format!("{} p99 {} µs", run.scenario, latency.p99);
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" fill="#555" font-size="10">{}</text>"##,
            legend_x + 26.0,
            legend_y + 17.0,
            escape(&detail)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn draw_axes(out: &mut String, decades: f64, low_exp: f64, high_exp: f64) {
    let (left, right) = (MARGIN_LEFT, WIDTH - MARGIN_RIGHT);
    let (top, bottom) = (MARGIN_TOP, HEIGHT - MARGIN_BOTTOM);
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#333"/>"##,
        right - left,
        bottom - top
    );
    for decade in 0..=decades as u32 {
        let percentile = 100.0 * (1.0 - 10f64.powi(-(decade as i32)));
        let x = x_of(percentile, decades);
        let label = if decade == 0 { "0%".to_string() } else { format!("{}%", trim_float(percentile)) };
        let _ = writeln!(out, r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{bottom}" stroke="#ddd"/>"##);
        let _ = writeln!(out, r#"<text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"#, bottom + 18.0);
    }
    for exponent in low_exp as i32..=high_exp as i32 {
        let y = y_of(10u64.pow(exponent as u32), low_exp, high_exp);
        let _ = writeln!(out, r##"<line x1="{left}" y1="{y:.1}" x2="{right}" y2="{y:.1}" stroke="#ddd"/>"##);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 6.0,
            y + 4.0,
            10u64.pow(exponent as u32)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">percentile (log tail axis, 1/(1-p))</text>"#,
        (left + right) / 2.0,
        bottom + 42.0
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(20,{}) rotate(-90)" text-anchor="middle">latency µs (log)</text>"#,
        (top + bottom) / 2.0
    );
}

fn trim_float(value: f64) -> String {
    let text = format!("{value:.5}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(label: &str, p99: u64) -> RunSummary {
        let mut summary = RunSummary { label: label.into(), scenario: "fan-out".into(), ..RunSummary::default() };
        summary.latency_us.count = 1000;
        summary.latency_us.p99 = p99;
        summary.latency_us.percentiles = vec![(0.0, 10), (90.0, 50), (99.0, p99), (99.9, p99 * 2), (100.0, p99 * 3)];
        summary
    }

    #[test]
    fn svg_has_one_line_per_run_and_tail_ticks() {
        let text = svg(&[run("a<b", 100), run("mosquitto", 900)]);
        assert_eq!(text.matches("<polyline").count(), 2);
        assert!(text.contains("99.9%"));
        assert!(text.contains("a&lt;b"));
        assert!(text.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn tail_axis_is_logarithmic() {
        let decades = 3.0;
        let width = x_of(99.9, decades) - x_of(0.0, decades);
        assert!((x_of(90.0, decades) - x_of(0.0, decades) - width / 3.0).abs() < 0.01);
        assert!((x_of(99.0, decades) - x_of(0.0, decades) - 2.0 * width / 3.0).abs() < 0.01);
    }

    #[test]
    fn table_lists_each_run_with_its_p99() {
        let text = table(&[run("shardmq", 120), run("mosquitto", 900)]);
        assert_eq!(text.lines().count(), 3);
        assert!(text.lines().nth(2).unwrap().contains("900"));
    }
}
