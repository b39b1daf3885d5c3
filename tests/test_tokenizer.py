import pytest

from tokenzero.tokenizer import ByteTokenizer, CharTokenizer, TokenizerError, from_spec


@pytest.mark.parametrize("text", ["", "abc", "cabbage", "a b c"])
def test_char_round_trip(text):
  tok = CharTokenizer("abcdefg ")
  ids = tok.encode(text)
  assert all(i >= 3 for i in ids)
  assert tok.decode(ids + [tok.eos_id, 5, 6]) == text


@pytest.mark.parametrize("text", ["hello", "naïve café ✓", ""])
def test_byte_round_trip(text):
  tok = ByteTokenizer()
  assert tok.vocab_size == 259
  assert tok.decode(tok.encode(text)) == text


def test_unknown_character_is_named():
  tok = CharTokenizer("0123456789")
  with pytest.raises(TokenizerError, match=r"'x' at position 2"):
    tok.encode("12x4")


def test_specials_are_fixed_and_skipped():
  tok = CharTokenizer("ab")
  assert (tok.pad_id, tok.sep_id, tok.eos_id) == (0, 1, 2)
  assert tok.decode([0, 3, 1, 4, 2, 3]) == "ab"


@pytest.mark.parametrize("spec,size", [("byte", 259), ("char:xyz", 6)])
def test_from_spec(spec, size):
  assert from_spec(spec).vocab_size == size


def test_bad_spec_and_alphabet():
  with pytest.raises(TokenizerError, match="unknown tokenizer spec"):
    from_spec("word")
  with pytest.raises(TokenizerError, match="repeats"):
    CharTokenizer("abca")
