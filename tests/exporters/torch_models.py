"""The torch part of the exporter corpus: a small CNN and a small transformer block, each written
by `torch.onnx.export` at test time, with both of torch's exporters (the default torch.export-based
one, `dynamo=True`, which saves the weights as external data by default, and the TorchScript one,
`dynamo=False`), with dynamic axes (batch; batch and sequence for the transformer).

Runs in the torch venv (tests/exporters/requirements-torch.txt, made by scripts/setup-test-env.sh;
its numpy and protobuf differ from tests/python/requirements.txt's, so it is a second process):

    .venv-torch/bin/python tests/exporters/torch_models.py OUT

writes OUT/NAME/ (model.onnx, plus model.onnx.data where the exporter writes external data) and
OUT/NAME.json: sample inputs and torch's own outputs on them, for build_corpus.py (which
serves the files exactly as written and checks ONNX Runtime against torch before using it as the
reference).
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
from torch import nn

SEED = 0
D_MODEL, HEADS, FEEDFORWARD = 16, 2, 32


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 10),
    )


def transformer_block() -> nn.Module:
    # The stock encoder layer: multi-head self-attention, LayerNorm, feed-forward.
    return nn.TransformerEncoderLayer(D_MODEL, HEADS, dim_feedforward=FEEDFORWARD, dropout=0.0, batch_first=True)


class AttentionBlock(nn.Module):
    """A hand-written pre-norm transformer block (multi-head attention, LayerNorm, MLP): the
    TorchScript exporter of torch 2.15 cannot trace nn.TransformerEncoderLayer (its is_causal
    argument becomes a tensor), so this is the block that exporter gets."""

    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(D_MODEL), nn.LayerNorm(D_MODEL)
        self.qkv, self.proj = nn.Linear(D_MODEL, 3 * D_MODEL), nn.Linear(D_MODEL, D_MODEL)
        self.mlp = nn.Sequential(nn.Linear(D_MODEL, FEEDFORWARD), nn.GELU(), nn.Linear(FEEDFORWARD, D_MODEL))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(batch, seq, 3, HEADS, D_MODEL // HEADS).permute(2, 0, 3, 1, 4).unbind(0)
        weights = torch.softmax(q @ k.transpose(-2, -1) / (D_MODEL // HEADS) ** 0.5, dim=-1)
        x = x + self.proj((weights @ v).transpose(1, 2).reshape(batch, seq, D_MODEL))
        return x + self.mlp(self.norm2(x))


def models():
    """(name, module, input name, output name, traced input, query inputs, dynamic axes, exporters:
    dynamo=True and/or dynamo=False).

    The query inputs (served and compared) have other sizes on the dynamic axes than the one the
    exporter traced, so the axes must really be dynamic: batches of 2 and 4 (ferroserve derives
    max_batch_size 4), sequences of 7 and 1."""
    gen = torch.Generator().manual_seed(SEED)
    yield ("cnn", cnn(), "image", "logits", torch.randn(3, 1, 8, 8, generator=gen),
           [torch.randn(b, 1, 8, 8, generator=gen) for b in (2, 4)], {0: "batch"}, (True, False))
    seq = {0: "batch", 1: "sequence"}
    for name, module, exporters in (("transformer_block", transformer_block(), (True,)),
                                    ("attention_block", AttentionBlock(), (True, False))):
        yield (name, module, "x", "y", torch.randn(2, 5, D_MODEL, generator=gen),
               [torch.randn(b, s, D_MODEL, generator=gen) for b, s in ((2, 7), (4, 1))], seq, exporters)


def export(module: nn.Module, path: Path, names: tuple[str, str], sample: torch.Tensor, axes: dict,
           dynamo: bool) -> None:
    inp, out = names
    if dynamo:
        dims = {i: torch.export.Dim(name, min=1, max=1024) for i, name in axes.items()}
        torch.onnx.export(module, (sample,), str(path), input_names=[inp], output_names=[out],
                          dynamic_shapes=(dims,), verbose=False, dynamo=True)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter's notice
            torch.onnx.export(module, (sample,), str(path), input_names=[inp], output_names=[out],
                              dynamic_axes={inp: axes, out: axes}, dynamo=False)


def tensor(value: torch.Tensor) -> dict:
    return {"shape": list(value.shape), "data": value.flatten().tolist()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    torch.manual_seed(SEED)
    for name, module, inp, out, sample, queries, axes, exporters in models():
        module.eval()
        with torch.no_grad():
            samples = [{"inputs": {inp: tensor(q)}, "outputs": {out: tensor(module(q))}} for q in queries]
        for dynamo in exporters:
            suffix = "" if dynamo else "_torchscript"
            folder = args.out / f"torch_{name}{suffix}"
            folder.mkdir(parents=True)
            export(module, folder / "model.onnx", (inp, out), sample, axes, dynamo)
            (args.out / f"torch_{name}{suffix}.json").write_text(json.dumps({
                "torch": torch.__version__,
                "exporter": f"torch.onnx.export(dynamo={dynamo})",
                "samples": samples,
            }))


if __name__ == "__main__":
    main()
