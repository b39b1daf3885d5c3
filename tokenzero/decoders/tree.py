"""`TreeSearch`: a search (`search.run_search`) at every step, then the search's pick is played.
Dimension letters: B batch, T answer budget, S simulations, K candidates per node.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from tokenzero import episode as episode_lib
from tokenzero import search as search_lib
from tokenzero.config import SearchConfig
from tokenzero.decoders.base import Decoded, need_reward, pick

REWARDS = ("tree", "value")  # what a finished answer is worth inside the tree


@dataclasses.dataclass(frozen=True)
class TreeSearch:
  """Searches at every step (`search.run_search`, Gumbel or PUCT) and plays the search's pick.

  `reward="tree"` calls the reward (a verifier) at every answer the tree finishes; "value" never
  calls it: an answer is worth the value of the state its last token was chosen in (as
  `ValueBeam` scores a finished beam). Gumbel plays its chosen action (deterministic when
  `gumbel_scale` is 0); PUCT plays its most visited child, ties to the likelier one (mctx would
  sample in proportion to the visits: exploration that self-play wants and an answer does not).
  With zero simulations it plays the best candidate by prior (+ Gumbel noise when
  `gumbel_scale` > 0). `score` is the value the search backed up at its last decision. Costs at
  most S+1 forward tokens per generated token (nominal; a simulation that ends at a known
  terminal node runs none, and the measured count is what `Decoded` reports).
  """
  search: SearchConfig = SearchConfig()
  reward: str = "tree"

  @property
  def forward_tokens_per_token(self) -> int:
    return self.search.num_simulations + 1

  def decode(self, params, prompt, prompt_len, rng, allowed, *, config, max_new_tokens, eos_id,
             reward_fn=None) -> Decoded:
    if self.reward not in REWARDS:
      raise ValueError(f"TreeSearch.reward must be one of {REWARDS}, got {self.reward!r}")
    if self.reward == "value":
      reward_fn = None  # value-only: the tree never sees the reward.
    else:
      need_reward(reward_fn, "tree search")
    state = episode_lib.start(params, config, prompt, prompt_len, max_new_tokens)
    batch = prompt.shape[0]
    num_actions = search_lib.num_candidates(self.search, config.vocab_size)

    def body(carry, step_key):
      state, last_value, spent, scored = carry
      if self.search.num_simulations > 0:
        out = search_lib.run_search(params, config, self.search, state, step_key,
                                    reward_fn=reward_fn, allowed=allowed, eos_id=eos_id)
        token, value = out.token, out.search_value
        if self.search.algorithm == "puct":
          # action_weights are the visit counts, normalised; argmax breaks ties to the lower
          # slot, and slots are in descending prior.
          token = pick(out.candidates, jnp.argmax(out.action_weights, axis=1))
        # Counted inside the search: its forwards for a live root, the answers it scored.
        spent, scored = spent + out.forward_tokens, scored + out.reward_calls
      else:
        # prior, ids [B, K]: the candidates the search would choose among.
        prior, ids = jax.lax.top_k(episode_lib.mask_logits(state.logits, allowed), num_actions)
        if self.search.algorithm == "gumbel":
          prior = prior + self.search.gumbel_scale * jax.random.gumbel(step_key, prior.shape)
        token, value = pick(ids, jnp.argmax(prior, axis=1)), state.value
      live = ~state.done
      last_value = jnp.where(live, value, last_value)
      state = episode_lib.step(params, config, state, token.astype(jnp.int32), eos_id)
      # The forward that plays the pick, billed to live rows only (as every decoder bills).
      return (state, last_value, spent + live, scored), None

    zero = jnp.zeros((batch,), jnp.int32)
    (state, last_value, spent, scored), _ = jax.lax.scan(
        body, (state, jnp.zeros((batch,), jnp.float32), zero, zero),
        jax.random.split(rng, max_new_tokens))
    return Decoded(state.completion, state.num_generated, last_value, spent, scored)
