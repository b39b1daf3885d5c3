"""Forwards a search runs per row, today's engine (mctx's policy, tests/search_reference.py) vs
ours, on the tests' tiny sort model (random weights): from the answer's start and one token
before its end, S=32, K=6, B=32. Run from the repository root:
`PYTHONPATH=. python benchmarks/engine_forward_counts.py`.
"""
import sys; sys.path.insert(0, "tests")
import jax, jax.numpy as jnp, numpy as np
jax.config.update("jax_default_matmul_precision", "highest")
import search_reference
from tokenzero import episode as episode_lib, model as model_lib, prompts, search as search_lib
from tokenzero.config import ModelConfig, SearchConfig
from tokenzero.tasks import Sort
from tokenzero.tokenizer import answer_mask
task = Sort(length=3); tok = task.tokenizer
config = ModelConfig(vocab_size=tok.vocab_size, num_layers=2, num_heads=2, d_model=16,
                     context=task.prompt_len + task.max_new_tokens)
params = model_lib.init_params(config, jax.random.key(0))
b = prompts.encode_batch(tok, task.sample(np.random.default_rng(0), 32), task.prompt_len)
allowed = jnp.asarray(answer_mask(tok, tok.vocab_size))
for played in (0, 3):
  for module in (search_reference, search_lib):
    sc = SearchConfig(num_simulations=32, top_k=6)
    @jax.jit
    def f(key):
      s = episode_lib.start(params, config, b.tokens, b.lengths, task.max_new_tokens)
      for _ in range(played):
        s = episode_lib.step(params, config, s, jnp.full((32,), 4), tok.eos_id)
      return module.run_search(params, config, sc, s, key, reward_fn=task.jax_reward(),
                               allowed=allowed, eos_id=tok.eos_id)
    out = f(jax.random.key(0))
    print(f"tokens played {played} {module.__name__}: forward_tokens/row mean "
          f"{float(np.mean(out.forward_tokens)):.2f} (S=32), reward_calls/row "
          f"{float(np.mean(out.reward_calls)):.2f}")
