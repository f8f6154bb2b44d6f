//! The two exposition formats and which one a client gets.
//!
//! `/metrics` speaks OpenMetrics 1.0.0 to clients that ask for it in
//! `Accept` (Prometheus does) and the Prometheus text format 0.0.4 to
//! everyone else (curl, `promtool check metrics`), as the official client
//! libraries do. prometheus-client writes only OpenMetrics; the 0.0.4 text
//! is derived from it here.

use std::fmt::Write as _;

/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of the Prometheus text format.
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// An exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0.0 text ([`OPENMETRICS_CONTENT_TYPE`]).
    OpenMetrics,
    /// Prometheus text 0.0.4 ([`PROMETHEUS_TEXT_CONTENT_TYPE`]).
    PrometheusText,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
            Format::PrometheusText => PROMETHEUS_TEXT_CONTENT_TYPE,
        }
    }

    /// The format to answer a request with this `Accept` header in:
    /// OpenMetrics when it is named and preferred at least as much as
    /// plain text, else Prometheus text.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let (mut om, mut text) = (0.0_f64, 0.0_f64);
        for range in accept.unwrap_or("").split(',') {
            let mut params = range.split(';');
            let media = params.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = params
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f64>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => om = om.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
        if om > 0.0 && om >= text {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }
}

/// Rewrites prometheus-client's OpenMetrics output as Prometheus text
/// format 0.0.4: counter families are named with their `_total` suffix in
/// HELP and TYPE (OpenMetrics names the family without it), and the
/// `# UNIT` and `# EOF` lines, which 0.0.4 does not know, are dropped.
/// Samples are identical in both formats.
pub(super) fn openmetrics_to_prometheus_text(om: &str, out: &mut String) {
    let counters: Vec<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(&name) {
                let _ = writeln!(out, "{prefix}{name}_total {tail}");
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
}
