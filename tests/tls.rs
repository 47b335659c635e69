//! TLS on the HTTP and gRPC ports with certificates made at test time: HTTPS over HTTP/1.1
//! and HTTP/2 with exact answers, clients that do not trust the CA, plain HTTP on the TLS
//! port, silent clients, mTLS refusals at the handshake, gRPC over TLS, and a bad start-up.
//! Certificate reloads are in tests/tls_reload.rs.

mod common;

use std::time::Duration;

use common::certs::{self, trusting, Ca, Leaf, Pki};
use common::{pb, reference, TestServer};
use ferroserve::config::{ServerConfig, TlsConfig};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(tls: TlsConfig, client: reqwest::Client, edit: fn(&mut ServerConfig)) -> TestServer {
    TestServer::builder()
        .https(client)
        .configure(move |c| {
            c.tls = tls;
            edit(c);
        })
        .start()
        .await
}

/// POSTs the iris reference over `client`: the labels must be exact. Returns the HTTP version.
async fn assert_iris_exact(server: &TestServer, client: &reqwest::Client) -> reqwest::Version {
    let r = reference("iris");
    let req = json!({"inputs": [r.inputs[0].json()], "outputs": [{"name": "label"}]});
    let resp = client
        .post(server.url("/v2/models/iris/infer"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let version = resp.version();
    let body: Value = resp.json().await.unwrap();
    let labels: Vec<i64> = body["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let want = r.outputs.iter().find(|o| o.name == "label").unwrap();
    assert_eq!(labels, want.i64s());
    version
}

async fn assert_live(server: &TestServer) {
    let (status, _) = server.get("/v2/health/live").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn https_over_http1_serves_health_and_an_exact_inference() {
    let pki = Pki::new();
    let client = trusting(&pki.ca).http1_only().build().unwrap();
    let server = start(pki.tls(None), client.clone(), |_| {}).await;
    assert!(server.url("/").starts_with("https://"));
    assert_live(&server).await;
    assert_eq!(
        assert_iris_exact(&server, &client).await,
        reqwest::Version::HTTP_11
    );
}

#[tokio::test]
async fn https_over_http2_is_negotiated_by_alpn_and_serves_an_exact_inference() {
    let pki = Pki::new();
    let client = trusting(&pki.ca).build().unwrap();
    let server = start(pki.tls(None), client.clone(), |_| {}).await;
    assert_eq!(
        assert_iris_exact(&server, &client).await,
        reqwest::Version::HTTP_2
    );
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let pki = Pki::new();
    let server = start(pki.tls(None), trusting(&pki.ca).build().unwrap(), |_| {}).await;
    let stranger = trusting(&Ca::new("another CA")).build().unwrap();
    let err = stranger
        .get(server.url("/v2/health/live"))
        .send()
        .await
        .expect_err("a certificate from an untrusted CA was accepted");
    assert!(err.is_connect(), "{err:?}");
    assert_live(&server).await;
    assert_iris_exact(&server, &server.client).await;
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_http_answer_and_the_server_still_serves() {
    let pki = Pki::new();
    let server = start(pki.tls(None), trusting(&pki.ca).build().unwrap(), |_| {}).await;
    let mut tcp = tokio::net::TcpStream::connect(server.http).await.unwrap();
    tcp.write_all(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection was held open");
    assert!(!answer.starts_with(b"HTTP/"), "answered in plain HTTP");
    assert_live(&server).await;
    assert_iris_exact(&server, &server.client).await;
}

#[tokio::test]
async fn a_client_that_never_sends_its_client_hello_is_closed_at_the_handshake_timeout() {
    let pki = Pki::new();
    let client = trusting(&pki.ca).build().unwrap();
    let server = start(pki.tls(None), client, |c| c.handshake_timeout_secs = 0.5).await;
    let mut tcp = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a silent TLS client was not closed: {read:?}"
    );
    assert_live(&server).await;
}

#[tokio::test]
async fn silent_clients_in_their_handshake_hold_slots_and_are_evicted_for_a_health_check() {
    let pki = Pki::new();
    let client = trusting(&pki.ca).build().unwrap();
    let server = start(pki.tls(None), client, |c| {
        c.max_connections = 4;
        c.handshake_timeout_secs = 60.0;
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tokio::net::TcpStream::connect(server.http).await.unwrap());
    }
    // The slots hold the client's pooled connection and handshakes that never start: the oldest
    // of those is evicted for the newcomers, and the probe is answered.
    assert_live(&server).await;
    let mut buf = [0u8; 16];
    let first = tokio::time::timeout(Duration::from_secs(10), silent[0].read(&mut buf)).await;
    assert!(
        matches!(first, Ok(Ok(0)) | Ok(Err(_))),
        "the oldest silent handshake was not evicted: {first:?}"
    );
    assert_iris_exact(&server, &server.client).await;
}

/// A server requiring client certificates from `client_ca`, and a client presenting `leaf`.
async fn mtls(client_ca: &Ca, pki: &Pki) -> TestServer {
    let leaf = client_ca.client("trusted client");
    let client = trusting(&pki.ca).identity(leaf.identity()).build().unwrap();
    start(pki.tls(Some(client_ca)), client, |_| {}).await
}

/// What a raw client presenting `auth` sees on the HTTP port: the answer to a health check, or
/// the error (the alert) that ended the connection.
async fn raw_health(server: &TestServer, ca: &Ca, auth: Option<&Leaf>) -> Result<String, String> {
    let mut tls = certs::connect(server.http, &ca.der, auth, &[b"http/1.1"])
        .await
        .map_err(|e| e.to_string())?;
    let ask = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    tls.write_all(ask).await.map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    tls.read_to_end(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

#[tokio::test]
async fn mtls_serves_a_client_with_a_certificate_from_the_client_ca() {
    let (pki, client_ca) = (Pki::new(), Ca::new("client CA"));
    let server = mtls(&client_ca, &pki).await;
    assert_iris_exact(&server, &server.client).await;
    let answer = raw_health(&server, &pki.ca, Some(&client_ca.client("raw"))).await;
    assert!(answer.unwrap().starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn mtls_refuses_a_client_without_a_certificate_at_the_handshake() {
    let (pki, client_ca) = (Pki::new(), Ca::new("client CA"));
    let server = mtls(&client_ca, &pki).await;
    let err = raw_health(&server, &pki.ca, None).await.unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");
    assert_live(&server).await;
}

#[tokio::test]
async fn mtls_refuses_a_client_certificate_from_another_ca_at_the_handshake() {
    let (pki, client_ca) = (Pki::new(), Ca::new("client CA"));
    let server = mtls(&client_ca, &pki).await;
    let stranger = Ca::new("another CA").client("stranger");
    let err = raw_health(&server, &pki.ca, Some(&stranger))
        .await
        .unwrap_err();
    assert!(err.contains("UnknownCA"), "{err}");
    let via_reqwest = trusting(&pki.ca)
        .identity(stranger.identity())
        .build()
        .unwrap();
    assert!(via_reqwest
        .get(server.url("/v2/health/live"))
        .send()
        .await
        .is_err());
    assert_live(&server).await;
}

#[tokio::test]
async fn mtls_refuses_an_expired_client_certificate_at_the_handshake() {
    let (pki, client_ca) = (Pki::new(), Ca::new("client CA"));
    let server = mtls(&client_ca, &pki).await;
    let expired = client_ca.expired_client("expired");
    let err = raw_health(&server, &pki.ca, Some(&expired))
        .await
        .unwrap_err();
    assert!(err.contains("CertificateExpired"), "{err}");
    assert_live(&server).await;
    assert_iris_exact(&server, &server.client).await;
}

#[tokio::test]
async fn grpc_over_tls_negotiates_h2_and_serves_an_exact_inference() {
    let pki = Pki::new();
    let server = start(pki.tls(None), trusting(&pki.ca).build().unwrap(), |_| {}).await;
    let tls = certs::connect(server.grpc, &pki.ca.der, None, &[b"h2"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    drop(tls);
    let addr = server.grpc;
    let ca = pki.ca.der.clone();
    let connector = tower::service_fn(move |_: http::Uri| {
        let ca = ca.clone();
        async move {
            let tls = certs::connect(addr, &ca, None, &[b"h2"]).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_with_connector(connector)
        .await
        .unwrap();
    let mut client = pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(channel);
    let live = client.server_live(pb::ServerLiveRequest {}).await.unwrap();
    assert!(live.into_inner().live);
    let r = reference("iris");
    let input = &r.inputs[0];
    let req = pb::ModelInferRequest {
        model_name: "iris".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: input.name.clone(),
            datatype: input.datatype.clone(),
            shape: input.shape.clone(),
            contents: Some(pb::InferTensorContents {
                fp32_contents: input.f32s(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    };
    let resp = client.model_infer(req).await.unwrap().into_inner();
    let at = resp.outputs.iter().position(|o| o.name == "label").unwrap();
    let labels: Vec<i64> = resp.raw_output_contents[at]
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let want = r.outputs.iter().find(|o| o.name == "label").unwrap();
    assert_eq!(labels, want.i64s());
}

#[tokio::test]
async fn start_up_with_a_key_that_does_not_match_the_certificate_fails_naming_the_file() {
    let pki = Pki::new();
    let other = pki.ca.server();
    std::fs::write(&pki.key, &other.key_pem).unwrap();
    let tls = pki.tls(None);
    let err = TestServer::builder()
        .configure(move |c| c.tls = tls)
        .start_fails()
        .await;
    let text = format!("{err:#}");
    assert!(text.contains(&pki.key.display().to_string()), "{text}");
    assert!(text.contains("does not match"), "{text}");
}

#[tokio::test]
async fn start_up_with_an_unparsable_certificate_fails_naming_the_file() {
    let pki = Pki::new();
    std::fs::write(&pki.cert, "not a certificate").unwrap();
    let tls = pki.tls(None);
    let err = TestServer::builder()
        .configure(move |c| c.tls = tls)
        .start_fails()
        .await;
    let text = format!("{err:#}");
    assert!(text.contains(&pki.cert.display().to_string()), "{text}");
}
