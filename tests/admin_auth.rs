//! Issue 13, item 7 and the auth parts of item 6: the control plane is closed by default (a
//! server without a configured token makes one and writes it to a file only its user reads), the
//! CLIs find that token, only `allow_unauthenticated_admin` opens it, the bearer scheme is
//! case-insensitive, and the token is checked before a byte of the body is read (HTTP) or
//! decoded (gRPC).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{copy_model, TestServer};
use ferroserve::config::ModelControlMode;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "admin-auth-test-token";

/// Explicit mode over a repository of iris and mlp, mlp loaded.
async fn explicit(
    configure: impl FnOnce(&mut ferroserve::config::ServerConfig),
) -> (TestServer, tempfile::TempDir) {
    let dir = common::repo([copy_model("iris"), copy_model("mlp")]);
    let server = TestServer::builder()
        .repo(dir.path())
        .control(ModelControlMode::Explicit)
        .load(&["mlp"])
        .configure(configure)
        .start()
        .await;
    (server, dir)
}

/// `POST path` with `authorization` as the header's whole value (or none).
async fn post(server: &TestServer, path: &str, authorization: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().post(server.url(path));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

const LOAD_IRIS: &str = "/v2/repository/models/iris/load";

#[tokio::test]
async fn without_a_configured_token_mutations_need_the_token_the_server_made() {
    let (server, _dir) = explicit(|_| {}).await;
    let (status, body) = post(&server, LOAD_IRIS, None).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("admin_token_file"),
        "{body}"
    );
    let made = server.made_admin_token();
    assert_eq!(made.len(), 64, "{made}");
    let (status, body) = post(&server, LOAD_IRIS, Some(&format!("Bearer {made}"))).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = server.get("/v2/models/iris/ready").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_made_token_file_is_readable_by_its_owner_only() {
    let (server, _dir) = explicit(|_| {}).await;
    let meta = std::fs::metadata(&server.admin_token_file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let parent = std::fs::metadata(server.admin_token_file.parent().unwrap()).unwrap();
    assert_eq!(
        parent.permissions().mode() & 0o022,
        0,
        "others cannot write its directory"
    );
}

#[tokio::test]
async fn two_servers_make_different_tokens() {
    let (a, _da) = explicit(|_| {}).await;
    let (b, _db) = explicit(|_| {}).await;
    assert_ne!(a.made_admin_token(), b.made_admin_token());
}

#[tokio::test]
async fn a_configured_token_writes_no_token_file() {
    let (server, _dir) = explicit(|c| c.admin_token = Some(TOKEN.into())).await;
    assert!(!server.admin_token_file.exists());
}

#[tokio::test]
async fn allow_unauthenticated_admin_opens_mutations() {
    let (server, _dir) = explicit(|c| c.allow_unauthenticated_admin = true).await;
    let (status, body) = post(&server, LOAD_IRIS, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(!server.admin_token_file.exists());
}

#[tokio::test]
async fn a_token_directory_others_can_write_fails_the_start() {
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let file = shared.path().join("admin-token");
    let err = TestServer::builder()
        .configure(|c| c.admin_token_file = Some(file.clone()))
        .start_fails()
        .await;
    let err = format!("{err:#}");
    assert!(err.contains("cannot write the admin token file"), "{err}");
    assert!(err.contains("others cannot write"), "{err}");
    assert!(!file.exists());
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let (server, _dir) = explicit(|c| c.admin_token = Some(TOKEN.into())).await;
    for scheme in ["bearer", "BEARER", "bEaReR"] {
        let (status, body) = post(&server, LOAD_IRIS, Some(&format!("{scheme} {TOKEN}"))).await;
        assert_eq!(status, 200, "{scheme}: {body}");
    }
    let (status, _) = post(&server, LOAD_IRIS, Some(&format!("Basic {TOKEN}"))).await;
    assert_eq!(status, 401);
}

/// Sends the head of `method path` announcing a 64 MiB body and 1 KiB of it, and returns what
/// the server answers while the rest is never sent.
async fn answer_to_a_huge_unauthenticated_body(
    server: &TestServer,
    method: &str,
    path: &str,
) -> String {
    let mut tcp = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        64u64 << 20
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&[b' '; 1024]).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer comes without the body: a bounded wait for the whole head and JSON.
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = tcp.read(&mut buf).await.unwrap_or(0);
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if n == 0 || text.contains("\r\n\r\n{") && text.ends_with('}') {
                break;
            }
        }
    })
    .await
    .expect("answered before the body was sent");
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn an_unauthenticated_traffic_put_with_a_64_mib_body_is_401_unread() {
    let (server, _dir) = explicit(|c| c.admin_token = Some(TOKEN.into())).await;
    let got = answer_to_a_huge_unauthenticated_body(&server, "PUT", "/v2/models/mlp/traffic").await;
    assert!(got.starts_with("HTTP/1.1 401"), "{got}");
    assert!(
        got.contains("\"error\":\"missing 'Authorization: Bearer <token>'"),
        "{got}"
    );
    let (status, _) = server.get("/v2/health/live").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_unauthenticated_load_with_a_64_mib_body_is_401_unread() {
    let (server, _dir) = explicit(|c| c.admin_token = Some(TOKEN.into())).await;
    let got = answer_to_a_huge_unauthenticated_body(&server, "POST", LOAD_IRIS).await;
    assert!(got.starts_with("HTTP/1.1 401"), "{got}");
    let (status, _) = server.get("/v2/models/iris/ready").await;
    assert_ne!(status, 200, "iris stays unloaded");
    let (status, _) = server.get("/v2/health/live").await;
    assert_eq!(status, 200);
}

/// `path` called over gRPC with `msg` as its encoded message and `authorization` as metadata.
async fn raw_admin_call(
    server: &TestServer,
    path: &'static str,
    msg: bytes::Bytes,
    authorization: Option<&str>,
) -> tonic::Status {
    let channel = tonic::transport::Channel::from_shared(server.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut req = tonic::Request::new(msg);
    if let Some(a) = authorization {
        req.metadata_mut()
            .insert("authorization", a.parse().unwrap());
    }
    common::raw_codec::unary::<common::admin_pb::TrafficPolicy>(channel, path, req)
        .await
        .expect_err("refused")
}

const GRPC_MUTATIONS: [&str; 3] = [
    "/ferroserve.admin.v1.TrafficAdmin/SetTraffic",
    "/ferroserve.admin.v1.TrafficAdmin/StartRollout",
    "/inference.GRPCInferenceService/RepositoryModelLoad",
];

#[tokio::test]
async fn an_unauthenticated_grpc_mutation_with_a_huge_body_is_unauthenticated() {
    let (server, _dir) = explicit(|c| c.admin_token = Some(TOKEN.into())).await;
    // Over tonic's 4 MiB decoding limit: decoded first, it was RESOURCE_EXHAUSTED.
    let huge = bytes::Bytes::from(vec![0u8; 8 << 20]);
    for path in GRPC_MUTATIONS {
        let status = raw_admin_call(&server, path, huge.clone(), None).await;
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{path}: {status:?}"
        );
        assert!(
            status
                .message()
                .starts_with("missing 'Authorization: Bearer"),
            "{status:?}"
        );
    }
    let (status, _) = server.get("/v2/health/live").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_unauthenticated_grpc_mutation_with_a_body_that_is_not_protobuf_is_unauthenticated() {
    let (server, _dir) = explicit(|c| c.admin_token = Some(TOKEN.into())).await;
    let garbage = bytes::Bytes::from_static(&[0xff; 64]);
    let wrong = Some("Bearer not-the-token");
    for path in GRPC_MUTATIONS {
        let status = raw_admin_call(&server, path, garbage.clone(), wrong).await;
        assert_eq!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{path}: {status:?}"
        );
        assert_eq!(status.message(), "invalid admin token");
        // With the token the same body reaches the decoder: the layer let it through.
        let right = format!("Bearer {TOKEN}");
        let status = raw_admin_call(&server, path, garbage.clone(), Some(&right)).await;
        assert_ne!(
            status.code(),
            tonic::Code::Unauthenticated,
            "{path}: {status:?}"
        );
        assert!(status.message().contains("decode"), "{path}: {status:?}");
    }
    let (status, _) = server.get("/v2/models/iris/ready").await;
    assert_ne!(status, 200, "iris stays unloaded");
}

// The CLI blocks this thread while the server answers it: the server needs other threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_models_cli_reads_the_made_token_from_the_token_file() {
    let (server, _dir) = explicit(|_| {}).await;
    let cli = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ferroserve"))
            .args(["models", "load", "iris", "--url", &server.grpc_url()])
            .arg("--token-file")
            .arg(file)
            .env_remove("FERROSERVE_ADMIN_TOKEN")
            .output()
            .unwrap()
    };
    let missing = cli(&server.admin_token_file.with_file_name("none"));
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("Unauthenticated"), "{err}");
    let out = cli(&server.admin_token_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "loaded iris");
    let (status, _) = server.get("/v2/models/iris/ready").await;
    assert_eq!(status, 200);
}
