"""vocab_ops against the JAX functions they replace: the same top-k, the same argmax and
log-probabilities, and draws from the same distribution (chi-square over many draws)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenzero import decoders, vocab_ops

DRAWS = 40000  # rows drawn at once, one compiled call


def chi_square_bound(dof: int) -> float:
  """Upper 1e-6 tail of chi-square with `dof` degrees of freedom (Wilson-Hilferty): a correct
  sampler exceeds it once in a million runs; a token off by a percent point exceeds it here."""
  z = 4.75
  return dof * (1 - 2 / (9 * dof) + z * np.sqrt(2 / (9 * dof))) ** 3


def chi_square(counts: np.ndarray, probs: np.ndarray) -> float:
  """Pearson's statistic over the tokens of positive probability."""
  expected = probs * counts.sum()
  keep = probs > 0
  return float(np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep]))


def _rows(vocab: int) -> np.ndarray:
  """[5, V] logits: random, rounded to make ties, mostly -inf, with -inf at both ends, and a
  two-level row whose ties straddle the blocks."""
  rng = np.random.default_rng(0)
  rows = rng.standard_normal((5, vocab)).astype(np.float32)
  rows[1] = np.round(rows[1])
  rows[2, rng.random(vocab) < 0.9] = -np.inf
  rows[3, :200] = rows[3, -200:] = -np.inf
  rows[4] = np.where(np.arange(vocab) % 300 < 3, 1.0, 0.0)
  return rows


@pytest.mark.parametrize("k", [1, 8, 16])
def test_top_k_is_lax_top_k(k):
  rows = jnp.asarray(_rows(3000))  # 24 blocks
  want = jax.lax.top_k(rows, k)
  got = jax.jit(vocab_ops.top_k, static_argnums=1)(rows, k)
  np.testing.assert_array_equal(got[0], want[0])
  np.testing.assert_array_equal(got[1], want[1])
  # Leading axes are rows too.
  three_d = jax.jit(vocab_ops.top_k, static_argnums=1)(rows.reshape(5, 1, 3000), k)
  np.testing.assert_array_equal(three_d[1][:, 0], want[1])


@jax.jit
def _argmax_and_log_probs(rows):
  token = vocab_ops.argmax(rows)
  picks = jnp.stack([token, jnp.array([0, 3, 999, 500, 600])], axis=1)  # some of -inf logprob
  want = jnp.take_along_axis(jax.nn.log_softmax(rows), picks, axis=1)
  got = jax.vmap(vocab_ops.log_prob, in_axes=(None, 1), out_axes=1)(rows, picks)
  return token, jnp.argmax(rows, axis=-1), got, want


def test_argmax_and_log_prob_are_jax_s():
  token, want_token, got, want = _argmax_and_log_probs(jnp.asarray(_rows(1000)))
  np.testing.assert_array_equal(token, want_token)
  np.testing.assert_allclose(got, want, rtol=1e-6)


_categorical = jax.jit(lambda x, key: vocab_ops.categorical(key, x))  # one compile a shape


def _draw(logits: np.ndarray, sampler, seed: int = 0) -> np.ndarray:
  batch = jnp.broadcast_to(jnp.asarray(logits, jnp.float32), (DRAWS, len(logits)))
  return np.asarray(jax.jit(sampler)(batch, jax.random.key(seed)))


def _softmax(logits: np.ndarray) -> np.ndarray:
  p = np.exp(logits - np.max(logits))
  return p / p.sum()


@pytest.mark.parametrize("name, logits", [
    # One block; token 0 and the last token masked.
    ("one_block", np.array([-np.inf, np.log(0.3), np.log(0.05), np.log(0.2), np.log(0.45),
                            -np.inf])),
    # 300 tokens, 3 blocks: mass in every block, the first and the last token among it.
    ("blocks", np.where(np.isin(np.arange(300), [0, 5, 127, 128, 200, 299]),
                        np.array([0.0, -1.0, 0.5, -2.0, 1.0, 0.2] * 50)[:300], -np.inf)),
])
def test_categorical_matches_softmax_and_never_draws_a_masked_token(name, logits):
  del name
  probs = _softmax(logits)
  draws = _draw(logits, _categorical)
  counts = np.bincount(draws, minlength=len(logits))
  assert counts[probs == 0].sum() == 0
  assert np.all(counts[probs > 0] > 0)  # the last token with mass is reached too
  bound = chi_square_bound(int((probs > 0).sum()) - 1)
  assert chi_square(counts, probs) < bound
  # ...and the check has teeth: a percent point moved between two tokens fails it.
  first, second = np.flatnonzero(probs > 0)[:2]
  off = probs.copy()
  off[first] += 0.01
  off[second] -= 0.01
  assert chi_square(counts, off) > bound


def test_the_last_token_is_reached_and_a_row_without_mass_gives_zero():
  logits = np.full(300, -np.inf, np.float32)
  logits[299] = 0.0  # the only token: every draw, whatever the uniform
  assert np.all(_draw(logits, _categorical) == 299)
  assert np.all(_draw(np.full(300, -np.inf), _categorical) == 0)


@pytest.mark.parametrize("sampler, keep", [
    (dict(temperature=2.0, top_k=3), [1, 3, 4]),
])
def test_sample_draws_as_the_gumbel_reference(sampler, keep):
  """Temperature and top-k still apply (top-p: test_decoders_sampling); the inverse-CDF draw
  and jax.random.categorical give the same distribution (each against the exact one, and
  against each other)."""
  logits = np.log(np.array([0.05, 0.5, 0.1, 0.2, 0.15]))
  tempered = logits / sampler.get("temperature", 1.0)
  probs = np.where(np.isin(np.arange(5), keep), _softmax(tempered), 0.0)
  probs /= probs.sum()
  fast = np.bincount(_draw(logits, decoders.Sample(**sampler).get_next_tokens), minlength=5)
  slow = np.bincount(_draw(logits, decoders.Sample(**sampler, draw="gumbel").get_next_tokens),
                     minlength=5)
  dof = len(keep) - 1
  assert fast[probs == 0].sum() == slow[probs == 0].sum() == 0
  assert chi_square(fast, probs) < chi_square_bound(dof)
  assert chi_square(slow, probs) < chi_square_bound(dof)
  # Two-sample: the pooled estimate stands in for the exact distribution.
  pooled = (fast + slow) / (2 * DRAWS)
  two_sample = chi_square(fast, pooled) + chi_square(slow, pooled)
  assert two_sample < chi_square_bound(dof)


def test_sample_rejects_an_unknown_draw():
  with pytest.raises(ValueError, match="draw"):
    decoders.Sample(draw="nope").get_next_tokens(jnp.zeros((1, 3)), jax.random.key(0))
