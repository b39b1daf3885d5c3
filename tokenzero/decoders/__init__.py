"""Decoders, from one next-token rule to tree search, behind one interface that counts compute.

- `sampling`: the next-token rules (`Greedy`, `Sample` with temperature, top-k, top-p), each a
  tiny frozen dataclass with `get_next_tokens(logits, rng)`, and `generate`, which plays one.
- `best_of_n`: `BestOfN` and `MajorityVote` over C samples per prompt.
- `beam`: `Beam`, likelihood beam search as transformers does it.
- `value_beam`: `ValueBeam`, C beams x G expansions ranked by the value head.
- `tree`: `TreeSearch`, a search at every step.
- `base`: `Decoded`, the `Decoder` interface, the jitted `decode` and the row surgery they share.
- `registry`: the methods by name and budget (`make_decoder`), for `tokenzero eval` and
  `tokenzero decode`.

Every decoder counts what it runs: the forward token-evaluations (`Decoded.forward_tokens`) and
the completions it hands to the reward (`Decoded.reward_calls`); see `base` for how.
"""

from tokenzero.decoders.base import Decoded, Decoder, decode
from tokenzero.decoders.beam import Beam
from tokenzero.decoders.best_of_n import BestOfN, MajorityVote
from tokenzero.decoders.registry import MethodOptions, make_decoder
from tokenzero.decoders.sampling import (Generation, Greedy, Sample, generate, top_k_logits,
                                         top_p_logits)
from tokenzero.decoders.tree import TreeSearch
from tokenzero.decoders.value_beam import ValueBeam

__all__ = [
    "Beam", "BestOfN", "Decoded", "Decoder", "Generation", "Greedy", "MajorityVote",
    "MethodOptions", "Sample", "TreeSearch", "ValueBeam", "decode", "generate", "make_decoder",
    "top_k_logits", "top_p_logits",
]
