"""The export folder's tokenizer: stand-in for random weights, slow-file conversion, refusal without one."""

import json

import numpy as np
import pytest

from genrt.errors import InputError
from genrt.export.tokenizer import StandinVocabulary, TokenizerSource, standin_tokenizer
from genrt.runtime.tokenizer import PromptTokenizer


def test_standin_fits_the_encoder_vocabulary_and_special_ids(tmp_path):
    vocabulary = StandinVocabulary(vocab_size=1000, end_id=2, pad_id=1, start_id=0)
    assert TokenizerSource(standin=vocabulary).write_into(tmp_path / "tok") == 1
    tokens = PromptTokenizer(tmp_path / "tok", max_length=12, pad_id=1)(["A cat!", "ab"])
    ids = tokens.input_ids
    assert ids.dtype == np.int32 and ids.shape == (2, 12)
    assert ids[0, 0] == 0 and ids[0, 7] == 2 and list(ids[0, 8:]) == [1] * 4  # start, 6 characters, end, padding
    assert list(tokens.attention_mask[0]) == [1] * 8 + [0] * 4
    assert ids[0, 1] == ids[1, 1] and ids[0, 1] != ids[0, 3]  # 'a' (lower-cased) is one id; 'c' another
    assert ids.max() < 1000 and len(set(ids[0, 1:7])) == 5  # "a cat!": a, space, c, t, !


def test_standin_for_a_tiny_t5_vocabulary_keeps_ids_in_range():
    tokenizer = standin_tokenizer(StandinVocabulary(vocab_size=16, end_id=1, pad_id=0))
    ids = tokenizer.encode("zebra 42").ids
    assert ids[-1] == 1 and max(ids) < 16
    assert ids[0] == tokenizer.token_to_id("<unk>")  # 'z' did not fit into 16 ids


def _slow_clip_folder(folder, pad_token):
    """A CLIP tokenizer in the 'slow' files that diffusers folders ship (no tokenizer.json)."""
    folder.mkdir()
    vocab = {"!": 0, "a": 1, "c": 2, "t": 3, "a</w>": 4, "t</w>": 5, "ca": 6, "cat</w>": 7,
             "<|startoftext|>": 8, "<|endoftext|>": 9}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\nc a\nca t</w>\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad_token}))
    return folder


@pytest.mark.parametrize("pad_token, pad_id", [("<|endoftext|>", 9), ("!", 0)])  # SD 1.x, SD 2.x
def test_slow_clip_files_are_converted_and_keep_their_padding(tmp_path, pad_token, pad_id):
    import transformers

    folder = _slow_clip_folder(tmp_path / "slow", pad_token)
    assert TokenizerSource(folder=folder).write_into(tmp_path / "tok") == pad_id
    assert (tmp_path / "tok/vocab.json").is_file()  # companions are kept
    ours = PromptTokenizer(tmp_path / "tok", max_length=8, pad_id=pad_id)(["a cat"]).input_ids
    theirs = transformers.CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad_token)
    expected = theirs(["a cat"], padding="max_length", max_length=8)["input_ids"]
    assert ours.tolist() == expected


def test_unreadable_tokenizer_folder_is_one_clear_error(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/vocab.json").write_text("{}")
    with pytest.raises(InputError, match="could not be read"):
        TokenizerSource(folder=tmp_path / "bad").write_into(tmp_path / "tok")
