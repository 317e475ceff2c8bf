"""The runtime's tokenizer (tokenizer.json written by export, read with HF ``tokenizers``) gives the ids of
transformers' tokenizers on tricky prompts: the real CLIP tokenizers of SD 1.5 (pads with <|endoftext|>) and
SD 2.1-base (pads with "!"), and DeepFloyd IF's T5 with diffusers' IF preprocessing (``lower().strip()``).

transformers 5 has one CLIP tokenizer implementation (``CLIPTokenizer`` is backed by ``tokenizers``, like
``CLIPTokenizerFast``), so both give the same ids here. transformers 4's slow CLIPTokenizer (and open_clip)
ran ftfy's ``fix_text`` and HTML unescaping first when ftfy was installed: on HTML entities ("&amp;"),
curly quotes, ligatures, fullwidth and zero-width characters it gave other ids than the fast tokenizer,
whose ids genrt reproduces (diffusers pipelines load the class their model_index.json names)."""

import warnings

import numpy as np
import pytest

from genrt.export.deepfloyd import IFTokenizerSource
from genrt.export.tokenizer import TokenizerSource
from genrt.runtime.tokenizer import PromptTokenizer, TruncationWarning
from tests.diffusers_parity.if_folders import t5_tokenizer
from tests.diffusers_parity.sd_folders import FIXTURES

transformers = pytest.importorskip("transformers")

PROMPTS = [
    "a photograph of an astronaut riding a horse",
    "Café naïve résumé — “curly quotes” and ‘single’ ones",
    "🐱🐶 emoji 👩‍🚀 with a zero-width joiner",
    "(cat:1.2), [dog], {bird}, ((masterpiece))",
    "Tom &amp; Jerry &lt;3 &quot;hi&quot;",
    "ﬁne ligature and ｆｕｌｌｗｉｄｔｈ text",
    "zero\u200bwidth space",
    " ".join(["word"] * 100),  # > 77 tokens: truncated, the end token kept
    "UPPER lower MiXeD",
    "  spaces   and\ttabs\n",
    "日本語のテキスト",
    "",
]


def _runtime_ids(source: TokenizerSource, tmp_path, max_length: int) -> np.ndarray:
    pad_id = source.write_into(tmp_path / "tokenizer")
    tokenizer = PromptTokenizer(tmp_path / "tokenizer", max_length, pad_id)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        return tokenizer(PROMPTS).input_ids


@pytest.mark.parametrize("folder, pad", [("sd15", 49407), ("sd21base", 0)])
def test_clip_ids_equal_transformers(folder, pad, tmp_path):
    source = FIXTURES / folder / "tokenizer"
    ours = _runtime_ids(TokenizerSource(folder=source), tmp_path, 77)
    assert ours.shape == (len(PROMPTS), 77) and ours.dtype == np.int32
    assert ours[-1, 2] == pad  # the empty prompt: start, end, then padding
    for kind in (transformers.CLIPTokenizer, transformers.CLIPTokenizerFast):
        reference = kind.from_pretrained(str(source))
        expected = reference(PROMPTS, padding="max_length", max_length=77, truncation=True).input_ids
        np.testing.assert_array_equal(ours, np.asarray(expected), err_msg=kind.__name__)


def test_t5_ids_equal_diffusers_if_preprocessing(tmp_path):
    reference = t5_tokenizer()
    reference.save_pretrained(str(tmp_path / "source"))
    ours = _runtime_ids(IFTokenizerSource(folder=tmp_path / "source"), tmp_path, 77)
    expected = reference([p.lower().strip() for p in PROMPTS], padding="max_length", max_length=77,
                         truncation=True).input_ids
    np.testing.assert_array_equal(ours, np.asarray(expected))
    assert ours[-1, 0] == 1 and ours[-1, 1] == 0  # "": </s>, then <pad>
