"""ferroserve against the unmodified Triton Python clients (tritonclient.http / tritonclient.grpc).

Three transports are exercised: HTTP with binary tensor data (tritonclient's default), HTTP with
JSON tensor data, and gRPC. Outputs are compared with references computed by sklearn/numpy in
tests/data/<model>.json: integer outputs exactly, floating-point outputs within 1e-5.
"""

from __future__ import annotations

import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype, triton_to_np_dtype

MODELS = ("iris", "digits", "mlp")

FLOAT_ATOL = 1e-5
MAX_BATCH_SIZE = 64

# transport name -> (protocol, binary tensor data)
TRANSPORTS = {
    "http_binary": ("http", True),
    "http_json": ("http", False),
    "grpc": ("grpc", True),
}
PROTOCOLS = ("http", "grpc")


# --------------------------------------------------------------------------------------------
# helpers


@pytest.fixture(scope="module")
def clients(server):
    http = httpclient.InferenceServerClient(url=server.http_url)
    grpc = grpcclient.InferenceServerClient(url=server.grpc_url)
    yield {"http": http, "grpc": grpc}
    http.close()
    grpc.close()


def module_for(protocol: str):
    return httpclient if protocol == "http" else grpcclient


def as_ints(values) -> list[int]:
    # gRPC's as_json output renders int64 fields as strings.
    return [int(v) for v in values]


def server_metadata(client, protocol: str) -> dict:
    return client.get_server_metadata() if protocol == "http" else client.get_server_metadata(as_json=True)


def model_metadata(client, protocol: str, model: str, version: str = "") -> dict:
    if protocol == "http":
        return client.get_model_metadata(model, model_version=version)
    return client.get_model_metadata(model, model_version=version, as_json=True)


def model_config(client, protocol: str, model: str) -> dict:
    if protocol == "http":
        return client.get_model_config(model)
    return client.get_model_config(model, as_json=True)["config"]


def reference_arrays(ref: dict, section: str) -> dict[str, np.ndarray]:
    out = {}
    for name, tensor in ref[section].items():
        dtype = triton_to_np_dtype(tensor["datatype"])
        out[name] = np.asarray(tensor["data"], dtype=dtype).reshape(tensor["shape"])
    return out


def make_inputs(protocol: str, binary: bool, arrays: dict[str, np.ndarray]):
    mod = module_for(protocol)
    inputs = []
    for name, array in arrays.items():
        inp = mod.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        if protocol == "http":
            inp.set_data_from_numpy(array, binary_data=binary)
        else:
            inp.set_data_from_numpy(array)
        inputs.append(inp)
    return inputs


def make_outputs(protocol: str, binary: bool, names):
    if protocol == "http":
        return [httpclient.InferRequestedOutput(name, binary_data=binary) for name in names]
    return [grpcclient.InferRequestedOutput(name) for name in names]


def output_datatype(result, protocol: str, name: str) -> str:
    out = result.get_output(name)
    assert out is not None, f"response has no output {name!r}"
    return out["datatype"] if protocol == "http" else out.datatype


def assert_outputs_match(result, protocol: str, expected: dict[str, np.ndarray], ref: dict, label: str) -> None:
    for name, want in expected.items():
        got = result.as_numpy(name)
        assert got is not None, f"{label}: output {name!r} missing from the response"
        assert output_datatype(result, protocol, name) == ref["outputs"][name]["datatype"], f"{label}: {name}"
        assert got.dtype == want.dtype, f"{label}: {name} dtype {got.dtype} != {want.dtype}"
        assert got.shape == want.shape, f"{label}: {name} shape {got.shape} != {want.shape}"
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(got, want, rtol=0, atol=FLOAT_ATOL, err_msg=f"{label}: {name}")
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"{label}: {name}")


def infer(clients, transport: str, model: str, arrays: dict[str, np.ndarray], output_names=None, **kwargs):
    protocol, binary = TRANSPORTS[transport]
    client = clients[protocol]
    inputs = make_inputs(protocol, binary, arrays)
    outputs = make_outputs(protocol, binary, output_names) if output_names is not None else None
    return client.infer(model, inputs, outputs=outputs, **kwargs)


def expected_status(protocol: str, http_code: int, grpc_code: str) -> str:
    return str(http_code) if protocol == "http" else f"StatusCode.{grpc_code}"


def good_iris_request(clients, transport: str, references) -> None:
    """A well-formed request, sent after a rejected one, must still succeed."""
    ref = references["iris"]
    arrays = reference_arrays(ref, "inputs")
    expected = reference_arrays(ref, "outputs")
    result = infer(clients, transport, "iris", arrays, list(expected))
    assert_outputs_match(result, TRANSPORTS[transport][0], expected, ref, f"iris/{transport} after error")


# --------------------------------------------------------------------------------------------
# health and metadata


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_is_live(clients, protocol):
    assert clients[protocol].is_server_live() is True


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_is_ready(clients, protocol):
    assert clients[protocol].is_server_ready() is True


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bundled_model_is_ready(clients, protocol, model):
    assert clients[protocol].is_model_ready(model) is True


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_is_not_ready(clients, protocol):
    try:
        ready = clients[protocol].is_model_ready("no_such_model")
    except InferenceServerException as err:  # Triton's gRPC answers NOT_FOUND here
        assert err.status() == expected_status(protocol, 404, "NOT_FOUND"), err
    else:
        assert ready is False


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_metadata_has_name_version_and_extensions(clients, protocol):
    meta = server_metadata(clients[protocol], protocol)
    assert isinstance(meta.get("name"), str) and meta["name"], meta
    assert isinstance(meta.get("version"), str) and meta["version"], meta
    assert isinstance(meta.get("extensions"), list), meta
    assert all(isinstance(ext, str) for ext in meta["extensions"]), meta


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_metadata_describes_tensors_with_dynamic_batch(clients, references, protocol, model):
    ref = references[model]
    meta = model_metadata(clients[protocol], protocol, model)
    assert meta["name"] == model
    for section in ("inputs", "outputs"):
        got = {t["name"]: t for t in meta[section]}
        assert set(got) == set(ref[section]), f"{section}: {sorted(got)} != {sorted(ref[section])}"
        for name, want in ref[section].items():
            assert got[name]["datatype"] == want["datatype"], f"{section} {name}"
            assert as_ints(got[name]["shape"]) == [-1, *want["shape"][1:]], f"{section} {name}"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_config_lists_tensors_and_max_batch_size(clients, references, protocol, model):
    ref = references[model]
    config = model_config(clients[protocol], protocol, model)
    assert config["name"] == model
    assert int(config["max_batch_size"]) == MAX_BATCH_SIZE
    for section, key in (("inputs", "input"), ("outputs", "output")):
        got = {t["name"]: t for t in config[key]}
        assert set(got) == set(ref[section]), f"{key}: {sorted(got)} != {sorted(ref[section])}"
        for name, want in ref[section].items():
            assert got[name]["data_type"] == f"TYPE_{want['datatype']}", f"{key} {name}"
            # With max_batch_size > 0 the config's dims leave out the batch dimension.
            assert as_ints(got[name].get("dims", [])) == want["shape"][1:], f"{key} {name}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unknown_model_metadata_is_not_found(clients, protocol):
    with pytest.raises(InferenceServerException) as info:
        model_metadata(clients[protocol], protocol, "no_such_model")
    assert info.value.status() == expected_status(protocol, 404, "NOT_FOUND"), info.value


# --------------------------------------------------------------------------------------------
# inference


@pytest.mark.parametrize("rows", [1, 8], ids=["batch1", "batch8"])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_infer_matches_reference(clients, references, transport, model, rows):
    ref = references[model]
    arrays = {k: v[:rows] for k, v in reference_arrays(ref, "inputs").items()}
    expected = {k: v[:rows] for k, v in reference_arrays(ref, "outputs").items()}
    result = infer(clients, transport, model, arrays, list(expected))
    assert_outputs_match(result, TRANSPORTS[transport][0], expected, ref, f"{model}/{transport}/{rows} rows")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_infer_middle_rows_match_reference(clients, references, transport):
    """Rows 3..6 alone give the same answers as in the full batch (no cross-row leakage)."""
    ref = references["digits"]
    arrays = {k: v[3:6] for k, v in reference_arrays(ref, "inputs").items()}
    expected = {k: v[3:6] for k, v in reference_arrays(ref, "outputs").items()}
    result = infer(clients, transport, "digits", arrays, list(expected))
    assert_outputs_match(result, TRANSPORTS[transport][0], expected, ref, f"digits/{transport}/rows 3..6")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_infer_without_requested_outputs_returns_all_outputs(clients, references, protocol):
    ref = references["iris"]
    arrays = reference_arrays(ref, "inputs")
    expected = reference_arrays(ref, "outputs")
    result = infer(clients, "http_binary" if protocol == "http" else "grpc", "iris", arrays, None)
    assert_outputs_match(result, protocol, expected, ref, f"iris/{protocol}/all outputs")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_infer_single_requested_output_returns_only_it(clients, references, protocol):
    ref = references["iris"]
    arrays = reference_arrays(ref, "inputs")
    expected = reference_arrays(ref, "outputs")
    name = sorted(expected)[0]
    result = infer(clients, "http_binary" if protocol == "http" else "grpc", "iris", arrays, [name])
    assert_outputs_match(result, protocol, {name: expected[name]}, ref, f"iris/{protocol}/{name} only")
    for other in set(expected) - {name}:
        assert result.get_output(other) is None, f"unrequested output {other!r} was returned"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_infer_with_explicit_model_version(clients, references, transport):
    protocol = TRANSPORTS[transport][0]
    versions = model_metadata(clients[protocol], protocol, "mlp").get("versions") or []
    if not versions:
        pytest.skip("mlp metadata lists no versions")
    ref = references["mlp"]
    expected = reference_arrays(ref, "outputs")
    result = infer(
        clients, transport, "mlp", reference_arrays(ref, "inputs"), list(expected), model_version=str(versions[0])
    )
    assert_outputs_match(result, protocol, expected, ref, f"mlp/{transport}/version {versions[0]}")


# --------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_infer_on_unknown_model_is_not_found(clients, references, transport):
    protocol = TRANSPORTS[transport][0]
    arrays = reference_arrays(references["iris"], "inputs")
    with pytest.raises(InferenceServerException) as info:
        infer(clients, transport, "no_such_model", arrays)
    assert info.value.status() == expected_status(protocol, 404, "NOT_FOUND"), info.value
    good_iris_request(clients, transport, references)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_input_name_is_rejected_naming_the_tensor(clients, references, transport):
    protocol = TRANSPORTS[transport][0]
    (array,) = reference_arrays(references["iris"], "inputs").values()
    with pytest.raises(InferenceServerException) as info:
        infer(clients, transport, "iris", {"not_a_real_input": array})
    assert info.value.status() == expected_status(protocol, 400, "INVALID_ARGUMENT"), info.value
    assert "not_a_real_input" in info.value.message(), info.value
    good_iris_request(clients, transport, references)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_input_shape_is_rejected_naming_the_tensor(clients, references, transport):
    protocol = TRANSPORTS[transport][0]
    ((name, array),) = reference_arrays(references["iris"], "inputs").items()
    wrong = np.zeros((array.shape[0], array.shape[1] + 1), dtype=array.dtype)
    with pytest.raises(InferenceServerException) as info:
        infer(clients, transport, "iris", {name: wrong})
    assert info.value.status() == expected_status(protocol, 400, "INVALID_ARGUMENT"), info.value
    assert name in info.value.message(), info.value
    good_iris_request(clients, transport, references)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_wrong_input_datatype_is_rejected_naming_the_tensor(clients, references, transport):
    protocol = TRANSPORTS[transport][0]
    ((name, array),) = reference_arrays(references["iris"], "inputs").items()
    with pytest.raises(InferenceServerException) as info:
        infer(clients, transport, "iris", {name: array.astype(np.float64)})
    assert info.value.status() == expected_status(protocol, 400, "INVALID_ARGUMENT"), info.value
    assert name in info.value.message(), info.value
    good_iris_request(clients, transport, references)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_batch_larger_than_max_batch_size_is_rejected(clients, references, transport):
    protocol = TRANSPORTS[transport][0]
    ((name, array),) = reference_arrays(references["iris"], "inputs").items()
    too_big = np.resize(array, (MAX_BATCH_SIZE + 1, array.shape[1]))
    with pytest.raises(InferenceServerException) as info:
        infer(clients, transport, "iris", {name: too_big})
    assert info.value.status() == expected_status(protocol, 400, "INVALID_ARGUMENT"), info.value
    good_iris_request(clients, transport, references)


def test_max_batch_size_batch_is_accepted(clients, references):
    ((name, array),) = reference_arrays(references["iris"], "inputs").items()
    full = np.resize(array, (MAX_BATCH_SIZE, array.shape[1]))
    expected = {
        k: np.resize(v, (MAX_BATCH_SIZE, *v.shape[1:]))
        for k, v in reference_arrays(references["iris"], "outputs").items()
    }
    result = infer(clients, "http_binary", "iris", {name: full}, list(expected))
    assert_outputs_match(result, "http", expected, references["iris"], "iris/64 rows")


# --------------------------------------------------------------------------------------------
# statistics and metrics


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_statistics_count_successful_inferences(clients, references, protocol):
    client = clients[protocol]
    before = statistics(client, protocol, "mlp")
    infer(
        clients, "http_binary" if protocol == "http" else "grpc", "mlp", reference_arrays(references["mlp"], "inputs")
    )
    after = statistics(client, protocol, "mlp")
    assert after["name"] == "mlp"
    assert int(after.get("inference_count", 0)) >= int(before.get("inference_count", 0)) + 8, (before, after)
    assert int(after.get("execution_count", 0)) > int(before.get("execution_count", 0)), (before, after)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_statistics_have_the_triton_fields_perf_analyzer_reads(clients, references, protocol):
    """perf_analyzer finds the model version by a rising inference_stats.queue.count (the version
    must be numeric), and requires the compute_input/infer/output counts to be equal."""
    client = clients[protocol]
    before = statistics(client, protocol, "mlp")
    infer(
        clients, "http_binary" if protocol == "http" else "grpc", "mlp", reference_arrays(references["mlp"], "inputs")
    )
    after = statistics(client, protocol, "mlp")
    assert str(after.get("version", "")).isdigit(), after

    def count(entry: dict, phase: str) -> int:
        return int(entry.get("inference_stats", {}).get(phase, {}).get("count", 0))

    for phase in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert count(after, phase) > count(before, phase), f"inference_stats.{phase}.count did not rise: {after}"
    assert count(after, "compute_input") == count(after, "compute_infer") == count(after, "compute_output"), after


def statistics(client, protocol: str, model: str) -> dict:
    stats = (
        client.get_inference_statistics(model)
        if protocol == "http"
        else client.get_inference_statistics(model, as_json=True)
    )
    (entry,) = [s for s in stats["model_stats"] if s["name"] == model]
    return entry


def test_metrics_endpoint_serves_prometheus_text(server, clients, references):
    infer(clients, "http_binary", "iris", reference_arrays(references["iris"], "inputs"))
    with urllib.request.urlopen(f"http://{server.metrics_url}/metrics", timeout=10) as resp:
        assert resp.status == 200
        body = resp.read().decode("utf-8")
    assert "# TYPE" in body, body[:500]
