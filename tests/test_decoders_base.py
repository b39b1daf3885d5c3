"""What every decoder shares: under the jitted `decode`, each spends exactly its budget."""

import numpy as np
import pytest

from decoders_reference import NO_EOS, T, digit_sum_reward, run
from tokenzero import decoders


# --- compute accounting -------------------------------------------------------------------------


@pytest.mark.parametrize("decoder, per_token", [
    (decoders.Greedy(), 1),
    (decoders.Sample(), 1),
    (decoders.BestOfN(4), 4),
    (decoders.MajorityVote(4), 4),
    (decoders.Beam(3), 3),
    (decoders.ValueBeam(1, 5), 5),
], ids=lambda x: type(x).__name__ if not isinstance(x, int) else str(x))
def test_forward_tokens_per_token(decoder_model, decoder, per_token):
  """Without EOS every answer is T tokens: a decoder spends exactly its budget per token."""
  out = run(decoder_model, decoder, allowed=NO_EOS, reward_fn=digit_sum_reward)
  assert decoder.forward_tokens_per_token == per_token
  np.testing.assert_array_equal(out.completion_len, T)
  np.testing.assert_array_equal(out.forward_tokens, per_token * T)
