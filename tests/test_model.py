import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenzero import model as model_lib
from tokenzero.config import ModelConfig

CONFIGS = {
    "gpt2": ModelConfig(arch="gpt2", vocab_size=11, num_layers=2, num_heads=4, d_model=32,
                        context=16),
    "llama_gqa": ModelConfig(arch="llama", vocab_size=11, num_layers=2, num_heads=4,
                             num_kv_heads=2, d_model=32, context=16, attn_bias=False,
                             proj_bias=False, tie_embeddings=False),
    "qwen2_like": ModelConfig(arch="llama", vocab_size=11, num_layers=1, num_heads=2,
                              num_kv_heads=1, d_model=16, context=16, attn_bias=True,
                              proj_bias=False),
}


def _params(config):
  params = model_lib.init_params(config, jax.random.key(0))
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_later_tokens_never_change_earlier_outputs(name):
  config = CONFIGS[name]
  params = _params(config)
  tokens = jax.random.randint(jax.random.key(2), (2, 10), 0, config.vocab_size)
  changed = tokens.at[:, 6:].set((tokens[:, 6:] + 1) % config.vocab_size)
  forward = jax.jit(model_lib.forward, static_argnums=1)
  a, b = forward(params, config, tokens), forward(params, config, changed)
  np.testing.assert_allclose(a.logits[:, :6], b.logits[:, :6], atol=1e-6)
  np.testing.assert_allclose(a.value[:, :6], b.value[:, :6], atol=1e-6)
  assert not np.allclose(a.logits[:, 6:], b.logits[:, 6:])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_kv_cache_decoding_equals_full_forward(name):
  config = CONFIGS[name]
  params = _params(config)
  tokens = jax.random.randint(jax.random.key(3), (3, 12), 0, config.vocab_size)
  lengths = jnp.array([3, 7, 5])  # varied prompt lengths, right-padded
  full = jax.jit(model_lib.forward, static_argnums=1)(params, config, tokens)

  @jax.jit
  def decode(params, tokens, lengths):
    out, cache = model_lib.prefill(params, config, tokens, lengths, config.context)
    rows = jnp.arange(tokens.shape[0])

    def body(cache, _):
      step_out, new_cache = model_lib.decode_step(params, config, tokens[rows, cache.length],
                                                  cache)
      return new_cache, (step_out.logits, step_out.value, cache.length)

    _, outs = jax.lax.scan(body, cache, None, length=5)
    return out, outs

  prefill_out, (logits, values, positions) = decode(params, tokens, lengths)
  rows = jnp.arange(3)
  last = lengths - 1  # prefill's outputs are the full forward's at each row's last token
  np.testing.assert_allclose(prefill_out.logits, full.logits[rows, last], atol=1e-5)
  np.testing.assert_allclose(prefill_out.value, full.value[rows, last], atol=1e-5)
  for t in range(5):  # each decoded token: logits of the token just appended
    pos = positions[t]
    np.testing.assert_allclose(logits[t], full.logits[rows, pos], atol=1e-5)
    np.testing.assert_allclose(values[t], full.value[rows, pos], atol=1e-5)


def test_value_head_starts_at_zero():
  config = CONFIGS["gpt2"]
  params = model_lib.init_params(config, jax.random.key(0))
  out = model_lib.forward(params, config, jnp.zeros((1, 4), jnp.int32))
  np.testing.assert_allclose(out.value, 0.0, atol=1e-7)


def test_bad_arch_is_a_clear_error():
  config = ModelConfig(arch="rnn", vocab_size=5, context=4)
  with pytest.raises(ValueError, match="'rnn'"):
    model_lib.init_params(config, jax.random.key(0))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_siblings_equal_one_extend_each(name):
  """G sibling tokens in one call see the cache and themselves only: each equals its own
  `extend` call."""
  config = CONFIGS[name]
  params = _params(config)
  tokens = jax.random.randint(jax.random.key(4), (2, 6), 0, config.vocab_size)
  _, cache = model_lib.prefill(params, config, tokens, jnp.array([4, 6]), config.context)
  siblings = jnp.array([[1, 2, 3], [4, 5, 6]])  # [B, G]
  positions = jnp.broadcast_to(cache.length[:, None], siblings.shape)
  out, (k, v) = jax.jit(model_lib.extend_siblings, static_argnums=1)(
      params, config, siblings, positions, [cache.as_source()])
  extend = jax.jit(model_lib.extend, static_argnums=1)
  for g in range(siblings.shape[1]):
    one, (one_k, one_v) = extend(params, config, siblings[:, g], cache.length,
                                 [cache.as_source()])
    np.testing.assert_allclose(out.logits[:, g], one.logits, atol=1e-5)
    np.testing.assert_allclose(out.value[:, g], one.value, atol=1e-5)
    np.testing.assert_allclose(k[:, :, g], one_k, atol=1e-5)
    np.testing.assert_allclose(v[:, :, g], one_v, atol=1e-5)
