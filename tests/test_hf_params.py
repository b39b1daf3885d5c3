"""Loaded HF checkpoints compute what `transformers` computes: logits, cached decoding, greedy
and beam continuations, and from-scratch tokenzero configs exported to an HF layout.

The checkpoints are the session-wide `hf_checkpoint` fixture (see `hf_checkpoints`).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_checkpoints import (NATIVE_CONFIGS, NEW_TOKENS, PROMPT_LENS, VOCAB, forward,  # noqa: E402
                            hf_logits, prompts, random_params)
from tokenzero import decoders  # noqa: E402
from tokenzero import hf  # noqa: E402
from tokenzero import model as model_lib  # noqa: E402


@functools.partial(jax.jit, static_argnums=1)
def _cached_logits(params, config, prompt, lengths, continuation):
  """Prefill right-padded prompts [B, P], then decode `continuation` [B, T] one token at a
  time from the KV cache -> logits [B, T, V]."""
  _, cache = model_lib.prefill(params, config, prompt, lengths,
                               prompt.shape[1] + continuation.shape[1])

  def body(cache, token):
    out, cache = model_lib.decode_step(params, config, token, cache)
    return cache, out.logits

  _, logits = jax.lax.scan(body, cache, continuation.T)
  return jnp.moveaxis(logits, 0, 1)


def test_logits_match_transformers(hf_checkpoint):
  rows, tokens, _ = prompts(extra=NEW_TOKENS)
  out = forward(hf_checkpoint.params, hf_checkpoint.config, tokens)
  for i, ids in enumerate(rows):
    np.testing.assert_allclose(out.logits[i, :len(ids)], hf_logits(hf_checkpoint.hf_model, ids),
                               atol=1e-4, rtol=0)
  # The new value head starts neutral.
  np.testing.assert_array_equal(out.value, 0.0)


def test_cached_decoding_matches_forward(hf_checkpoint):
  config, params = hf_checkpoint.config, hf_checkpoint.params
  rows, tokens, _ = prompts(extra=NEW_TOKENS)
  lengths = jnp.asarray(PROMPT_LENS, jnp.int32)
  prompt = jnp.where(jnp.arange(max(PROMPT_LENS)) < lengths[:, None], tokens[:, :max(PROMPT_LENS)],
                     0)
  continuation = jnp.asarray([row[n:] for row, n in zip(rows, PROMPT_LENS)])
  cached = _cached_logits(params, config, prompt, lengths, continuation)
  full = forward(params, config, tokens).logits
  for i, n in enumerate(PROMPT_LENS):
    np.testing.assert_allclose(cached[i], full[i, n:n + NEW_TOKENS], atol=1e-4, rtol=0)


def _until_eos(ids, eos_id):
  ids = list(ids)
  return ids[:ids.index(eos_id) + 1] if eos_id in ids else ids


def test_greedy_matches_generate(hf_checkpoint):
  hf_model, config, params = hf_checkpoint.hf_model, hf_checkpoint.config, hf_checkpoint.params
  rows, prompt, lengths = prompts(seed=2)

  def hf_greedy(ids, eos_id):
    with torch.no_grad():
      out = hf_model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=NEW_TOKENS,
                              eos_token_id=eos_id, pad_token_id=eos_id,
                              attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    return _until_eos(out[0, len(ids):].tolist(), eos_id)

  # EOS = a token row 0 emits mid-answer, so stopping at EOS is exercised too.
  eos_id = hf_greedy(rows[0], eos_id=VOCAB - 1)[min(2, NEW_TOKENS - 1)]
  ours = decoders.generate(params, prompt, lengths, jax.random.key(0), jnp.ones(VOCAB, bool),
                           config=config, sampler=decoders.Greedy(),
                           max_new_tokens=NEW_TOKENS, eos_id=int(eos_id))
  for i, ids in enumerate(rows):
    got = ours.completion[i, :int(ours.completion_len[i])].tolist()
    assert got == hf_greedy(ids, eos_id), f"row {i}"


def test_beam_matches_generate(hf_checkpoint):
  hf_model, config, params = hf_checkpoint.hf_model, hf_checkpoint.config, hf_checkpoint.params
  rows, prompt, lengths = prompts(seed=3)
  width = 4
  # Sequences without EOS: HF gets none (its generation config's EOS is lifted for the call;
  # a generation_config argument would not do, generate fills None from the model's), ours an
  # id outside the vocabulary.
  ours = decoders.decode(params, prompt, lengths, jax.random.key(0), jnp.ones(VOCAB, bool),
                         decoder=decoders.Beam(width), config=config,
                         max_new_tokens=NEW_TOKENS, eos_id=VOCAB)
  saved_eos = hf_model.generation_config.eos_token_id
  hf_model.generation_config.eos_token_id = None
  try:
    for i, ids in enumerate(rows):
      with torch.no_grad():
        out = hf_model.generate(torch.tensor([ids]), do_sample=False, num_beams=width,
                                max_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=0,
                                attention_mask=torch.ones(1, len(ids), dtype=torch.long))
      assert ours.completion[i].tolist() == out[0, len(ids):].tolist(), f"row {i}"
  finally:
    hf_model.generation_config.eos_token_id = saved_eos


@pytest.mark.parametrize("name", NATIVE_CONFIGS)
def test_export_native_config(name, tmp_path):
  """A from-scratch tokenzero model exports to a layout that computes the same logits."""
  config = NATIVE_CONFIGS[name]
  params = random_params(config)
  hf.export(params, config, tmp_path)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
  ids = [5, 17, 3, 90, 41]
  ours = forward(params, config, jnp.asarray([ids])).logits[0]
  np.testing.assert_allclose(hf_logits(reloaded, ids), ours, atol=1e-4, rtol=0)
