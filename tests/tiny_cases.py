"""A tiny model case for tests that run the suites in a subprocess: it exports in a
second, runs in milliseconds and imports no zoo (so no torchvision), which keeps a
subprocess run of it to a few seconds.

`write_cases_module(path, **options)` writes a cases module a test points the suites at
with --model-module; the options make the mistakes and slow models the tests need.
`import_cases_module` writes a user's own cases module and imports it (to build its models),
and `export_user_graph` exports a model as a user's torch.onnx.export call would.
"""

from __future__ import annotations

import importlib.util
import os
import textwrap
import time
from pathlib import Path

import torch
from torch import nn

from deploy_parity import InputSpec, ModelCase, SizeSpace
from deploy_parity.case import ZooEntry
from deploy_parity.adapters import MMDeployDetections

K = 4  # boxes per image


class TinyDetector(nn.Module):
    """Four boxes per image from pooled conv features: (B, 4, 5) = x1 y1 x2 y2 score."""

    def __init__(self, sleep_seconds: float = 0.0, offset: float = 0.0):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, K * 5)
        self.sleep_seconds = sleep_seconds
        self.offset = offset

    def forward(self, images):
        # TINY_DETECTOR_SLEEP: slow without being another module (the export cache keys on
        # the module's attributes, so two runs that must share a graph cannot differ there).
        seconds = self.sleep_seconds or float(os.environ.get("TINY_DETECTOR_SLEEP", "0"))
        if seconds:
            time.sleep(seconds)  # a hung inference, as far as the harness can tell
        x = images.float() / 255.0 if images.dtype == torch.uint8 else images
        features = torch.relu(self.conv(x)).mean(dim=(2, 3))
        raw = self.head(features).reshape(-1, K, 5)
        height, width = images.shape[2], images.shape[3]
        x1 = torch.sigmoid(raw[..., 0]) * width * 0.5
        y1 = torch.sigmoid(raw[..., 1]) * height * 0.5
        x2 = x1 + 4.0 + torch.sigmoid(raw[..., 2]) * width * 0.4
        y2 = y1 + 4.0 + torch.sigmoid(raw[..., 3]) * height * 0.4
        # Scores spread well apart, so no pair sits near a decision boundary.
        score = 0.2 + 0.15 * torch.arange(K, dtype=x.dtype) + 0.01 * torch.sigmoid(raw[..., 4])
        return torch.stack([x1 + self.offset, y1, x2 + self.offset, y2, score.expand_as(x1)], dim=-1)


def tiny_case(name: str = "tiny-det", *, sleep_seconds: float = 0.0, offset: float = 0.0,
              dtypes=("float32",), sizes: SizeSpace = None, default: bool = True) -> ModelCase:
    """The case: the reference never sleeps; the deploy module (what torch-cpu runs and
    what gets exported) sleeps `sleep_seconds` per call and shifts x by `offset` px."""
    return ModelCase(
        name=name,
        description="tiny detector for the harness's own tests",
        build_reference=lambda: TinyDetector().eval(),
        build_deploy=lambda target: TinyDetector(sleep_seconds, offset).eval(),
        inputs=(InputSpec("images", "image", tuple(dtypes)),),
        adapter=MMDeployDetections(dets="dets"),
        sizes=sizes or SizeSpace(min_side=32, max_side=96, multiple_of=1, max_aspect=3.0, export_height=48,
                                 export_width=64),
        max_batch=2,
        zoo=ZooEntry(default=default),
    )


def write_cases_module(path: Path, body: str = "CASES = [tiny_case()]\n") -> Path:
    """A cases module at `path` importing this file's helpers, then `body`."""
    path = Path(path)
    path.write_text("from tests.tiny_cases import tiny_case\n"
                    "from deploy_parity import InputSpec, ModelCase, OutputSpec, SizeSpace\n\n"
                    + textwrap.dedent(body))
    return path


def import_cases_module(path: Path, text: str, name: str):
    """`text` written to `path` and imported as module `name`: a user's cases module, whose
    models a test builds (and exports) before the suites are pointed at the file."""
    Path(path).write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export_user_graph(model: nn.Module, path: Path, sample: tuple, inputs: list, outputs: list,
                      dynamic_axes: dict | None = None) -> Path:
    """`model` exported to `path` as a user does: torch.onnx.export (TorchScript, opset 17)."""
    torch.onnx.export(model, sample, str(path), dynamo=False, opset_version=17, input_names=inputs,
                      output_names=outputs, dynamic_axes=dynamic_axes)
    return Path(path)
