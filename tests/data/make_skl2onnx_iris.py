"""Issue 14's repro, for real: a scikit-learn LogisticRegression on iris exported with skl2onnx's
defaults (`FloatTensorType([None, 4])`, `zipmap=False`), whose batch dimension has neither a
value nor a name. Writes tests/data/dim_forms/skl2onnx_iris.onnx and the reference answers of
scikit-learn for four rows into tests/data/dim_forms/skl2onnx_iris.json.

Needs skl2onnx==1.19.1 scikit-learn==1.7.2 packaging==24.2 (a venv of your own:
`python3 -m venv .venv-x && .venv-x/bin/pip install skl2onnx==1.19.1 scikit-learn==1.7.2 packaging==24.2`).
"""

import json
import os

import numpy as np
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dim_forms")

x, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=500).fit(x, y)
onx = convert_sklearn(
    model, initial_types=[("input", FloatTensorType([None, 4]))], options={"zipmap": False}
)
with open(os.path.join(OUT, "skl2onnx_iris.onnx"), "wb") as f:
    f.write(onx.SerializeToString())
rows = x[[0, 50, 100, 149]].astype(np.float32)
ref = {
    "input": rows.ravel().tolist(),
    "label": model.predict(rows).tolist(),
    "probabilities": model.predict_proba(rows).ravel().tolist(),
    "outputs": [o.name for o in onx.graph.output],
    "batch_dim": str(onx.graph.input[0].type.tensor_type.shape.dim[0]).strip(),
}
with open(os.path.join(OUT, "skl2onnx_iris.json"), "w") as f:
    json.dump(ref, f, indent=1)
print(ref["outputs"], repr(ref["batch_dim"]), ref["label"])
