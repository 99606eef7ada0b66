"""A short check on a CUDA device, for sessions lent a GPU; skipped elsewhere."""

from __future__ import annotations

import choripan_core
import pytest
import torch

from choripan.imaging import load_batch
from choripan.photos import reference_photos
from choripan.predictor import Predictor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def test_cuda_model_answers_like_the_cpu_one(default_artifact):
    spec = Predictor(default_artifact).preprocessing
    batch = load_batch(reference_photos()[:4], spec)
    cpu = choripan_core.Model(str(default_artifact), device="cpu")
    gpu = choripan_core.Model(str(default_artifact), device="cuda", max_batch=4)
    torch.testing.assert_close(gpu.forward(batch), cpu.forward(batch), atol=1e-3, rtol=0)
    answers = gpu.predict_many(list(batch))
    assert [gpu.labels[int(a.argmax())] for a in answers[1:3]] == ["espresso", "missile"]
    gpu.dispose()
    cpu.dispose()
