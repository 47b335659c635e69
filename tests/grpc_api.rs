//! The gRPC front end against a real server with our own tonic client: `contents` and
//! `raw_input_contents` inputs, raw outputs, metadata, config, readiness and statistics.

mod common;

use common::{assert_matches_reference, pb, reference, TestServer, BUNDLED};
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use tonic::transport::Channel;

async fn client(server: &TestServer) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(server.grpc_url())
        .await
        .unwrap()
}

fn request(model: &str, raw: bool) -> pb::ModelInferRequest {
    let r = reference(model);
    let mut req = pb::ModelInferRequest {
        model_name: model.into(),
        id: "g-1".into(),
        ..Default::default()
    };
    for t in &r.inputs {
        let values = t.f32s();
        let mut input = InferInputTensor {
            name: t.name.clone(),
            datatype: t.datatype.clone(),
            shape: t.shape.clone(),
            ..Default::default()
        };
        if raw {
            req.raw_input_contents.push(
                values
                    .iter()
                    .flat_map(|f| f.to_le_bytes())
                    .collect::<Vec<u8>>()
                    .into(),
            );
        } else {
            input.contents = Some(pb::InferTensorContents {
                fp32_contents: values,
                ..Default::default()
            });
        }
        req.inputs.push(input);
    }
    req
}

fn decode_raw(datatype: &str, raw: &[u8]) -> Vec<f64> {
    match datatype {
        "FP32" => raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        "INT64" => raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        other => panic!("unexpected datatype {other}"),
    }
}

async fn check_all_models(raw: bool) {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    for model in BUNDLED {
        let resp = c
            .model_infer(request(model, raw))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(resp.model_name, model);
        assert_eq!(resp.model_version, "1");
        assert_eq!(resp.id, "g-1");
        let r = reference(model);
        assert_eq!(resp.outputs.len(), r.outputs.len());
        assert_eq!(resp.raw_output_contents.len(), resp.outputs.len());
        for (out, bytes) in resp.outputs.iter().zip(&resp.raw_output_contents) {
            let want = r.outputs.iter().find(|o| o.name == out.name).unwrap();
            assert_matches_reference(
                model,
                &out.name,
                &out.datatype,
                &out.shape,
                &decode_raw(&out.datatype, bytes),
                want,
            );
        }
    }
    server.stop().await.unwrap();
}

#[tokio::test]
async fn contents_inputs_match_references_for_every_bundled_model() {
    check_all_models(false).await;
}

#[tokio::test]
async fn raw_inputs_match_references_for_every_bundled_model() {
    check_all_models(true).await;
}

#[tokio::test]
async fn requested_outputs_come_back_in_the_order_asked() {
    let server = TestServer::start().await;
    let mut req = request("iris", true);
    req.outputs = vec![
        InferRequestedOutputTensor {
            name: "probabilities".into(),
            ..Default::default()
        },
        InferRequestedOutputTensor {
            name: "label".into(),
            ..Default::default()
        },
    ];
    let resp = client(&server)
        .await
        .model_infer(req)
        .await
        .unwrap()
        .into_inner();
    let names: Vec<&str> = resp.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["probabilities", "label"]);
}

#[tokio::test]
async fn health_metadata_config_and_statistics_answer() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    assert!(
        c.server_live(pb::ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(pb::ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let ready = c
        .model_ready(pb::ModelReadyRequest {
            name: "mlp".into(),
            version: String::new(),
        })
        .await
        .unwrap();
    assert!(ready.into_inner().ready);
    // As Triton: a model it does not serve is not ready (OK, false), not an error.
    let unknown = c
        .model_ready(pb::ModelReadyRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap();
    assert!(!unknown.into_inner().ready);

    let meta = c
        .server_metadata(pb::ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.name, "ferroserve");
    assert!(meta.extensions.iter().any(|e| e == "statistics"));

    let m = c
        .model_metadata(pb::ModelMetadataRequest {
            name: "iris".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.versions, ["1"]);
    assert_eq!(
        (m.inputs[0].name.as_str(), m.inputs[0].datatype.as_str()),
        ("input", "FP32")
    );
    assert_eq!(m.inputs[0].shape, [-1, 4]);
    assert_eq!(m.outputs[1].shape, [-1, 3]);

    let cfg = c
        .model_config(pb::ModelConfigRequest {
            name: "mlp".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(cfg.name, "mlp");
    assert_eq!(cfg.max_batch_size, 64);
    assert_eq!(cfg.input[0].data_type, pb::DataType::TypeFp32 as i32);
    assert_eq!(cfg.input[0].dims, [64]);
    assert_eq!(cfg.output[0].dims, [10]);

    c.model_infer(request("mlp", true)).await.unwrap();
    let stats = c
        .model_statistics(pb::ModelStatisticsRequest {
            name: "mlp".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let s = stats.model_stats[0].inference_stats.as_ref().unwrap();
    assert_eq!(s.success.as_ref().unwrap().count, 1);
    assert_eq!(stats.model_stats[0].inference_count, 8);
}

#[tokio::test]
async fn unsupported_rpcs_answer_unimplemented_with_a_reason() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    let err = c
        .cuda_shared_memory_register(pb::CudaSharedMemoryRegisterRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("CUDA shared memory"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn grpc_requests_are_counted_under_their_protocol() {
    let server = TestServer::start().await;
    let mut c = client(&server).await;
    c.model_infer(request("iris", false)).await.unwrap();
    let text = server.metrics_text().await;
    assert!(
        text.contains(
            r#"ferroserve_requests_total{code="ok",model="iris",protocol="grpc",version="1"} 1"#
        ),
        "{text}"
    );
}
