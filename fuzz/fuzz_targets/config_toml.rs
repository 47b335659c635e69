//! Arbitrary text as a model's `config.toml` and as the server's configuration file.
#![no_main]

use std::io::Write;
use std::sync::OnceLock;
use std::time::Duration;

use ferroserve::config::{ModelConfig, ServerConfig};
use libfuzzer_sys::fuzz_target;

/// One file per process, rewritten each run: `ServerConfig::load` reads a path.
fn server_file() -> &'static tempfile::NamedTempFile {
    static FILE: OnceLock<tempfile::NamedTempFile> = OnceLock::new();
    FILE.get_or_init(|| {
        tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("a temp file")
    })
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    if let Ok(config) = ModelConfig::parse(text, "m") {
        // The version policy over present versions, the largest included.
        let chosen = config.version_policy.select(&[1, 2, 3, u64::MAX]);
        assert!(chosen.iter().all(|&v| v > 0), "{chosen:?}");
        let _ = format!("{config:?}");
    }
    let file = server_file();
    let mut f = file.reopen().expect("reopen");
    f.set_len(0).expect("truncate");
    f.write_all(text.as_bytes()).expect("write");
    drop(f);
    if let Ok(config) = ServerConfig::load(Some(file.path()), &[]) {
        assert!(config.max_request_bytes > 0);
        let _ = (config.shutdown.timeout(), config.shutdown.drain_delay());
        // What `server` makes of the validated values: each must be a duration.
        for secs in [
            config.repository_poll_secs,
            config.header_read_timeout_secs,
            config.handshake_timeout_secs,
            config.body_read_timeout_secs,
            config.idle_timeout_secs,
            config.http2_keepalive_interval_secs,
            config.http2_keepalive_timeout_secs,
        ] {
            let _ = Duration::from_secs_f64(secs);
        }
    }
});
