"""What the tiny families share: text sizes, seeded weights, a torch noise source, and test helpers."""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np
import torch
from torch import nn

TEXT_LENGTH = 16  # tokens per prompt of the tiny text encoders
TEXT_DIM = 16  # width of the tiny text embeddings
VOCAB = 128  # rows of the tiny token embeddings (the test tokenizers have < 128 tokens)


class TorchNoise:
    """A runtime noise source drawing with a seeded torch generator (what the torch reference uses)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)

    def standard_normal(self, size, dtype=np.float32):
        return torch.randn(tuple(size), generator=self.generator).numpy().astype(dtype)

    def random(self, size, dtype=np.float64):
        return torch.rand(tuple(size), generator=self.generator, dtype=torch.float64).numpy().astype(dtype)


def seeded(module: nn.Module, seed: int) -> nn.Module:
    """``module`` in eval mode with weights drawn from N(0, 0.3^2) by a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return module.eval()


def run_in_threads(work: Callable[[int], object], count: int) -> list:
    """``[work(0), ..., work(count - 1)]``, each call in its own thread, all started together; an exception
    raised in a thread is re-raised here."""
    results, errors = [None] * count, []

    def run(index: int) -> None:
        try:
            results[index] = work(index)
        except Exception as exc:  # re-raised in the calling thread below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, computed independently of the runtime's helper."""
    return np.round(np.clip((images.astype(np.float64) + 1.0) * 127.5, 0, 255)).astype(np.uint8).transpose(0, 2, 3, 1)


def pipeline_fixtures(build: Callable, modules: Callable, **load_options):
    """The module-scoped fixtures of one tiny family's pipeline tests, to assign to these names in the test module:
    ``export_dir`` (the folder ``build`` writes), ``pipe`` (it, loaded on ONNX Runtime CPU with one thread and
    ``load_options``) and ``modules`` (``modules()``: the family's PyTorch networks with the export's weights)."""
    import pytest

    import genrt.runtime

    @pytest.fixture(scope="module")
    def export_dir(tmp_path_factory):
        return build(tmp_path_factory.mktemp(build.__name__.removeprefix("build_")))

    @pytest.fixture(scope="module")
    def pipe(export_dir):
        with genrt.runtime.load(export_dir, backend="onnxruntime-cpu", threads=1, **load_options) as opened:
            yield opened

    @pytest.fixture(scope="module", name="modules")
    def modules_fixture():
        return modules()

    return export_dir, pipe, modules_fixture
