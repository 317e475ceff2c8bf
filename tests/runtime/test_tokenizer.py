import numpy as np
import pytest

from genrt.errors import InputError
from genrt.manifest import ManifestError
from genrt.runtime.tokenizer import PromptTokenizer, TruncationWarning
from tests.runtime.tiny.exports import write_tokenizer

LONG = "a photograph of an astronaut riding a horse " * 6


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return write_tokenizer(tmp_path_factory.mktemp("clip"), "clip")


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return write_tokenizer(tmp_path_factory.mktemp("t5"), "t5")


def reference(folder, prompts, max_length, pad_token):
    from transformers import PreTrainedTokenizerFast

    ref = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), pad_token=pad_token)
    return ref(prompts, padding="max_length", max_length=max_length, truncation=True, return_tensors="np")


@pytest.mark.parametrize("kind, pad_token", [("clip", "<|endoftext|>"), ("t5", "<pad>")])
def test_matches_transformers_padding_and_truncation(kind, pad_token, clip_dir, t5_dir):
    folder = clip_dir if kind == "clip" else t5_dir
    prompts = ["a red cube on a blue sphere", "", LONG]
    tokenizer = PromptTokenizer(folder, max_length=16)
    with pytest.warns(TruncationWarning, match=r"prompt '.{27}\.\.\.' has \d+ tokens; the text encoder takes at most 16"):
        batch = tokenizer(prompts)
    expected = reference(folder, prompts, 16, pad_token)
    assert batch.input_ids.dtype == np.int32 and batch.input_ids.shape == (3, 16)
    np.testing.assert_array_equal(batch.input_ids, expected["input_ids"])
    np.testing.assert_array_equal(batch.attention_mask, expected["attention_mask"])


def test_clip_layout_start_end_and_pad(clip_dir):
    tokenizer = PromptTokenizer(clip_dir, max_length=12)
    raw = tokenizer._full
    start, end = raw.token_to_id("<|startoftext|>"), raw.token_to_id("<|endoftext|>")
    with pytest.warns(TruncationWarning):
        batch = tokenizer(["a cat", LONG])
    words = raw.encode("a cat", add_special_tokens=False).ids
    assert batch.input_ids[0].tolist() == [start, *words, end] + [end] * (12 - len(words) - 2)
    assert batch.input_ids[1, 0] == start and batch.input_ids[1, -1] == end  # truncated keeps the end token
    assert batch.attention_mask[1].sum() == 12


def test_refuses_long_prompt_without_truncation(clip_dir):
    tokenizer = PromptTokenizer(clip_dir, max_length=16, pad_id=0)
    assert tokenizer(["a cat"]).input_ids[0, -1] == 0  # explicit pad id (SD2 style)
    with pytest.raises(InputError, match=r"prompt '.{27}\.\.\.' has \d+ tokens; the text encoder takes at most 16.*fix: shorten"):
        tokenizer([LONG], truncate=False)
    with pytest.raises(InputError, match="prompts must be a list of strings"):
        tokenizer("a cat")


def test_missing_tokenizer_file(tmp_path):
    with pytest.raises(ManifestError, match="tokenizer.json is missing"):
        PromptTokenizer(tmp_path, max_length=77)
