//! Process metrics read from `/proc/self` at scrape time (Linux; nothing elsewhere): resident
//! memory, CPU seconds, open file descriptors and their limit, start time. The `prometheus`
//! crate's `process` feature does the same through `procfs`; these few reads need no crate.

use prometheus::core::{Collector, Desc, Describer};
use prometheus::proto::MetricFamily;
use prometheus::{Counter, Gauge, Opts};

const RSS: &str = "process_resident_memory_bytes";
const VSZ: &str = "process_virtual_memory_bytes";
const CPU: &str = "process_cpu_seconds_total";
const FDS: &str = "process_open_fds";
const MAX_FDS: &str = "process_max_fds";
const START: &str = "process_start_time_seconds";

pub struct ProcessCollector {
    descs: Vec<Desc>,
}

fn opts(name: &str) -> Opts {
    let help = match name {
        RSS => "Resident memory size in bytes.",
        VSZ => "Virtual memory size in bytes.",
        CPU => "User and system CPU time spent, in seconds.",
        FDS => "Open file descriptors.",
        MAX_FDS => "The most file descriptors the process may open.",
        _ => "Start time of the process since the Unix epoch, in seconds.",
    };
    Opts::new(name, help)
}

impl ProcessCollector {
    pub fn new() -> Result<ProcessCollector, prometheus::Error> {
        let descs = [RSS, VSZ, CPU, FDS, MAX_FDS, START]
            .into_iter()
            .map(|n| opts(n).describe())
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ProcessCollector { descs })
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        let Some(p) = read() else {
            return out;
        };
        let mut gauge = |name: &str, v: Option<f64>| {
            if let (Some(v), Ok(g)) = (v, Gauge::with_opts(opts(name))) {
                g.set(v);
                out.extend(g.collect());
            }
        };
        gauge(RSS, Some(p.rss_bytes));
        gauge(VSZ, Some(p.vsize_bytes));
        gauge(FDS, p.open_fds);
        gauge(MAX_FDS, p.max_fds);
        gauge(START, p.start_time);
        if let Ok(c) = Counter::with_opts(opts(CPU)) {
            c.inc_by(p.cpu_seconds);
            out.extend(c.collect());
        }
        out
    }
}

struct Sample {
    rss_bytes: f64,
    vsize_bytes: f64,
    cpu_seconds: f64,
    open_fds: Option<f64>,
    max_fds: Option<f64>,
    start_time: Option<f64>,
}

#[cfg(target_os = "linux")]
fn read() -> Option<Sample> {
    // SAFETY: sysconf only reads configuration values.
    let (tick, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if tick <= 0 || page <= 0 {
        return None;
    }
    let (tick, page) = (tick as f64, page as f64);
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // Field numbers of proc(5) minus 3 (pid, comm and state come first; state is fields[0]).
    let num = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    let (utime, stime) = (num(11)?, num(12)?);
    let starttime = num(19);
    let vsize = num(20)?;
    let rss_pages = num(21)?;
    let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count() as f64);
    let max_fds = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Max open files"))?;
            line.split_whitespace().nth(3)?.parse::<f64>().ok()
        });
    Some(Sample {
        rss_bytes: rss_pages * page,
        vsize_bytes: vsize,
        cpu_seconds: (utime + stime) / tick,
        open_fds,
        max_fds,
        start_time: boot_time.zip(starttime).map(|(b, s)| b + s / tick),
    })
}

#[cfg(not(target_os = "linux"))]
fn read() -> Option<Sample> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn proc_self_reads_plausible_values() {
        let p = read().unwrap();
        assert!(p.rss_bytes > 1e5, "{}", p.rss_bytes);
        assert!(p.open_fds.unwrap() >= 3.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = p.start_time.unwrap();
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start}"
        );
    }
}
