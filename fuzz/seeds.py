"""Writes the seed corpus of each fuzz target under fuzz/corpus/<target>/ from the bundled
models' configs and the request shapes the tests send. Deterministic; run it again after a
change of format (`/work/main/.venv/bin/python fuzz/seeds.py` or any Python with tritonclient).
"""
import json
import pathlib
import struct

from tritonclient.grpc import service_pb2 as pb

ROOT = pathlib.Path(__file__).resolve().parent
REPO = ROOT.parent


def write(target, name, data):
    d = ROOT / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def j(obj):
    return json.dumps(obj, separators=(",", ":"))


IRIS = [5.1, 3.5, 1.4, 0.2]
json_bodies = {
    "iris": {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": IRIS}]},
    "iris_nested": {"id": "r1", "inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32",
                                             "data": [IRIS, IRIS]}],
                    "outputs": [{"name": "label"}, {"name": "probabilities",
                                                    "parameters": {"binary_data": True}}]},
    "ragged": {"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                           "data": [[1, 2, 3], [4, 5, 6, 7, 8]]}]},
    "bytes": {"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES", "data": ["a", "bc"]}]},
    "ints": {"parameters": {"timeout": 1000000, "binary_data_output": False},
             "inputs": [{"name": "a", "shape": [3], "datatype": "INT8", "data": [-128, 0, 127]},
                        {"name": "b", "shape": [2], "datatype": "UINT64", "data": [0, 18446744073709551615]},
                        {"name": "c", "shape": [2], "datatype": "BOOL", "data": [True, False]},
                        {"name": "d", "shape": [1, 1], "datatype": "FP16", "data": [[0.5]]},
                        {"name": "e", "shape": [2], "datatype": "FP64", "data": [1e308, -0.0]}]},
    "big_shape": {"inputs": [{"name": "x", "shape": [4294967296, 4294967296], "datatype": "FP32",
                              "data": [1]}]},
}
for name, body in json_bodies.items():
    write("http_json", name, j(body))

# Binary: the header length on the first line, then the JSON header and the raw tensors.
def binary(inputs, blobs, header_len=None):
    header = j({"inputs": inputs}).encode()
    n = len(header) if header_len is None else header_len
    return str(n).encode() + b"\n" + header + b"".join(blobs)

write("http_binary", "iris", binary(
    [{"name": "input", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
    [struct.pack("<4f", *IRIS)]))
strings = struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bc"
write("http_binary", "bytes", binary(
    [{"name": "s", "shape": [2], "datatype": "BYTES", "parameters": {"binary_data_size": len(strings)}}],
    [strings]))
write("http_binary", "bogus_prefix", binary(
    [{"name": "s", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 8}}],
    [struct.pack("<I", 0xFFFFFFF0) + b"abcd"]))
write("http_binary", "mixed", binary(
    [{"name": "a", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}},
     {"name": "b", "shape": [1], "datatype": "FP32", "data": [1.5]}],
    [struct.pack("<2i", 1, -2)]))
write("http_binary", "header_past_body", b"99999\n{}")

# gRPC: the grpc-timeout on the first line (empty: none), then the message.
def grpc(msg, timeout=""):
    return timeout.encode() + b"\n" + msg.SerializeToString()

def infer_input(name, datatype, shape, **contents):
    t = pb.ModelInferRequest().InferInputTensor(name=name, datatype=datatype, shape=shape)
    for k, v in contents.items():
        getattr(t.contents, k).extend(v)
    return t

raw = pb.ModelInferRequest(model_name="iris", id="1",
                           inputs=[infer_input("input", "FP32", [1, 4])],
                           raw_input_contents=[struct.pack("<4f", *IRIS)])
raw.outputs.add(name="probabilities")
write("grpc_infer", "iris_raw", grpc(raw, "100m"))
typed = pb.ModelInferRequest(model_name="iris",
                             inputs=[infer_input("input", "FP32", [1, 4], fp32_contents=IRIS)])
typed.parameters["timeout"].int64_param = 5000
write("grpc_infer", "iris_typed", grpc(typed))
many = pb.ModelInferRequest(model_name="m", inputs=[
    infer_input("a", "INT64", [3], int64_contents=[-1, 0, 1 << 62]),
    infer_input("b", "UINT8", [2], uint_contents=[0, 255]),
    infer_input("c", "BOOL", [1], bool_contents=[True]),
    infer_input("d", "BYTES", [2], bytes_contents=[b"", b"xy"]),
    infer_input("e", "FP64", [1], fp64_contents=[2.5])])
write("grpc_infer", "typed_all", grpc(many, "18446744073709551615S"))
empties = pb.ModelInferRequest(model_name="m")
for _ in range(8):
    empties.inputs.add()
    empties.outputs.add()
write("grpc_infer", "empty_entries", grpc(empties, "5124095576030432H"))

# config.toml: every bundled model's, the knobs the tests set, a server config.
for model in sorted((REPO / "models").iterdir()):
    if (model / "config.toml").is_file():
        write("config_toml", f"model_{model.name}", (model / "config.toml").read_text())
write("config_toml", "knobs", (REPO / "models/mlp/config.toml").read_text()
      + "version_policy = { latest = 2 }\n"
      + "[dynamic_batching]\nmax_queue_delay_us = 2000\npreferred_batch_sizes = [16, 32]\n"
      + "[traffic]\nweights = { \"1\" = 100, \"2\" = 0 }\n")
write("config_toml", "server", "\n".join([
    'host = "127.0.0.1"', "http_port = 0", 'model_repository = "models"',
    'model_control_mode = "explicit"', 'load_models = ["iris"]', "max_request_bytes = 67108864",
    "max_connections = 128", "header_read_timeout_secs = 75.0", "[shutdown]",
    "drain_delay = 0.5", "timeout = 30.0", ""]))

# Repository trees: a model, links inside, out, back in, loops.
iris_cfg = (REPO / "models/iris/config.toml").read_text().replace("\n", "\\n")
trees = {
    "model": f"f m/config.toml {iris_cfg}\nf m/1/model.onnx onnx\nd m/2\n",
    "version_out": f"f m/config.toml {iris_cfg}\nl m/1 @out/m/1\n",
    "model_out": "l m @out/m\n",
    "model_out_back_in": f"f m/config.toml {iris_cfg}\nf m/1/model.onnx x\nl n @out/back\n",
    "file_out": f"f m/config.toml {iris_cfg}\nd m/1\nl m/1/model.onnx /etc/passwd\n",
    "loops": "l a a\nl b c\nl c b\nd m/1\nl m/config.toml ../m/config.toml\nl m/1/model.onnx ../../b\n",
    "dotdot": "l m ..\nl n @root/..\nl o /\nd .hidden/1\nf 01/config.toml x\n",
}
for name, tree in trees.items():
    write("repository_scan", name, tree)
