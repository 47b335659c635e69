//! `ferroserve models add`: the real binary adds skl2onnx's iris file (and a model with external
//! data) to temporary repositories: the files, the config.toml written from the graph, version
//! numbering, refusals, hidden staging no scan sees, and a live server in poll mode that serves
//! the new version by its next scan with no request failing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestServer;
use ferroserve::config::ModelControlMode;
use prost::Message;
use serde_json::{json, Value};

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(path)
}

fn iris() -> PathBuf {
    data("dim_forms/skl2onnx_iris.onnx")
}

/// `ferroserve models add FILE --name NAME --repository REPO` plus `extra`.
fn add(file: &Path, name: &str, repo: &Path, extra: &[&str]) -> Output {
    // FERROSERVE_BIN: a copy of this checkout's binary, where a shared target dir's
    // `debug/ferroserve` may be another checkout's by the time the test runs.
    let bin = std::env::var_os("FERROSERVE_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_ferroserve")),
        PathBuf::from,
    );
    std::process::Command::new(bin)
        .args(["models", "add"])
        .arg(file)
        .args(["--name", name, "--repository"])
        .arg(repo)
        .args(extra)
        .env_remove("FERROSERVE_MODEL_REPOSITORY")
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `add` that must succeed; returns its standard output.
fn added(file: &Path, name: &str, repo: &Path, extra: &[&str]) -> String {
    let out = add(file, name, repo, extra);
    assert!(
        out.status.success(),
        "models add failed: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `add` that must fail; returns its standard error.
fn refused(file: &Path, name: &str, repo: &Path, extra: &[&str]) -> String {
    let out = add(file, name, repo, extra);
    assert!(
        !out.status.success(),
        "models add succeeded: {}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if p.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn a_new_model_gets_version_1_and_a_config_toml_from_its_graph() {
    let repo = tempfile::tempdir().unwrap();
    let stdout = added(&iris(), "iris", repo.path(), &[]);
    assert_eq!(
        tree(repo.path()),
        ["iris", "iris/1", "iris/1/model.onnx", "iris/config.toml"]
    );
    assert_eq!(
        std::fs::read(repo.path().join("iris/1/model.onnx")).unwrap(),
        std::fs::read(iris()).unwrap()
    );
    let config = std::fs::read_to_string(repo.path().join("iris/config.toml")).unwrap();
    let body: String = config
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        body,
        "backend = \"tract\"\nmax_batch_size = 4\n[dynamic_batching]\n\
         [[input]]\nname = \"input\"\ndatatype = \"FP32\"\ndims = [4]\n\
         [[output]]\nname = \"label\"\ndatatype = \"INT64\"\ndims = []\n\
         [[output]]\nname = \"probabilities\"\ndatatype = \"FP32\"\ndims = [3]"
    );
    assert!(config.contains("backend auto chose tract"), "{config}");
    assert!(stdout.contains("engine: tract"), "{stdout}");
    assert!(
        stdout.contains("backend auto chose tract: it builds the model"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&config),
        "the config written is printed: {stdout}"
    );
    assert!(stdout.contains("ferroserve models load iris"), "{stdout}");
}

#[test]
fn versions_follow_the_highest_present_and_version_sets_one() {
    let repo = tempfile::tempdir().unwrap();
    added(&iris(), "m", repo.path(), &[]);
    added(&iris(), "m", repo.path(), &[]);
    added(&iris(), "m", repo.path(), &["--version", "7"]);
    let stdout = added(&iris(), "m", repo.path(), &[]);
    assert!(stdout.contains("added m version 8"), "{stdout}");
    assert!(stdout.contains("kept the model's config.toml"), "{stdout}");
    let versions: Vec<String> = tree(&repo.path().join("m"))
        .into_iter()
        .filter(|p| !p.contains('/') && p != "config.toml")
        .collect();
    assert_eq!(versions, ["1", "2", "7", "8"]);
}

#[test]
fn an_existing_model_without_config_toml_gets_one_with_its_new_version() {
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(repo.path().join("m/1")).unwrap();
    std::fs::copy(iris(), repo.path().join("m/1/model.onnx")).unwrap();
    let stdout = added(&iris(), "m", repo.path(), &[]);
    assert!(stdout.contains("added m version 2"), "{stdout}");
    assert_eq!(
        tree(repo.path()),
        [
            "m",
            "m/1",
            "m/1/model.onnx",
            "m/2",
            "m/2/model.onnx",
            "m/config.toml"
        ]
    );
    let config = std::fs::read_to_string(repo.path().join("m/config.toml")).unwrap();
    assert!(config.contains("from the graph of version 2"), "{config}");
    assert!(
        config.contains("backend = \"tract\"\nmax_batch_size = 4\n"),
        "{config}"
    );
}

#[test]
fn an_existing_version_is_refused_and_left_as_it_was() {
    let repo = tempfile::tempdir().unwrap();
    added(&iris(), "m", repo.path(), &[]);
    let before = tree(repo.path());
    let err = refused(
        &data("onnx_file/external.onnx"),
        "m",
        repo.path(),
        &["--version", "1"],
    );
    assert!(err.contains("model \"m\" already has version 1"), "{err}");
    assert_eq!(tree(repo.path()), before);
    assert_eq!(
        std::fs::read(repo.path().join("m/1/model.onnx")).unwrap(),
        std::fs::read(iris()).unwrap()
    );
}

#[test]
fn external_data_is_copied_with_the_model() {
    let repo = tempfile::tempdir().unwrap();
    let stdout = added(&data("onnx_file/external.onnx"), "ext", repo.path(), &[]);
    assert_eq!(
        tree(repo.path()),
        [
            "ext",
            "ext/1",
            "ext/1/model.onnx",
            "ext/1/weights.bin",
            "ext/config.toml"
        ]
    );
    assert_eq!(
        std::fs::read(repo.path().join("ext/1/weights.bin")).unwrap(),
        std::fs::read(data("onnx_file/weights.bin")).unwrap()
    );
    assert!(stdout.contains("(model.onnx, weights.bin)"), "{stdout}");
}

#[test]
fn external_data_outside_the_files_directory_is_refused() {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir(src.path().join("sub")).unwrap();
    std::fs::copy(
        data("onnx_file/weights.bin"),
        src.path().join("weights.bin"),
    )
    .unwrap();
    let bytes = std::fs::read(data("onnx_file/external.onnx")).unwrap();
    let mut model = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    for t in &mut model.graph.as_mut().unwrap().initializer {
        for e in &mut t.external_data {
            if e.key == "location" {
                e.value = "../weights.bin".into();
            }
        }
    }
    let file = src.path().join("sub/model.onnx");
    std::fs::write(&file, model.encode_to_vec()).unwrap();
    let repo = tempfile::tempdir().unwrap();
    let err = refused(&file, "ext", repo.path(), &[]);
    assert!(
        err.contains("keeps its data in \"../weights.bin\", which is not a file inside"),
        "{err}"
    );
    assert!(tree(repo.path()).is_empty(), "{:?}", tree(repo.path()));
}

#[test]
fn a_file_that_is_not_onnx_is_refused() {
    let repo = tempfile::tempdir().unwrap();
    let file = repo.path().join("notes.txt");
    std::fs::write(&file, "hello, this is not a model\n").unwrap();
    let err = refused(&file, "m", repo.path(), &[]);
    assert!(err.contains("notes.txt: not an ONNX file"), "{err}");
    assert_eq!(tree(repo.path()), ["notes.txt"]);
}

#[test]
fn a_name_the_scanner_would_skip_is_refused() {
    let repo = tempfile::tempdir().unwrap();
    for name in [".hidden", "a/b", "..", "with space"] {
        let err = refused(&iris(), name, repo.path(), &[]);
        assert!(err.contains("invalid model name"), "{name}: {err}");
    }
    assert!(tree(repo.path()).is_empty());
}

#[test]
fn a_missing_repository_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let err = refused(&iris(), "m", &missing, &[]);
    assert!(
        err.contains(&format!("model repository {}", missing.display())),
        "{err}"
    );
    assert!(!missing.exists());
}

/// A scan running the whole time sees each model whole (config.toml with its first version)
/// and each version with its complete file, never a hidden staging name.
#[test]
fn a_concurrent_scan_never_sees_a_partial_model() {
    let repo = tempfile::tempdir().unwrap();
    let size = std::fs::metadata(iris()).unwrap().len();
    let done = Arc::new(AtomicBool::new(false));
    let scanner = {
        let (root, done) = (repo.path().to_path_buf(), done.clone());
        std::thread::spawn(move || {
            let mut scans = 0u64;
            while !done.load(Ordering::Relaxed) {
                for m in ferroserve::registry::repository::scan(&root.as_path().into()).unwrap() {
                    assert!(!m.name.starts_with('.'), "{}", m.name);
                    assert!(
                        m.path.join("config.toml").is_file(),
                        "{} without config",
                        m.name
                    );
                    assert!(!m.versions.is_empty(), "{} without a version", m.name);
                    for (v, file) in &m.versions {
                        let len = std::fs::metadata(file).map(|f| f.len()).ok();
                        assert_eq!(len, Some(size), "{} version {v}", m.name);
                    }
                }
                scans += 1;
            }
            scans
        })
    };
    for model in ["a", "b"] {
        for _ in 0..3 {
            added(&iris(), model, repo.path(), &[]);
        }
    }
    done.store(true, Ordering::Relaxed);
    let scans = scanner.join().expect("the scanner's checks held");
    assert!(scans > 10, "the scan ran during the adds: {scans} scans");
    assert!(tree(repo.path())
        .iter()
        .all(|p| !p.contains("/.") && !p.starts_with('.')));
}

fn iris_request() -> Value {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4],
                        "data": [5.1, 3.5, 1.4, 0.2]}]})
}

/// The version that answered, or the failure.
async fn infer(c: &reqwest::Client, server: &TestServer) -> Result<String, String> {
    let r = c
        .post(server.url("/v2/models/iris/infer"))
        .json(&iris_request())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let body: Value = r.json().await.map_err(|e| e.to_string())?;
    if status != 200 {
        return Err(format!("{status}: {body}"));
    }
    let label = body["outputs"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["name"] == "label"))
        .map(|o| o["data"].clone());
    if label != Some(json!([0])) {
        return Err(format!("wrong answer: {body}"));
    }
    Ok(body["model_version"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

// The CLI runs on a blocking thread while the server answers on the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_added_under_load_serves_by_the_next_poll_and_no_request_fails() {
    let repo = tempfile::tempdir().unwrap();
    added(&iris(), "iris", repo.path(), &[]);
    let period = Duration::from_secs_f64(0.5);
    let server = Arc::new(
        TestServer::builder()
            .repo(repo.path())
            .control(ModelControlMode::Poll)
            .poll_secs(period.as_secs_f64())
            .start()
            .await,
    );
    let answers: Arc<Mutex<Vec<Result<String, String>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (server, answers, stop) = (server.clone(), answers.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                let a = infer(&c, &server).await;
                answers.lock().unwrap().push(a);
            }
        }));
    }
    let count = |version: &str| {
        let a = answers.lock().unwrap();
        a.iter().filter(|r| r.as_deref() == Ok(version)).count()
    };
    common::wait_until(
        Duration::from_secs(30),
        "version 1 answers under load",
        || {
            let n = count("1");
            async move { n >= 20 }
        },
    )
    .await;

    let repo_path = repo.path().to_path_buf();
    let stdout = tokio::task::spawn_blocking(move || added(&iris(), "iris", &repo_path, &[]))
        .await
        .unwrap();
    assert!(stdout.contains("added iris version 2"), "{stdout}");
    let added_at = Instant::now();
    let c = reqwest::Client::new();
    // The next scan comes within one period; the second is headroom for loading it.
    while infer(&c, &server).await != Ok("2".into()) {
        assert!(
            added_at.elapsed() < period * 2,
            "version 2 not served by the next poll"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = count("2");
    common::wait_until(
        Duration::from_secs(30),
        "version 2 answers under load",
        || {
            let n = count("2");
            async move { n >= seen + 20 }
        },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let answers = std::mem::take(&mut *answers.lock().unwrap());
    let failed: Vec<_> = answers.iter().filter(|a| a.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        answers.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(server.get("/v2/health/ready").await.0, 200);
    assert_eq!(infer(&c, &server).await, Ok("2".into()));
}
