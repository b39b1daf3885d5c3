"""Tiny HF checkpoints and tokenizers for the `tokenzero.hf` tests (no downloads).

Every model is a tiny random-init config saved with `save_pretrained` into a temp dir. Weights
are redrawn larger than HF's init so that next-token distributions are sharp and greedy/beam
choices are not near-ties that float noise could flip. The session-wide `hf_checkpoint` fixture
in conftest.py builds one checkpoint per family with `save_and_load`.

Tokenizers are byte-level BPEs trained on a few sentences, saved the way each family's
tokenizer class saves its own (`TOKENIZER_STYLES`).
"""

import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from tokenzero import hf
from tokenzero import model as model_lib
from tokenzero.config import ModelConfig

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
torch.set_num_threads(1)  # tiny models: threads only contend with XLA for the few cores.

VOCAB = 97
PROMPT_LENS = (3, 9, 1, 6)  # varied lengths, right-padded on our side
NEW_TOKENS = 6

HF_CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=0,
        eos_token_id=0),
    # GQA (2 KV heads for 4 query heads), untied head, non-default RoPE theta.
    "llama": lambda: transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
        rope_theta=500.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    # q/k/v biases, multi-query (1 KV head), tied embeddings.
    "qwen2": lambda: transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=32,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
}
FAMILIES = tuple(HF_CONFIGS)

# From-scratch tokenzero configs whose biases and heads no HF family has as they are.
NATIVE_CONFIGS = {
    "gpt2_untied_no_bias": ModelConfig(arch="gpt2", vocab_size=VOCAB, num_layers=1, num_heads=2,
                                       d_model=16, context=16, tie_embeddings=False,
                                       attn_bias=False, proj_bias=False),
    "llama_proj_bias": ModelConfig(arch="llama", vocab_size=VOCAB, num_layers=1, num_heads=2,
                                   num_kv_heads=1, d_model=16, d_ff=24, context=16,
                                   attn_bias=False, proj_bias=True),
    "llama_all_bias": ModelConfig(arch="llama", vocab_size=VOCAB, num_layers=1, num_heads=4,
                                  head_dim=8, d_model=16, context=16, tie_embeddings=False),
}


class Checkpoint(NamedTuple):
  """A saved HF model and what `hf.load` made of it."""
  family: str  # "gpt2" | "llama" | "qwen2"
  hf_model: Any  # the transformers model, in eval mode (shared: copy it before changing it)
  config: ModelConfig
  params: Any  # tokenzero param tree
  model_dir: Path


def _sharpen(hf_model, seed):
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, param in hf_model.named_parameters():
      noise = torch.randn(param.shape, generator=gen)
      is_norm = "norm" in name or ".ln_" in name
      if is_norm and name.endswith("weight"):
        param.copy_(1.0 + 0.1 * noise)
      else:
        param.copy_((0.1 if is_norm else 0.3) * noise)


def save_and_load(family: str, model_dir: Path) -> Checkpoint:
  """A sharpened random `family` model saved into `model_dir`, loaded back by `hf.load`."""
  hf_model = transformers.AutoModelForCausalLM.from_config(HF_CONFIGS[family]()).eval()
  _sharpen(hf_model, seed=FAMILIES.index(family))
  hf_model.save_pretrained(model_dir)
  config, params = hf.load(model_dir)
  return Checkpoint(family, hf_model, config, params, model_dir)


def random_params(config, seed=0):
  """Params of `config` drawn at random (shapes traced, never run: eager init is slow)."""
  shapes = jax.eval_shape(lambda: model_lib.init_params(config, jax.random.key(0)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype), shapes)


def prompts(seed=0, extra=0):
  """Token rows of lengths PROMPT_LENS (+ `extra`), and the same right-padded: [B, P]."""
  rng = np.random.default_rng(seed)
  rows = [rng.integers(0, VOCAB, n + extra).tolist() for n in PROMPT_LENS]
  padded = np.zeros((len(rows), max(PROMPT_LENS) + extra), np.int32)
  for i, row in enumerate(rows):
    padded[i, :len(row)] = row
  return rows, jnp.asarray(padded), jnp.asarray(PROMPT_LENS, jnp.int32) + extra


def hf_logits(hf_model, ids):
  """transformers' logits [L, V] of one unpadded row of token ids."""
  with torch.no_grad():
    return hf_model(torch.tensor([ids])).logits[0].numpy()


forward = jax.jit(model_lib.forward, static_argnums=1)


# --- tokenizers ---------------------------------------------------------------------------------

CORPUS = ["the quick brown fox jumps over the lazy dog", "Hello, world! Hello again.",
          "tokens and more tokens: 12345 67890", "  spaces\tand\nnewlines  ", "ünïcödé ✓ 漢字"]


def _byte_bpe(special_tokens):
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=special_tokens,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(CORPUS, trainer)
  return tok


def _vocab_merges(tok):
  model = json.loads(tok.to_str())["model"]
  return model["vocab"], [tuple(m) for m in model["merges"]]


def _gpt2_style(path):
  """GPT2Tokenizer's own save of a byte-level BPE: BOS = EOS but not added, no PAD."""
  tok = _byte_bpe(["<|endoftext|>"])
  vocab, merges = _vocab_merges(tok)
  transformers.GPT2Tokenizer(vocab=vocab, merges=merges).save_pretrained(path)
  return {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "pad": None}


def _qwen2_style(path):
  """Qwen2Tokenizer's own save: NFC + split regex pre-tokenizer, PAD = EOS = <|endoftext|>."""
  tok = _byte_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
  vocab, merges = _vocab_merges(tok)
  transformers.Qwen2Tokenizer(vocab=vocab, merges=merges).save_pretrained(path)
  return {"bos": None, "eos": "<|endoftext|>", "pad": "<|endoftext|>"}


def llama3_style(path):
  """tokenizer.json whose post-processor adds BOS; several EOS ids in generation_config."""
  specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|endoftext|>"]
  tok = _byte_bpe(specials)
  tok.post_processor = processors.TemplateProcessing(
      single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
  path.mkdir(exist_ok=True)
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps({
      "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
      "eos_token": "<|eot_id|>", "clean_up_tokenization_spaces": False}))
  (path / "generation_config.json").write_text(json.dumps({
      "bos_token_id": 0, "eos_token_id": [1, 2]}))
  return {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": None, "eos_ids": (1, 2),
          "adds_bos": True}


def _stale_flags_style(path):
  """tokenizer_config.json flags that disagree with tokenizer.json's post-processor: transformers
  v5 ignores them (tokenizer.json wins), and so do we."""
  specials = ["<unk>", "<s>", "</s>", "<|endoftext|>"]
  tok = _byte_bpe(specials)
  tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                     special_tokens=[("<s>", 1)])
  path.mkdir(exist_ok=True)
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps({
      "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False,
      "add_eos_token": True, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
      "pad_token": "<unk>", "clean_up_tokenization_spaces": False}))
  return {"bos": "<s>", "eos": "</s>", "pad": "<unk>", "adds_bos": True}


# Style -> writer of a tokenizer directory, returning the special tokens a load must find.
TOKENIZER_STYLES = {"gpt2": _gpt2_style, "qwen2": _qwen2_style, "llama3": llama3_style,
                    "stale_flags": _stale_flags_style}
