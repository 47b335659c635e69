//! Certificates reloaded without a restart: files replaced on disk are presented to new
//! connections (open ones keep theirs), on the poll or on SIGHUP; a broken replacement keeps the
//! old certificate serving and is counted in `ferroserve_tls_reloads_total{result="error"}`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::certs::{self, trusting, Pki};
use common::{poll_until, reference, TestServer};
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RELOAD_LIMIT: Duration = Duration::from_secs(15);

async fn start(pki: &Pki, poll_secs: f64) -> TestServer {
    let mut tls = pki.tls(None);
    tls.reload_poll_secs = poll_secs;
    TestServer::builder()
        .https(trusting(&pki.ca).build().unwrap())
        .configure(move |c| c.tls = tls)
        .start()
        .await
}

/// Replaces `path` in one step (write aside, rename), as deployment tools do.
fn replace(path: &Path, contents: &str) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).unwrap();
    std::fs::rename(&aside, path).unwrap();
}

/// The certificate a new connection to the HTTP port is shown.
async fn presented(server: &TestServer, pki: &Pki) -> CertificateDer<'static> {
    let tls = certs::connect(server.http, &pki.ca.der, None, &[b"http/1.1"])
        .await
        .unwrap();
    certs::peer_leaf(&tls)
}

async fn wait_presented(server: &TestServer, pki: &Pki, want: &CertificateDer<'static>) {
    poll_until(
        RELOAD_LIMIT,
        "new connections were shown the replaced certificate",
        || async { u8::from(presented(server, pki).await == *want) },
        |same| *same == 1,
    )
    .await;
}

async fn wait_reload_errors(server: &TestServer, count: u32) {
    let line = format!("ferroserve_tls_reloads_total{{result=\"error\"}} {count}");
    poll_until(
        RELOAD_LIMIT,
        &format!("the metrics showed {line}"),
        || async { u8::from(server.metrics_text().await.contains(&line)) },
        |seen| *seen == 1,
    )
    .await;
}

async fn assert_serves(server: &TestServer) {
    let (status, _) = server.get("/v2/health/live").await;
    assert_eq!(status, 200);
    let r = reference("iris");
    let req = json!({"inputs": [r.inputs[0].json()], "outputs": [{"name": "label"}]});
    let body: Value = server
        .client
        .post(server.url("/v2/models/iris/infer"))
        .json(&req)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let labels: Vec<i64> = body["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let want = r.outputs.iter().find(|o| o.name == "label").unwrap();
    assert_eq!(labels, want.i64s());
}

#[tokio::test]
async fn a_replaced_certificate_is_shown_to_new_connections_and_open_ones_keep_theirs() {
    let pki = Pki::new();
    let server = start(&pki, 0.1).await;
    let mut open = certs::connect(server.http, &pki.ca.der, None, &[b"http/1.1"])
        .await
        .unwrap();
    assert_eq!(certs::peer_leaf(&open), pki.leaf.der);

    let next = pki.ca.server();
    replace(&pki.key, &next.key_pem);
    replace(&pki.cert, &next.cert_pem);
    wait_presented(&server, &pki, &next.der).await;

    assert_eq!(certs::peer_leaf(&open), pki.leaf.der);
    let ask = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    open.write_all(ask).await.unwrap();
    let mut answer = Vec::new();
    open.read_to_end(&mut answer).await.unwrap();
    assert!(
        answer.starts_with(b"HTTP/1.1 200"),
        "the open connection was not served"
    );
    assert_serves(&server).await;
}

#[tokio::test]
async fn an_unparsable_replacement_keeps_the_old_certificate_and_is_counted() {
    let pki = Pki::new();
    let server = start(&pki, 0.1).await;
    replace(&pki.cert, "-----BEGIN CERTIFICATE-----\nnot base64\n");
    wait_reload_errors(&server, 1).await;
    assert_eq!(presented(&server, &pki).await, pki.leaf.der);
    assert_serves(&server).await;

    // The watcher lives on: a valid set afterwards is taken.
    let next = pki.ca.server();
    replace(&pki.key, &next.key_pem);
    replace(&pki.cert, &next.cert_pem);
    wait_presented(&server, &pki, &next.der).await;
}

#[tokio::test]
async fn a_new_certificate_without_its_key_keeps_the_old_certificate() {
    let pki = Pki::new();
    let server = start(&pki, 0.1).await;
    replace(&pki.cert, &pki.ca.server().cert_pem);
    wait_reload_errors(&server, 1).await;
    assert_eq!(presented(&server, &pki).await, pki.leaf.der);
    assert!(!server
        .metrics_text()
        .await
        .contains("ferroserve_tls_reloads_total{result=\"ok\"}"));
    assert_serves(&server).await;
}

#[tokio::test]
async fn sighup_reloads_the_certificate_without_waiting_for_the_poll() {
    // nextest runs each test in its own process: the signal reaches this server alone.
    let pki = Pki::new();
    let server = start(&pki, 3600.0).await;
    let next = pki.ca.server();
    replace(&pki.key, &next.key_pem);
    replace(&pki.cert, &next.cert_pem);
    // SAFETY: kill on our own pid; the server has installed its SIGHUP handler at start.
    assert_eq!(unsafe { libc::kill(libc::getpid(), libc::SIGHUP) }, 0);
    wait_presented(&server, &pki, &next.der).await;
    assert_serves(&server).await;
}
