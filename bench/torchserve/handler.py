"""TorchServe's handler for a choripan TorchScript artifact, as TorchServe's documentation shows a custom one.

BaseHandler loads the archive's serialized file with torch.jit.load and the labels from index_to_name.json;
this handler decodes each request's photo with PIL, transforms it with torchvision as the artifact's
metadata says (the `handler` section of the model's model-config.yaml, which bench/run.js writes from the
metadata), stacks the batch TorchServe hands it, and answers {label, probability, top} for each request.
"""

from __future__ import annotations

import io

import torch
from PIL import Image
from torchvision import transforms
from ts.torch_handler.base_handler import BaseHandler


class ChoripanClassifier(BaseHandler):
    def initialize(self, context):
        super().initialize(context)
        spec = context.model_yaml_config["handler"]
        self.transform = transforms.Compose(
            [
                transforms.Resize(spec["resize"], interpolation=transforms.InterpolationMode(spec["interpolation"])),
                transforms.CenterCrop(spec["crop"]),
                transforms.ToTensor(),
                transforms.Normalize(spec["mean"], spec["std"]),
            ]
        )

    def preprocess(self, data):
        images = []
        for row in data:
            with Image.open(io.BytesIO(row.get("data") or row.get("body"))) as image:
                images.append(self.transform(image.convert("RGB")))
        return torch.stack(images)

    def postprocess(self, data):
        # The artifact returns probabilities: no softmax here.
        values, indices = data.topk(5)
        answers = []
        for row_values, row_indices in zip(values.tolist(), indices.tolist(), strict=True):
            pairs = zip(row_values, row_indices, strict=True)
            top = [{"label": self.mapping[str(i)], "probability": v} for v, i in pairs]
            answers.append({"label": top[0]["label"], "probability": top[0]["probability"], "top": top})
        return answers
