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
# The bf16 tolerance, in units of the float32 logits' spread (std 0.2-0.35 for the GPT-2, ~1 for
# the Llama here). bf16 keeps 8 significant bits (a rounding moves a value by up to 0.2%); over
# eight parameter draws, two layers moved the logits by at most 0.12 std (0.05 for the GPT-2)
# and by 0.01 std on average, the values by at most 0.015. A bf16 model that breaks (a mask that
# overflows, a layer in the wrong dtype) misses these by far.
MAX_ERROR, MEAN_ERROR, VALUE_ERROR = 0.25, 0.02, 0.05
ROWS, PROMPT_LEN, NEW_TOKENS = 32, 6, 8

def _params(config):
  """Params as `init_params` draws them (shapes from `jax.eval_shape`, values in numpy: no
  compilation), sharpened as test_model does (+ N(0, 0.05)) so that logits spread beyond
  near-ties."""
  rng = np.random.default_rng(1)

  def draw(path, shape):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      init = np.ones(shape.shape, np.float32)
    elif "bias" in name or "value_head" in name:
      init = np.zeros(shape.shape, np.float32)
    elif "embed" in name:
      init = 0.02 * rng.standard_normal(shape.shape, np.float32)
    else:  # lecun_normal
      init = rng.standard_normal(shape.shape, np.float32) / np.sqrt(shape.shape[0])
    return init + 0.05 * rng.standard_normal(shape.shape, np.float32)

  shapes = jax.eval_shape(model_lib.init_params, config, jax.random.key(0))
  return jax.tree_util.tree_map_with_path(draw, shapes)


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
  params = _params(config)
  prompt = np.random.default_rng(2).integers(0, config.vocab_size, (ROWS, PROMPT_LEN), np.int32)
  gen, out32, out16 = _decode_and_score(params, config, prompt)

  assert out16.logits.dtype == jnp.float32 and out16.value.dtype == jnp.float32
  # The head's output is float32, not a bf16 result cast up: almost no logit is a bf16 value.
  logits16 = np.asarray(out16.logits)
  representable = logits16 == logits16.astype(jnp.bfloat16).astype(np.float32)
  assert representable.mean() < 0.05, representable.mean()
  scale = float(np.std(out32.logits))
  error = np.abs(logits16 - np.asarray(out32.logits))
  assert error.max() <= MAX_ERROR * scale and error.mean() <= MEAN_ERROR * scale, (
      error.max() / scale, error.mean() / scale)
  np.testing.assert_allclose(out16.value, out32.value, atol=VALUE_ERROR, rtol=0)
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
  np.testing.assert_allclose(gen.logprobs, logprobs32, atol=2 * MAX_ERROR * scale, rtol=0)
  # A row's bf16 answer is the float32 model's greedy answer when every step's pick is float32's
  # argmax on the same prefix: most rows are (78-100% over the draws above). Any other pick is a
  # near-tie in float32: within 2 x MAX_ERROR of the best, all that logits that close allow.
  agree = picked == decisions32.argmax(-1)  # [B, T]
  assert np.all(agree, axis=1).mean() >= 0.6, np.all(agree, axis=1).mean()
  gaps = decisions32.max(-1) - np.take_along_axis(decisions32, picked[..., None], 2)[..., 0]
  assert gaps.max() <= 2 * MAX_ERROR * scale, gaps.max() / scale
