"""Beam search against brute force and a textbook beam search over the full forward, and what
it costs when prompts finish early."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from decoders_reference import (ALLOWED, EARLY, EOS, NO_EOS, PROMPT, T, VOCAB, answer_of,
                                log_softmax, next_outputs, prompt_of, run)
from tokenzero import decoders


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_as_wide_as_the_vocab_finds_the_best_pair(decoder_model, length_penalty):
  """Two steps, EOS allowed: the best of [EOS] and every [a, b] by summed log-probability over
  length ** length_penalty, found by brute force."""
  out = run(decoder_model, decoders.Beam(VOCAB, length_penalty=length_penalty), max_new_tokens=2)
  for row in range(len(PROMPT)):
    seq = prompt_of(row)
    first = log_softmax(next_outputs(decoder_model, seq)[0], ALLOWED)
    scored = {(EOS,): first[EOS]}
    for a in np.flatnonzero(ALLOWED):
      if a != EOS:
        second = log_softmax(next_outputs(decoder_model, seq + [int(a)])[0], ALLOWED)
        for b in np.flatnonzero(ALLOWED):
          scored[(int(a), int(b))] = (first[a] + second[b]) / 2 ** length_penalty
    best = max(scored, key=scored.get)
    assert tuple(answer_of(out, row)) == best
    np.testing.assert_allclose(out.score[row], scored[best], rtol=1e-4)


def test_beam_without_eos_is_textbook_beam_search(decoder_model):
  """Keep the W best continuations by summed log-probability at every step; return the best."""
  width = 3
  out = run(decoder_model, decoders.Beam(width), allowed=NO_EOS)
  for row in range(len(PROMPT)):
    beams = [([], 0.0)]
    for _ in range(T):
      options = []
      for answer, total in beams:
        logprobs = log_softmax(next_outputs(decoder_model, prompt_of(row) + answer)[0], NO_EOS)
        options += [(answer + [int(t)], total + logprobs[t]) for t in np.flatnonzero(NO_EOS)]
      beams = sorted(options, key=lambda option: -option[1])[:width]
    assert answer_of(out, row) == beams[0][0]
    np.testing.assert_allclose(out.score[row], beams[0][1] / T, rtol=1e-4)


def _steps_until_full(tiny, row, width, allowed):
  """Textbook early stopping: steps until `width` hypotheses have ended among the top `width`
  continuations of a step (each step runs the 2*width best continuations of the running beams)."""
  running, finished = [([], 0.0)], 0
  for t in range(T):
    options = []
    for answer, total in running:
      logprobs = log_softmax(next_outputs(tiny, prompt_of(row) + answer)[0], allowed)
      options += [(answer + [int(tok)], total + logprobs[tok]) for tok in np.flatnonzero(allowed)]
    options = sorted(options, key=lambda option: -option[1])[:2 * width]
    ends = [answer[-1] == EOS or t + 1 >= T for answer, _ in options]
    finished += sum(ends[:width])
    if finished >= width:
      return t + 1
    running = [option for option, end in zip(options, ends) if not end][:width]
  return T


@pytest.mark.parametrize("width, allowed", [
    (1, EARLY),  # row 1's best first token is EOS: one hypothesis, done after one step
    (2, np.isin(np.arange(VOCAB), [EOS, 4, 7])),  # row 1 has two hypotheses after two steps
])
def test_beam_bills_a_prompt_until_its_answer_stops_changing(decoder_model, width, allowed):
  """Each step runs the C beams of every prompt; once a prompt has C finished hypotheses
  (early_stopping=True) the steps that follow are not billed to it: the count drops. Run on to
  the end ("never"), the same beams cost C per step of the whole budget."""
  out = run(decoder_model, decoders.Beam(width, early_stopping=True), allowed=allowed)
  steps = [_steps_until_full(decoder_model, row, width, allowed) for row in range(len(PROMPT))]
  np.testing.assert_array_equal(out.forward_tokens, width * np.array(steps))
  np.testing.assert_array_equal(out.reward_calls, 0)
  assert min(steps) < T  # some prompt did finish early
  never = run(decoder_model, decoders.Beam(width, early_stopping="never"), allowed=allowed)
  np.testing.assert_array_equal(never.forward_tokens, width * T)


def test_each_beams_best_2c_rank_as_the_whole_vocabulary():
  """The C x 2C candidates give the very (score, beam, token) of the C x V ranking, ties and
  forbidden tokens included, over a vocabulary of many blocks."""
  batch, width, vocab = 3, 4, 3000
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((batch * width, vocab)).astype(np.float32)
  logits[:width] = np.round(logits[:width])  # prompt 0: ties everywhere
  logits[width:2 * width, ::7] = 9.0  # prompt 1: tied leaders spread over the blocks
  allowed = rng.random(vocab) < 0.9
  running = np.array([[0.0, -1e9, -1e9, -1e9], [-1.0, -1.0, -2.0, -1.0], [-3.0, -1.0, -2.0, -0.5]],
                     np.float32)
  args = (jnp.asarray(logits), jnp.asarray(allowed), jnp.asarray(running))
  fast = jax.jit(decoders.Beam(width)._continuations)(*args)
  full = jax.jit(decoders.Beam(width, full_vocab=True)._continuations)(*args)
  for got, want in zip(fast, full):
    np.testing.assert_array_equal(got, want)

