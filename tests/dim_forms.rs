//! Every dimension form an ONNX file may use, on both engines; `backend = "auto"` and why it
//! chose; a model directory without `config.toml` (the warm-up rules are in warmup.rs). The
//! models are the tiny files of tests/data/dim_forms/ (written by tests/data/make_dim_forms.py).
//!
//! Needs ONNX Runtime (ORT_DYLIB_PATH, as tests/onnxruntime.rs).
#![cfg(feature = "onnxruntime")]

mod common;

use common::forms::{
    assert_adds_one, assert_ready, config_of, data, infer, repo, row, serve, ENGINES,
};
use common::TestServer;
use serde_json::{json, Value};

#[tokio::test]
async fn fixed_dims_serve_unbatched_on_each_engine() {
    for engine in ENGINES {
        let dir = repo("fixed.onnx", Some(&format!("backend = \"{engine}\"")));
        let server = serve(dir.path()).await;
        assert_ready(&server).await;
        let config = config_of(&server).await;
        assert_eq!(config["max_batch_size"], 0, "{engine}: {config}");
        assert_eq!(config["input"][0]["dims"], json!([2, 3]), "{engine}");
        assert_adds_one(&server, &[2, 3]).await;
    }
}

#[tokio::test]
async fn named_batch_dim_serves_batched_on_each_engine() {
    for engine in ENGINES {
        let cfg = format!("backend = \"{engine}\"\nmax_batch_size = 8");
        let dir = repo("dim_param.onnx", Some(&cfg));
        let server = serve(dir.path()).await;
        assert_ready(&server).await;
        assert_eq!(config_of(&server).await["input"][0]["dims"], json!([3]));
        assert_adds_one(&server, &[5, 3]).await;
    }
}

/// skl2onnx's form: the batch dimension has neither a value nor a name.
#[tokio::test]
async fn unknown_batch_dim_serves_batched_on_each_engine() {
    for engine in ENGINES {
        let cfg = format!("backend = \"{engine}\"\nmax_batch_size = 8");
        let dir = repo("unknown.onnx", Some(&cfg));
        let server = serve(dir.path()).await;
        assert_ready(&server).await;
        assert_eq!(config_of(&server).await["input"][0]["dims"], json!([3]));
        assert_adds_one(&server, &[2, 3]).await;
        assert_adds_one(&server, &[1, 3]).await;
    }
}

#[tokio::test]
async fn unknown_inner_dim_is_variable_on_each_engine() {
    for engine in ENGINES {
        let cfg = format!("backend = \"{engine}\"\nmax_batch_size = 8");
        let dir = repo("unknown_inner.onnx", Some(&cfg));
        let server = serve(dir.path()).await;
        assert_ready(&server).await;
        assert_eq!(config_of(&server).await["input"][0]["dims"], json!([-1]));
        assert_adds_one(&server, &[2, 5]).await;
    }
}

#[tokio::test]
async fn input_without_shape_takes_its_dims_from_config_on_each_engine() {
    for engine in ENGINES {
        let cfg = format!(
            "backend = \"{engine}\"\nmax_batch_size = 4\n\
             [[input]]\nname = \"x\"\ndatatype = \"FP32\"\ndims = [3]"
        );
        let dir = repo("no_shape.onnx", Some(&cfg));
        let server = serve(dir.path()).await;
        assert_ready(&server).await;
        assert_eq!(config_of(&server).await["input"][0]["dims"], json!([3]));
        assert_adds_one(&server, &[2, 3]).await;
    }
}

#[tokio::test]
async fn input_without_shape_or_config_dims_is_refused_with_the_fix() {
    for engine in ENGINES {
        let dir = repo("no_shape.onnx", Some(&format!("backend = \"{engine}\"")));
        let server = serve(dir.path()).await;
        let row = row(&server).await;
        assert_eq!(row["state"], "UNAVAILABLE", "{engine}: {row}");
        let reason = row["reason"].as_str().unwrap();
        assert!(
            reason.contains(
                "input \"x\" has no shape in the graph: declare its dims in an [[input]] of \
                 config.toml"
            ),
            "{engine}: {reason}"
        );
        assert_eq!(server.get("/v2/health/live").await.0, 200);
    }
}

#[tokio::test]
async fn config_dims_are_checked_against_what_the_graph_fixes() {
    let cfg = "backend = \"tract\"\nmax_batch_size = 8\n\
               [[input]]\nname = \"x\"\ndatatype = \"FP32\"\ndims = [4]";
    let dir = repo("unknown.onnx", Some(cfg));
    let server = serve(dir.path()).await;
    let row = row(&server).await;
    assert_eq!(row["state"], "UNAVAILABLE", "{row}");
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("input \"x\": config dims [4] do not match the graph's [3]"),
        "{row}"
    );
}

#[tokio::test]
async fn auto_chooses_tract_when_it_runs_the_model_and_says_so() {
    let dir = repo("dim_param.onnx", Some("max_batch_size = 8"));
    let server = serve(dir.path()).await;
    let row = assert_ready(&server).await;
    let why = "backend auto chose tract: it builds the model and runs its warm-up";
    assert!(row["reason"].as_str().unwrap().contains(why), "{row}");
    let config = config_of(&server).await;
    assert_eq!(config["backend"], "tract", "{config}");
    assert_eq!(config["platform"], "tract_onnx", "{config}");
    let notes = config["parameters"]["load_notes"]["string_value"]
        .as_str()
        .unwrap();
    assert!(notes.contains(why), "{config}");
    assert_adds_one(&server, &[2, 3]).await;
}

#[tokio::test]
async fn auto_falls_back_to_onnxruntime_for_an_op_tract_lacks() {
    let dir = repo("ort_only.onnx", Some("max_batch_size = 8"));
    let server = serve(dir.path()).await;
    let row = assert_ready(&server).await;
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("backend auto chose onnxruntime: tract cannot run the model")
            && reason.contains("Det"),
        "{reason}"
    );
    let config = config_of(&server).await;
    assert_eq!(config["backend"], "onnxruntime", "{config}");
    assert_eq!(config["platform"], "onnxruntime_onnx", "{config}");
    let (status, body) = infer(&server, &[2, 2, 2], &[1., 0., 0., -2., 2., 0., 0., 3.]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"][0]["data"], json!([-2.0, 6.0]), "{body}");
}

#[tokio::test]
async fn explicit_tract_does_not_fall_back() {
    let dir = repo(
        "ort_only.onnx",
        Some("backend = \"tract\"\nmax_batch_size = 8"),
    );
    let server = serve(dir.path()).await;
    let row = row(&server).await;
    assert_eq!(row["state"], "UNAVAILABLE", "{row}");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("Det") && !reason.contains("onnxruntime"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_model_no_engine_can_run_fails_with_both_reasons() {
    let dir = repo("no_engine.onnx", None);
    let server = serve(dir.path()).await;
    let row = row(&server).await;
    assert_eq!(row["state"], "UNAVAILABLE", "{row}");
    let reason = row["reason"].as_str().unwrap();
    assert!(
        reason.contains("no engine can run this model: tract: ")
            && reason.contains("; onnxruntime: ")
            && reason.matches("Nope").count() >= 2,
        "{reason}"
    );
    assert_eq!(server.get("/v2/health/live").await.0, 200);
}

#[tokio::test]
async fn a_model_without_config_toml_serves_with_the_config_derived_from_its_graph() {
    let dir = repo("unknown.onnx", None);
    let server = serve(dir.path()).await;
    let row = assert_ready(&server).await;
    assert!(
        row["reason"]
            .as_str()
            .unwrap()
            .contains("max_batch_size 4 derived from the graph"),
        "{row}"
    );
    let config = config_of(&server).await;
    assert_eq!(config["max_batch_size"], 4, "{config}");
    assert!(config["dynamic_batching"].is_object(), "{config}");
    assert_eq!(config["backend"], "tract", "{config}");
    assert_eq!(
        config["input"],
        json!([{"name": "x", "data_type": "TYPE_FP32", "dims": [3]}])
    );
    assert_eq!(
        config["output"],
        json!([{"name": "y", "data_type": "TYPE_FP32", "dims": [3]}])
    );
    assert_adds_one(&server, &[4, 3]).await;
    let (status, body) = infer(&server, &[5, 3], &[0.0; 15]).await;
    assert_eq!(status, 400, "5 rows are above the derived maximum: {body}");
}

#[tokio::test]
async fn a_graph_with_a_fixed_first_dim_is_not_batched_without_config() {
    let dir = repo("fixed.onnx", None);
    let server = serve(dir.path()).await;
    assert_ready(&server).await;
    let config = config_of(&server).await;
    assert_eq!(config["max_batch_size"], 0, "{config}");
    assert!(config.get("dynamic_batching").is_none(), "{config}");
    assert_adds_one(&server, &[2, 3]).await;
}

/// Issue 14's repro: skl2onnx's own file (tests/data/make_skl2onnx_iris.py), no config.toml,
/// answers as scikit-learn does, on the engine `auto` picks and on each engine named.
#[tokio::test]
async fn skl2onnx_iris_serves_without_config_toml_on_every_engine() {
    let reference: Value =
        serde_json::from_slice(&std::fs::read(data("skl2onnx_iris.json")).unwrap()).unwrap();
    for config in [
        None,
        Some("backend = \"tract\""),
        Some("backend = \"onnxruntime\""),
    ] {
        let dir = repo("skl2onnx_iris.onnx", config);
        let server = serve(dir.path()).await;
        assert_ready(&server).await;
        assert_eq!(config_of(&server).await["max_batch_size"], 4, "{config:?}");
        let r = reqwest::Client::new()
            .post(server.url("/v2/models/m/infer"))
            .json(
                &json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [4, 4],
                                      "data": reference["input"]}]}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{config:?}");
        let body: Value = r.json().await.unwrap();
        let output = |name: &str| {
            body["outputs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["name"] == name)
                .unwrap_or_else(|| panic!("no {name} in {body}"))["data"]
                .clone()
        };
        assert_eq!(output("label"), reference["label"], "{config:?}");
        let got = output("probabilities");
        let want = reference["probabilities"].as_array().unwrap();
        for (g, w) in got.as_array().unwrap().iter().zip(want) {
            let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
            assert!(
                (g - w).abs() <= 1e-5 * w.abs().max(1e-3),
                "{config:?}: {g} vs {w}"
            );
        }
        assert_eq!(server.get("/v2/health/ready").await.0, 200);
    }
}

#[tokio::test]
async fn grpc_model_config_carries_the_engine_choice_and_derived_batching() {
    let dir = repo("ort_only.onnx", None);
    let server = serve(dir.path()).await;
    assert_ready(&server).await;
    let mut c = common::pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(
        server.grpc_url(),
    )
    .await
    .unwrap();
    let cfg = c
        .model_config(common::pb::ModelConfigRequest {
            name: "m".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(cfg.backend, "onnxruntime");
    assert_eq!(cfg.platform, "onnxruntime_onnx");
    assert_eq!(cfg.max_batch_size, 4);
    let notes = &cfg.parameters["load_notes"].string_value;
    assert!(
        notes.contains("max_batch_size 4 derived from the graph")
            && notes.contains("backend auto chose onnxruntime: tract cannot run the model"),
        "{notes}"
    );
}

/// The version serves under a derived config, but a reload compares the config as given: a
/// load that finds nothing changed keeps the version (its statistics would restart with a new
/// one).
#[tokio::test]
async fn a_derived_config_is_not_reloaded_when_nothing_changed() {
    const TOKEN: &str = "dim-forms-admin-token-0123";
    let dir = repo("unknown.onnx", None);
    let server = TestServer::builder()
        .repo(dir.path())
        .control(ferroserve::config::ModelControlMode::Explicit)
        .load(&["m"])
        .admin_token(TOKEN)
        .start()
        .await;
    assert_adds_one(&server, &[1, 3]).await;
    let r = reqwest::Client::new()
        .post(server.url("/v2/repository/models/m/load"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, stats) = server.get("/v2/models/m/stats").await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(stats["model_stats"][0]["inference_count"], 1, "{stats}");
    assert_adds_one(&server, &[2, 3]).await;
}
