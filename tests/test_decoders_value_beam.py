"""Value-guided beam search follows the value head of the full forward."""

import numpy as np

from decoders_reference import NO_EOS, PROMPT, T, answer_of, next_outputs, prompt_of, run
from tokenzero import decoders


def test_value_beam_follows_the_value_head(decoder_model):
  """One beam expanding every allowed token: each step keeps the child with the highest value;
  at the last step all children end with their parent's value, so the likeliest one wins."""
  expand = int(NO_EOS.sum())
  out = run(decoder_model, decoders.ValueBeam(1, expand), allowed=NO_EOS)
  for row in range(len(PROMPT)):
    answer = []
    for _ in range(T - 1):
      values = {int(t): next_outputs(decoder_model, prompt_of(row) + answer + [int(t)])[1]
                for t in np.flatnonzero(NO_EOS)}
      answer.append(max(values, key=values.get))
    logits, value = next_outputs(decoder_model, prompt_of(row) + answer)
    answer.append(int(np.argmax(np.where(NO_EOS, logits, -np.inf))))
    assert answer_of(out, row) == answer
    np.testing.assert_allclose(out.score[row], value, rtol=1e-4, atol=1e-5)
