//! Nothing outside the model repository loads: a version directory, a model file or a config
//! that is a symlink out is refused with 400 naming the path, symlinks that stay inside keep
//! working, and the other models keep serving throughout.
#![cfg(unix)]

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use common::{bundled_models, copy_model, TestServer};
use ferroserve::config::ModelControlMode;
use serde_json::Value;

const TOKEN: &str = "test-admin-token-0123456789";

/// An explicit-mode server on `root` with `mlp` loaded.
async fn server_on(root: &Path) -> TestServer {
    TestServer::builder()
        .repo(root)
        .admin_token(TOKEN)
        .control(ModelControlMode::Explicit)
        .load(&["mlp"])
        .start()
        .await
}

/// A repository with the bundled `mlp`, and a folder outside it holding a copy of `mlp` as
/// `elsewhere/1/model.onnx` and `elsewhere/config.toml`.
fn repo_and_outside() -> (tempfile::TempDir, tempfile::TempDir) {
    let repo = common::repo([copy_model("mlp")]);
    let outside = common::repo([copy_model("mlp").named("elsewhere")]);
    (repo, outside)
}

/// Model `evil` in `repo` whose `link` (a path inside its directory: the version directory,
/// the model file or the config) is a symlink to the same path in `outside`'s copy; the rest
/// of `evil` is real. Returns `named`, a path under `evil`, as the refusal names it.
fn evil_linked_out(repo: &Path, outside: &Path, link: &str, named: &str) -> PathBuf {
    let evil = repo.join("evil");
    if link == "config.toml" {
        copy_model("mlp").named("evil").to(repo);
        std::fs::remove_file(evil.join(link)).unwrap();
    } else {
        write_config(&evil);
    }
    std::fs::create_dir_all(evil.join(link).parent().unwrap()).unwrap();
    symlink(outside.join("elsewhere").join(link), evil.join(link)).unwrap();
    repo.canonicalize().unwrap().join("evil").join(named)
}

fn write_config(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(
        bundled_models().join("mlp/config.toml"),
        dir.join("config.toml"),
    )
    .unwrap();
}

async fn load(server: &TestServer, model: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(server.url(&format!("/v2/repository/models/{model}/load")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `model` answers the reference request with the reference output, and health is live.
async fn serves_exactly(server: &TestServer, model: &str) {
    assert_eq!(server.get("/v2/health/live").await.0, 200);
    let r = reqwest::Client::new()
        .post(server.url(&format!("/v2/models/{model}/infer")))
        .json(&common::probe::mlp_json())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{model}: {body}");
    common::probe::assert_mlp_http(&body);
}

/// The load is refused with 400, its message names `path` and says it leaves the repository,
/// the model does not serve and `mlp` still does.
async fn assert_refused(server: &TestServer, model: &str, path: &Path) {
    let (status, body) = load(server, model).await;
    let message = body["error"].as_str().unwrap_or_default();
    assert_eq!(status, 400, "{body}");
    assert!(
        message.contains("outside the model repository"),
        "{message}"
    );
    assert!(message.contains(&path.display().to_string()), "{message}");
    let r = reqwest::Client::new()
        .post(server.url(&format!("/v2/models/{model}/infer")))
        .json(&common::probe::mlp_json())
        .send()
        .await
        .unwrap();
    assert_ne!(
        r.status(),
        200,
        "{model} serves from outside the repository"
    );
    serves_exactly(server, "mlp").await;
}

#[tokio::test]
async fn a_version_directory_symlinked_out_is_refused_with_400_naming_the_path() {
    let (repo, outside) = repo_and_outside();
    let file = evil_linked_out(repo.path(), outside.path(), "1", "1/model.onnx");
    let server = server_on(repo.path()).await;
    assert_refused(&server, "evil", &file).await;
}

#[tokio::test]
async fn a_model_file_symlinked_out_is_refused_with_400() {
    let (repo, outside) = repo_and_outside();
    let file = evil_linked_out(repo.path(), outside.path(), "1/model.onnx", "1/model.onnx");
    let server = server_on(repo.path()).await;
    assert_refused(&server, "evil", &file).await;
}

#[tokio::test]
async fn a_config_symlinked_out_is_refused_with_400() {
    let (repo, outside) = repo_and_outside();
    let file = evil_linked_out(repo.path(), outside.path(), "config.toml", "config.toml");
    let server = server_on(repo.path()).await;
    assert_refused(&server, "evil", &file).await;
}

#[tokio::test]
async fn symlinks_that_stay_inside_the_repository_serve() {
    let repo = common::repo([copy_model("mlp")]);
    // `dirlinked`: its config and its version directory are symlinks to mlp's.
    let dirlinked = repo.path().join("dirlinked");
    std::fs::create_dir_all(&dirlinked).unwrap();
    symlink("../mlp/config.toml", dirlinked.join("config.toml")).unwrap();
    symlink("../mlp/1", dirlinked.join("1")).unwrap();
    // `filelinked`: its model file is a symlink to mlp's.
    let filelinked = repo.path().join("filelinked");
    write_config(&filelinked);
    std::fs::create_dir_all(filelinked.join("1")).unwrap();
    symlink("../../mlp/1/model.onnx", filelinked.join("1/model.onnx")).unwrap();
    let server = server_on(repo.path()).await;
    for model in ["dirlinked", "filelinked"] {
        let (status, body) = load(&server, model).await;
        assert_eq!(status, 200, "{model}: {body}");
        serves_exactly(&server, model).await;
    }
    serves_exactly(&server, "mlp").await;
}

#[tokio::test]
async fn at_start_a_version_symlinked_out_is_unavailable_and_the_others_serve() {
    let (repo, outside) = repo_and_outside();
    evil_linked_out(repo.path(), outside.path(), "1", "1/model.onnx");
    let server = TestServer::builder()
        .repo(repo.path())
        .wait_ready(false)
        .start()
        .await;
    let rows = common::poll_until(
        std::time::Duration::from_secs(30),
        "evil never reported",
        || async {
            let r = reqwest::Client::new()
                .post(server.url("/v2/repository/index"))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()
        },
        |rows| {
            rows.as_array()
                .unwrap()
                .iter()
                .any(|r| r["name"] == "evil" && r["state"] == "UNAVAILABLE" && r["version"] == "1")
        },
    )
    .await;
    let evil = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "evil")
        .unwrap();
    assert!(
        evil["reason"]
            .as_str()
            .unwrap()
            .contains("outside the model repository"),
        "{evil}"
    );
    serves_exactly(&server, "mlp").await;
}
