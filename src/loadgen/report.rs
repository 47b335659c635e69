//! The result of a run: built from the merged measurements, printed as a table, written as JSON.
//! Field meanings are documented in the module doc of [`crate::loadgen`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::config::{BenchArgs, Load, Plan};
use super::stats::Measured;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub min: u64,
    pub mean: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Report {
    pub protocol: String,
    pub url: String,
    pub model: String,
    pub version: Option<String>,
    pub batch_size: usize,
    pub mode: String,
    pub concurrency: Option<usize>,
    pub rate: Option<f64>,
    pub max_in_flight: Option<usize>,
    pub connections: usize,
    pub threads: usize,
    pub warmup_secs: f64,
    pub duration_secs: f64,
    pub requests: u64,
    pub errors_total: u64,
    pub errors: BTreeMap<String, u64>,
    pub dropped_by_client: u64,
    pub throughput_rps: f64,
    pub rows_per_sec: f64,
    pub latency_us: Latency,
    pub rejected: u64,
    pub rejected_latency_us: Latency,
    pub client_cpu_us_per_request: Option<f64>,
    pub client_cpu_percent: Option<f64>,
}

impl Latency {
    fn of(h: &hdrhistogram::Histogram<u64>) -> Latency {
        let empty = h.is_empty();
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
            min: if empty { 0 } else { h.min() },
            mean: if empty { 0.0 } else { h.mean() },
        }
    }
}

impl Report {
    pub fn new(plan: &Plan, args: &BenchArgs, m: &Measured) -> Report {
        let secs = m.window.as_secs_f64();
        let per_sec = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        let errors_total = m.stats.errors_total();
        let attempted = m.stats.ok + errors_total;
        let cpu_us = m.cpu.map(|c| c.as_secs_f64() * 1e6);
        let (concurrency, rate, max_in_flight) = match plan.load {
            Load::Closed { concurrency } => (Some(concurrency), None, None),
            Load::Open {
                rate,
                max_in_flight,
            } => (None, Some(rate), Some(max_in_flight)),
        };
        Report {
            protocol: plan.protocol.as_str().into(),
            url: plan.addr.clone(),
            model: plan.model.clone(),
            version: plan.version.clone(),
            batch_size: plan.batch_size,
            mode: if concurrency.is_some() {
                "closed"
            } else {
                "open"
            }
            .into(),
            concurrency,
            rate,
            max_in_flight,
            connections: plan.connections,
            threads: args.threads,
            warmup_secs: plan.warmup.as_secs_f64(),
            duration_secs: secs,
            requests: m.stats.ok,
            errors_total,
            errors: m.stats.errors.iter().map(|&(c, n)| (c.name(), n)).collect(),
            dropped_by_client: m.dropped_by_client,
            throughput_rps: per_sec(m.stats.ok),
            rows_per_sec: per_sec(m.stats.ok) * plan.batch_size as f64,
            latency_us: Latency::of(&m.stats.latency_us),
            rejected: m.stats.rejected_latency_us.len(),
            rejected_latency_us: Latency::of(&m.stats.rejected_latency_us),
            client_cpu_us_per_request: cpu_us
                .filter(|_| attempted > 0)
                .map(|us| us / attempted as f64),
            client_cpu_percent: cpu_us.filter(|_| secs > 0.0).map(|us| us / 1e4 / secs),
        }
    }

    /// `c=32` or `r=5000/s`.
    fn load_label(&self) -> String {
        match (self.concurrency, self.rate) {
            (Some(c), _) => format!("c={c}"),
            (None, Some(r)) => format!("r={r}/s"),
            _ => "-".into(),
        }
    }

    /// `503:2 io:1`, `-` when none (drops included, as `dropped_by_client`).
    fn errors_label(&self) -> String {
        let mut s = String::new();
        for (code, n) in &self.errors {
            let _ = write!(s, "{}{code}:{n}", if s.is_empty() { "" } else { " " });
        }
        if self.dropped_by_client > 0 {
            let sep = if s.is_empty() { "" } else { " " };
            let _ = write!(s, "{sep}dropped_by_client:{}", self.dropped_by_client);
        }
        if s.is_empty() {
            s.push('-');
        }
        s
    }

    pub fn table_header() -> String {
        format!(
            "{:<12} {:<10} {:>4} {:>10} {:>10} {:>11} {:>7} {:>7} {:>7} {:>7} {:>8} {:>9} {}",
            "protocol",
            "model",
            "B",
            "load",
            "req/s",
            "rows/s",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "cpu_us/rq",
            "errors"
        )
    }

    /// The refused requests' latency line, when there were any; latencies in µs.
    pub fn rejected_row(&self) -> Option<String> {
        let l = &self.rejected_latency_us;
        (self.rejected > 0).then(|| {
            format!(
                "rejected (429 / RESOURCE_EXHAUSTED): {} ({:.1}/s), latency p50 {} p90 {} p99 {} p99.9 {} max {}",
                self.rejected,
                self.rejected as f64 / self.duration_secs.max(1e-9),
                l.p50,
                l.p90,
                l.p99,
                l.p999,
                l.max
            )
        })
    }

    /// One line under [`Report::table_header`]; latencies in µs.
    pub fn table_row(&self) -> String {
        let cpu = self
            .client_cpu_us_per_request
            .map_or_else(|| "-".into(), |c| format!("{c:.1}"));
        let l = &self.latency_us;
        format!(
            "{:<12} {:<10} {:>4} {:>10} {:>10.1} {:>11.1} {:>7} {:>7} {:>7} {:>7} {:>8} {:>9} {}",
            self.protocol,
            self.model,
            self.batch_size,
            self.load_label(),
            self.throughput_rps,
            self.rows_per_sec,
            l.p50,
            l.p90,
            l.p99,
            l.p999,
            l.max,
            cpu,
            self.errors_label()
        )
    }
}
