//! The `ferroserve` binary run as a child process with environment variables of the test's
//! choosing (what a deployment sets: `OTEL_*`), its addresses read from its JSON start-up line.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::poll_until;

pub struct Spawned {
    pub http: String,
    pub grpc: String,
    pub metrics: String,
    child: Child,
    log: tempfile::NamedTempFile,
}

impl Spawned {
    /// Serves `repo` on free ports with `env` set; waits for the start-up line.
    pub async fn start(repo: &Path, env: &[(&str, String)]) -> Spawned {
        let log = tempfile::NamedTempFile::new().unwrap();
        // FERROSERVE_BIN: a copy of this branch's binary (the shared target's is overwritten by
        // whoever builds last).
        let bin = std::env::var("FERROSERVE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ferroserve").to_owned());
        let mut cmd = Command::new(bin);
        cmd.args(["serve", "--host", "127.0.0.1", "--http-port", "0"])
            .args(["--grpc-port", "0", "--metrics-port", "0"])
            .args(["--log-format", "json", "--drain-delay", "0"])
            .arg("--model-repository")
            .arg(repo)
            .env("RUST_LOG", "info")
            .env("FERROSERVE_ADMIN_TOKEN", "spawned-test-admin-token")
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        let field = |text: &str, key: &str| -> Option<String> {
            let line = text.lines().find(|l| l.contains("ferroserve serving"))?;
            let v: Value = serde_json::from_str(line).ok()?;
            Some(v["fields"][key].as_str()?.to_owned())
        };
        let path = log.path().to_owned();
        let text = poll_until(
            Duration::from_secs(60),
            "the server never announced its addresses",
            || async { std::fs::read_to_string(&path).unwrap() },
            |text| field(text, "metrics_addr").is_some(),
        )
        .await;
        Spawned {
            http: field(&text, "http_addr").unwrap(),
            grpc: field(&text, "grpc_addr").unwrap(),
            metrics: field(&text, "metrics_addr").unwrap(),
            child,
            log,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap()
    }

    /// One sample of the metrics endpoint (0 when the series is absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.metrics))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find(|l| l.split([' ', '{']).next() == Some(name))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    /// SIGINT, then waits for the process (it flushes its trace exporter on the way out).
    pub fn stop(mut self) -> String {
        // SAFETY: a plain signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().unwrap();
        self.log()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
