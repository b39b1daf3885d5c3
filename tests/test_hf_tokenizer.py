"""A checkpoint's own tokenizer encodes and decodes as `transformers`' AutoTokenizer does, and
finds the same BOS, EOS and PAD, for each family's way of saving it."""

import pytest

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_checkpoints import TOKENIZER_STYLES  # noqa: E402
from tokenzero import hf  # noqa: E402

TEXTS = ["Hello world", " leading space", "tabs\tand\nnewlines", "ünïcödé ✓ 漢字 ok", "x",
         "the lazy dog<|endoftext|>again"]


@pytest.mark.parametrize("style", TOKENIZER_STYLES)
def test_tokenizer_matches_transformers(style, tmp_path):
  expected = TOKENIZER_STYLES[style](tmp_path)
  reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
  ours = hf.load_tokenizer(tmp_path)
  for text in TEXTS:
    ids = ours.encode(text)
    assert ids == reference(text)["input_ids"], text
    # Decoding drops special tokens (and stops at EOS) as decode(skip_special_tokens=True) does.
    body = [i for i in ids if i not in ours.eos_ids]
    assert ours.decode(body) == reference.decode(body, skip_special_tokens=True), text
  token_id = ours.backend.token_to_id
  assert ours.bos_id == (token_id(expected["bos"]) if expected["bos"] else None)
  assert ours.eos_id == token_id(expected["eos"]) == reference.eos_token_id
  assert ours.eos_ids == expected.get("eos_ids", (ours.eos_id,))
  assert ours.pad_token_id == (token_id(expected["pad"]) if expected["pad"] else None)
  assert ours.pad_id == (ours.pad_token_id if expected["pad"] else ours.eos_id)
  assert (ours.encode("x")[0] == ours.bos_id) == expected.get("adds_bos", False)
  assert ours.sep_id is None and ours.vocab_size == len(reference)
  assert ours.describe().startswith("hf:")
