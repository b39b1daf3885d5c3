"""`TreeSearch`: a search (`search.run_search`) at every step, then the search's pick is played.
Dimension letters: B batch, T answer budget, S simulations, K candidates per node.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from tokenzero import episode as episode_lib
from tokenzero import search as search_lib
from tokenzero import tree_reuse
from tokenzero import vocab_ops
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
  most S+1 forward tokens per generated token, S with `reuse_tree` (nominal; a simulation that
  ends at a known terminal node runs none, and the measured count is what `Decoded` reports).

  With `search.reuse_tree` one tree serves the whole answer (`tree_reuse`): the played child's
  subtree is the next step's tree, and playing a token the tree expanded runs no forward. With
  `search.select="best_terminal"` and a reward, the answer is the best complete one the tree
  verified over all steps (its reward is the score); the played answer when there is none.
  With `search.allocation="adaptive"` the S simulations per token are a budget over the answer:
  a step stops once its choice is settled and later steps spend what it left (at most 2 S).
  """
  search: SearchConfig = SearchConfig()
  reward: str = "tree"

  @property
  def forward_tokens_per_token(self) -> int:
    simulations = self.search.num_simulations
    if simulations and self.search.reuse_tree:
      return simulations  # the played token's forward ran as a simulation
    return simulations + 1

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
    searching = self.search.num_simulations > 0
    reuse = searching and self.search.reuse_tree
    kept = search_lib.no_kept_tree(config, self.search, state) if reuse else None
    adaptive = self.search.allocation == "adaptive"

    def body(carry, step_key):
      state, kept, last_value, spent, scored, best, bank = carry
      live = ~state.done
      if searching:
        # Adaptive: this step's S plus what earlier, settled steps left unspent.
        allowance = bank + self.search.num_simulations if adaptive else None
        out = search_lib.run_search(params, config, self.search, state, step_key,
                                    reward_fn=reward_fn, allowed=allowed, eos_id=eos_id,
                                    kept=kept, allowance=allowance)
        if adaptive:
          bank = jnp.where(live, allowance - out.simulations, bank)
        slot, value = out.action, out.search_value
        if self.search.algorithm == "puct":
          # action_weights are the visit counts, normalised; argmax breaks ties to the lower
          # slot, and slots are in descending prior.
          slot = jnp.argmax(out.action_weights, axis=1)
        # Counted inside the search: its forwards for a live root, the answers it scored.
        spent, scored = spent + out.forward_tokens, scored + out.reward_calls
        better = out.best_reward > best[0]
        best = (jnp.where(better, out.best_reward, best[0]),
                jnp.where(better[:, None], out.best_answer, best[1]),
                jnp.where(better, out.best_answer_len, best[2]))
        if reuse:
          kept, _ = tree_reuse.reroot(self.search, out, slot)
          state, ran = tree_reuse.advance(params, config, self.search, state, out, slot, eos_id)
          # The forward that plays the pick, billed to the rows that ran it.
          return (state, kept, jnp.where(live, value, last_value), spent + ran, scored,
                  best, bank), None
        token = pick(out.candidates, slot)
      else:
        # prior, ids [B, K]: the candidates the search would choose among.
        prior, ids = vocab_ops.top_k(episode_lib.mask_logits(state.logits, allowed), num_actions)
        if self.search.algorithm == "gumbel":
          prior = prior + self.search.gumbel_scale * jax.random.gumbel(step_key, prior.shape)
        token, value = pick(ids, jnp.argmax(prior, axis=1)), state.value
      last_value = jnp.where(live, value, last_value)
      state = episode_lib.step(params, config, state, token.astype(jnp.int32), eos_id)
      # The forward that plays the pick, billed to live rows only (as every decoder bills).
      return (state, kept, last_value, spent + live, scored, best, bank), None

    zero = jnp.zeros((batch,), jnp.int32)
    no_best = (jnp.full((batch,), -jnp.inf, jnp.float32), state.completion, zero)
    (state, _, last_value, spent, scored, best, _), _ = jax.lax.scan(
        body, (state, kept, jnp.zeros((batch,), jnp.float32), zero, zero, no_best, zero),
        jax.random.split(rng, max_new_tokens))
    if self.search.select == "best_terminal" and reward_fn is not None:
      # The best answer the tree verified, as best-of-n returns its best sample.
      found = jnp.isfinite(best[0])
      return Decoded(jnp.where(found[:, None], best[1], state.completion),
                     jnp.where(found, best[2], state.num_generated),
                     jnp.where(found, best[0], last_value), spent, scored)
    return Decoded(state.completion, state.num_generated, last_value, spent, scored)
