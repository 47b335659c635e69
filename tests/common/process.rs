//! Measurements of the test process itself, for the tests that check it does not grow.
//! RSS and the thread count are the process's: they measure one server only when nothing else
//! runs in the process (see `assert_alone_in_this_process`).

pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// RSS and the thread count are the test process's: they measure this test's server only when
/// nothing else runs in the process. nextest runs every test in its own process
/// (.config/nextest.toml says so); under `cargo test` the test must be run alone, as
/// scripts/test.sh does without nextest. Anything else fails here instead of measuring other
/// tests' servers.
pub fn assert_alone_in_this_process(test: &str) {
    let binary = std::env::args()
        .next()
        .and_then(|a| {
            let name = std::path::Path::new(&a).file_name()?.to_str()?.to_owned();
            Some(name.split('-').next().unwrap_or(&name).to_owned())
        })
        .unwrap_or_default();
    let nextest = std::env::var("NEXTEST_EXECUTION_MODE").as_deref() == Ok("process-per-test");
    let args: Vec<String> = std::env::args().collect();
    let alone = args.iter().any(|a| a == "--exact") && args.iter().any(|a| a == test);
    assert!(
        nextest || alone,
        "{test} measures process-wide RSS and threads: run it under cargo nextest, or alone with \
         `cargo test --test {binary} -- --exact {test}` (args: {args:?})"
    );
}
