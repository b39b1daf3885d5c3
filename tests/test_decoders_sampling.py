"""Next-token rules (top-k, top-p, sampling) and the samplers as decoders, against references
recomputed with the full forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders_reference import (ALLOWED, EARLY, EOS, PAD, PROMPT, T, answer_of, next_outputs,
                                prompt_of, run)
from tokenzero import decoders

PROBS = np.array([0.05, 0.5, 0.1, 0.2, 0.15])


@pytest.mark.parametrize("top_p, nucleus", [
    (0.45, {1}), (0.65, {1, 3}), (0.8, {1, 3, 4}), (0.9, {1, 2, 3, 4}), (0.99, {0, 1, 2, 3, 4})])
def test_top_p_keeps_exactly_the_nucleus(top_p, nucleus):
  logits = jnp.log(jnp.asarray([PROBS, PROBS[::-1]], jnp.float32))
  kept = jax.jit(decoders.top_p_logits, static_argnums=1)(logits, top_p)
  assert set(np.flatnonzero(np.isfinite(kept[0]))) == nucleus
  assert set(np.flatnonzero(np.isfinite(kept[1]))) == {4 - i for i in nucleus}
  np.testing.assert_array_equal(np.asarray(kept)[np.isfinite(kept)],
                                np.asarray(logits)[np.isfinite(kept)])


@pytest.mark.parametrize("k, kept", [(1, {1}), (3, {1, 3, 4}), (5, {0, 1, 2, 3, 4})])
def test_top_k_keeps_exactly_k(k, kept):
  logits = jnp.log(jnp.asarray([PROBS], jnp.float32))
  out = jax.jit(decoders.top_k_logits, static_argnums=1)(logits, k)
  assert set(np.flatnonzero(np.isfinite(out[0]))) == kept
  # Ties at the boundary still keep exactly k (the lower ids).
  tied = decoders.top_k_logits(jnp.asarray([[1.0, 2.0, 1.0, 1.0]]), 2)
  assert set(np.flatnonzero(np.isfinite(tied[0]))) == {0, 1}


def test_sampling_draws_from_the_renormalised_nucleus():
  logits = jnp.log(jnp.broadcast_to(jnp.asarray(PROBS, jnp.float32), (20000, 5)))
  draws = jax.jit(decoders.Sample(top_p=0.8).get_next_tokens)(logits, jax.random.key(0))
  counts = np.bincount(np.asarray(draws), minlength=5) / len(draws)
  expected = np.where(np.isin(np.arange(5), [1, 3, 4]), PROBS, 0.0)
  np.testing.assert_allclose(counts, expected / expected.sum(), atol=0.015)
  assert counts[0] == counts[2] == 0.0
  top1 = jax.jit(decoders.Sample(top_k=1).get_next_tokens)(logits[:8], jax.random.key(1))
  np.testing.assert_array_equal(top1, 1)


@pytest.mark.parametrize("allowed", [ALLOWED, EARLY], ids=["allowed", "early_eos"])
def test_greedy_is_the_argmax_path_of_the_full_forward(decoder_model, allowed):
  """...and it runs one forward per answer token, so a row that ends early costs less."""
  out = run(decoder_model, decoders.Greedy(), allowed=allowed)
  lengths = []
  for row in range(len(PROMPT)):
    seq, want = prompt_of(row), []
    for _ in range(T):
      logits, _ = next_outputs(decoder_model, seq + want)
      want.append(int(np.argmax(np.where(allowed, logits, -np.inf))))
      if want[-1] == EOS:
        break
    assert answer_of(out, row) == want
    assert out.forward_tokens[row] == len(want) and out.reward_calls[row] == 0
    assert np.all(out.completion[row, len(want):] == PAD)
    lengths.append(len(want))
  assert (min(lengths) < T) == (allowed is EARLY)


def test_steps_after_the_end_are_not_charged(decoder_model):
  lengths = []
  for seed in range(5):
    out = run(decoder_model, decoders.Sample(), seed=seed)
    np.testing.assert_array_equal(out.forward_tokens, out.completion_len)
    lengths.extend(out.completion_len)
  assert min(lengths) < T  # some answer did end early
