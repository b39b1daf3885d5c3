"""Beam search against brute force and a textbook beam search over the full forward."""

import numpy as np
import pytest

from decoders_reference import (ALLOWED, EOS, NO_EOS, PROMPT, T, VOCAB, answer_of, log_softmax,
                                next_outputs, prompt_of, run)
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
