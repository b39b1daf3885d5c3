"""`model.dtype=bfloat16` (bf16 compute over float32 params) stays close to float32: same
params, float32 logits and values out, and greedy decoding that only departs at near-ties."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenzero import decoders
from tokenzero import model as model_lib
from tokenzero.config import ModelConfig

# The tied head (GPT-2) and the untied one (Llama with grouped-query attention).
CONFIGS = {
    "gpt2": ModelConfig(arch="gpt2", vocab_size=11, num_layers=2, num_heads=4, d_model=32,
                        context=16),
    "llama_gqa": ModelConfig(arch="llama", vocab_size=11, num_layers=2, num_heads=4,
                             num_kv_heads=2, d_model=32, context=16, attn_bias=False,
                             proj_bias=False, tie_embeddings=False),
}
# bf16 keeps 8 significant bits (a rounding is ~0.4% of a value); through two layers to logits
# of unit scale (std ~0.3-1 here) the float32 model's logits and values move by up to ~0.06
# here. 0.1 is the bound; a bf16 model that breaks (a mask overflowing, a layer in the wrong
# dtype) misses it by far.
TOLERANCE = 0.1
ROWS, PROMPT_LEN, NEW_TOKENS = 32, 6, 8

def _sharpened(params):
  """Random init sharpened (as test_model does), so that logits spread beyond near-ties; the
  noise drawn in numpy: no compilation."""
  rng = np.random.default_rng(1)
  return jax.tree.map(lambda x: np.asarray(x) + 0.05 * rng.standard_normal(x.shape, np.float32),
                      params)


@functools.partial(jax.jit, static_argnums=1)
def _decode_and_score(params, config, prompt):
  """bf16 greedy decoding (prefill, then the KV cache), then the float32 and the bf16 model over
  its answers (teacher-forced): one program, one compilation."""
  half = dataclasses.replace(config, dtype="bfloat16")
  gen = decoders.generate(params, prompt, jnp.full((ROWS,), PROMPT_LEN, jnp.int32),
                          jax.random.key(0), jnp.ones((config.vocab_size,), bool), config=half,
                          sampler=decoders.Greedy(), max_new_tokens=NEW_TOKENS, eos_id=-1)
  tokens = jnp.concatenate([prompt, gen.completion], axis=1)
  return gen, model_lib.forward(params, config, tokens), model_lib.forward(params, half, tokens)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bfloat16_decoding_is_close_to_float32(name):
  config = CONFIGS[name]
  params = _sharpened(model_lib.init_params(config, jax.random.key(0)))
  prompt = np.random.default_rng(2).integers(0, config.vocab_size, (ROWS, PROMPT_LEN), np.int32)
  gen, out32, out16 = _decode_and_score(params, config, prompt)

  assert out16.logits.dtype == jnp.float32 and out16.value.dtype == jnp.float32
  # The head's output is float32, not a bf16 result cast up: almost no logit is a bf16 value.
  logits16 = np.asarray(out16.logits)
  representable = logits16 == logits16.astype(jnp.bfloat16).astype(np.float32)
  assert representable.mean() < 0.05, representable.mean()
  np.testing.assert_allclose(out16.logits, out32.logits, atol=TOLERANCE, rtol=0)
  np.testing.assert_allclose(out16.value, out32.value, atol=TOLERANCE, rtol=0)
  # The KV cache stays in the compute dtype: bf16's memory saving is kept.
  half = dataclasses.replace(config, dtype="bfloat16")
  cache = jax.eval_shape(
      lambda p, x: model_lib.prefill(p, half, x, jnp.full((ROWS,), PROMPT_LEN), 16)[1],
      params, prompt)
  assert cache.k.dtype == jnp.bfloat16

  picked = np.asarray(gen.completion)  # [B, T]
  decisions32 = np.asarray(out32.logits)[:, PROMPT_LEN - 1:-1]  # [B, T, V]: step t's choice
  # The cached bf16 decode scored its tokens as the float32 full forward does.
  log_z = np.log(np.sum(np.exp(decisions32 - decisions32.max(-1, keepdims=True)), -1))
  logprobs32 = (np.take_along_axis(decisions32, picked[..., None], axis=2)[..., 0]
                - decisions32.max(-1) - log_z)
  np.testing.assert_allclose(gen.logprobs, logprobs32, atol=2 * TOLERANCE, rtol=0)
  # A row's bf16 answer is the float32 model's greedy answer when every step's pick is float32's
  # argmax on the same prefix: most rows are. Any other pick is a near-tie in float32 (within
  # 2 x TOLERANCE of the best, all that logits within TOLERANCE allow).
  agree = picked == decisions32.argmax(-1)  # [B, T]
  assert np.all(agree, axis=1).mean() >= 0.75, np.all(agree, axis=1).mean()
  gaps = decisions32.max(-1) - np.take_along_axis(decisions32, picked[..., None], 2)[..., 0]
  assert gaps.max() <= 2 * TOLERANCE, gaps.max()
