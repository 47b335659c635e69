//! Health probes under a connection attack (issue 13): on each of the HTTP and gRPC ports,
//! `--idle` connections that send nothing and `--slow` ones that trickle (HTTP: headers, a body
//! or pipelined requests read by nobody, a byte or a burst a second; gRPC: the HTTP/2 preface
//! or a ModelInfer body, a byte a second), each reconnecting `--reconnect-ms` after the server
//! closes it, while four probe loops ask for health: `GET /v2/health/live` and gRPC ServerLive,
//! each on a fresh connection and on one kept alive. The server is the release binary as a
//! separate process (its own runtime, its own descriptors: what an operator runs), started once
//! per `--limits` value of `max_connections`; its RSS is read from /proc.
//!
//!     cargo bench --bench connections -- [--idle 1000] [--slow 1000] [--secs 30]
//!         [--limits 4096,1000] [--reconnect-ms 1000] [--server target/release/ferroserve]

mod attack;
mod probes;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use attack::{attacker, lock, Attack, Kind};
use probes::{grpc_probes, http_fresh, http_kept, ok_head};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The attack needs a descriptor per connection, twice over (both ends on this machine); the
/// server inherits the raised limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    lim.rlim_cur
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

fn start_server(bin: &str, limit: usize) -> (Child, SocketAddr, SocketAddr) {
    let (http, grpc, metrics) = (free_port(), free_port(), free_port());
    let child = Command::new(bin)
        .args(["serve", "--host", "127.0.0.1"])
        .args([
            "--http-port",
            &http.to_string(),
            "--grpc-port",
            &grpc.to_string(),
        ])
        .args(["--metrics-port", &metrics.to_string()])
        .args([
            "--model-repository",
            concat!(env!("CARGO_MANIFEST_DIR"), "/models"),
        ])
        .env("FERROSERVE_MAX_CONNECTIONS", limit.to_string())
        .env("FERROSERVE_ADMIN_TOKEN", "connections-bench-token")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
    let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    (child, addr(http), addr(grpc))
}

async fn wait_live(http: SocketAddr) {
    let started = Instant::now();
    loop {
        let mut got = Vec::new();
        if let Ok(mut tcp) = TcpStream::connect(http).await {
            let req = b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
            if tcp.write_all(req).await.is_ok()
                && tcp.read_to_end(&mut got).await.is_ok()
                && ok_head(&got).is_ok()
            {
                return;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the server did not get ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One server, one attack: its rows of the three tables.
async fn run(bin: &str, limit: usize) -> (Vec<String>, Vec<String>, String) {
    let (idle, slow, secs) = (
        arg("--idle", 1000),
        arg("--slow", 1000),
        arg("--secs", 30.0),
    );
    let (mut child, http, grpc) = start_server(bin, limit);
    wait_live(http).await;
    let rss_before = rss_kib(child.id());
    let attack = Arc::new(Attack {
        stop: AtomicBool::new(false),
        open_now: AtomicUsize::new(0),
        closes: Mutex::default(),
        reconnect: Duration::from_millis(arg("--reconnect-ms", 1000)),
    });
    let http_slow = [Kind::SlowHeaders, Kind::SlowBody, Kind::SlowReader];
    let grpc_slow = [Kind::SlowPreface, Kind::SlowGrpcBody];
    let mut tasks = Vec::new();
    for (port, addr, kinds) in [
        ("http", http, &http_slow[..]),
        ("grpc", grpc, &grpc_slow[..]),
    ] {
        let plan = (0..idle)
            .map(|_| Kind::Silent)
            .chain((0..slow).map(|i| kinds[i % kinds.len()]));
        for kind in plan {
            tasks.push(tokio::spawn(attacker(attack.clone(), port, addr, kind)));
            // Opening 4,000 at once would only measure the listen backlog.
            tokio::task::yield_now().await;
        }
    }
    let opening = Instant::now();
    while attack.open_now.load(Ordering::Relaxed) < (idle + slow) * 2 * 9 / 10
        && opening.elapsed() < Duration::from_secs(30)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let open_at_start = attack.open_now.load(Ordering::Relaxed);
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let probes = (
        tokio::spawn(http_fresh(http, until)),
        tokio::spawn(http_kept(http, until)),
        tokio::spawn(grpc_probes(grpc, until, true)),
        tokio::spawn(grpc_probes(grpc, until, false)),
    );
    let mut rss_peak = 0;
    while Instant::now() < until {
        rss_peak = rss_peak.max(rss_kib(child.id()));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let open_at_end = attack.open_now.load(Ordering::Relaxed);
    let mut rows = Vec::new();
    for (name, task) in [
        ("HTTP live, fresh connection", probes.0),
        ("HTTP live, kept alive", probes.1),
    ] {
        rows.push(task.await.expect("probe loop").row(limit, name));
    }
    for (name, task) in [
        ("gRPC ServerLive, fresh channel", probes.2),
        ("gRPC ServerLive, kept channel", probes.3),
    ] {
        rows.push(task.await.expect("probe loop").row(limit, name));
    }
    let rss_end = rss_kib(child.id());
    attack.stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let closes = lock(&attack.closes);
    let mut attackers = Vec::new();
    for (key, opened) in &closes.opened {
        let mut ages = closes.ages.get(key).cloned().unwrap_or_default();
        ages.sort_by(f64::total_cmp);
        let at = |p: f64| {
            ages.get(((ages.len() as f64 - 1.0) * p).round() as usize)
                .map_or("-".into(), |a| format!("{a:.1}"))
        };
        attackers.push(format!(
            "| {limit} | {} | {:?} | {opened} | {} | {} | {} | {} |",
            key.0,
            key.1,
            ages.len(),
            at(0.0),
            at(0.5),
            at(1.0)
        ));
    }
    let state = format!(
        "| {limit} | {open_at_start} | {open_at_end} | {} | {} | {} |",
        rss_before / 1024,
        rss_peak / 1024,
        rss_end / 1024
    );
    (rows, attackers, state)
}

fn main() {
    let nofile = raise_nofile();
    let default_bin = env!("CARGO_BIN_EXE_ferroserve").to_owned();
    let bin: String = arg("--server", default_bin);
    let limits: String = arg("--limits", "4096,1000".to_owned());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (mut probes, mut attackers, mut states) = (Vec::new(), Vec::new(), Vec::new());
    for limit in limits.split(',').filter_map(|l| l.trim().parse().ok()) {
        eprintln!("max_connections = {limit} ...");
        let (p, a, s) = rt.block_on(run(&bin, limit));
        probes.extend(p);
        attackers.extend(a);
        states.push(s);
    }
    println!(
        "`cargo bench --bench connections -- --idle {} --slow {} --secs {} --limits {limits}` ({bin}, RLIMIT_NOFILE {nofile})\n",
        arg("--idle", 1000),
        arg("--slow", 1000),
        arg("--secs", 30.0)
    );
    println!("| max_connections | probe | answered | failed | p50 ms | p99 ms | max ms |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    probes.iter().for_each(|r| println!("{r}"));
    println!("\n| max_connections | port | attacker | opened | closed by the server | first closed at age s | median age s | last s |");
    println!("|---:|---|---|---:|---:|---:|---:|---:|");
    attackers.iter().for_each(|r| println!("{r}"));
    println!("\n| max_connections | attackers open when probing began | at its end | server RSS before the attack, MiB | peak | end |");
    println!("|---:|---:|---:|---:|---:|---:|");
    states.iter().for_each(|r| println!("{r}"));
}
