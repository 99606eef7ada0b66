"""A seed-style server: Flask, PIL and PyTorch eager in one process, the design choripan replaces.

POST /predict with the image bytes as the body answers {label, probability, top}. bench/run.js serves
it with gunicorn (one process, eight threads, keep-alive), as such an app is deployed: Flask's own
development server closes every connection.
"""

from __future__ import annotations

import torch
from flask import Flask, jsonify, request

from choripan.imaging import decode, preprocess
from choripan.sources import default
from choripan.tracing import Probabilities

model, metadata = default.build()
model = Probabilities(model).eval()
spec = metadata.preprocessing
app = Flask(__name__)


@app.post("/predict")
def predict():
    data = request.get_data()
    x = preprocess(decode(data, spec.decode), spec)
    with torch.inference_mode():
        values, indices = model(x.unsqueeze(0))[0].topk(5)
    pairs = zip(values.tolist(), indices.tolist(), strict=True)
    top = [{"label": metadata.labels[i], "probability": v} for v, i in pairs]
    return jsonify(label=top[0]["label"], probability=top[0]["probability"], top=top)
