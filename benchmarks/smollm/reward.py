"""A reward on real language for searching SmolLM2-135M-Instruct: keywords found in the answer.

Each prompt of `prompts.jsonl` (beside this file) lists the words a good answer names
("keywords"). The reward of a completion is the fraction of the words it needs that it contains,
matched as whole words (or their plurals), case-insensitive, plus a small bonus for an answer that
finishes its sentence within the budget (a text reward does not see the EOS, so: one that ends
in ".", "!" or "?"):

    reward = min(1, found / needed) + 0.1 * [the answer ends in sentence punctuation]

where `needed` is the number of keywords, at most 3 (any 3 of the 8 ocean animals will do; both
"autumn" and "fall" are listed, so 4 seasons out of 5 words count as all of them). A prompt that
is not in the file gets 0. Prompts are matched by their question appearing in the prompt text the
search hands over, which with `--chat` is the whole chat-templated prompt.

    tokenzero decode SmolLM2-135M-Instruct.Q4_1.gguf --chat --prompts prompts.jsonl \\
        --method mcts --budget 16 --max-new-tokens 32 --reward reward.py:keyword_reward

Check it with `tokenzero check-reward benchmarks/smollm/reward.py:keyword_reward
--prompts benchmarks/smollm/prompts.jsonl`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

PROMPTS = Path(__file__).resolve().parent / "prompts.jsonl"
MAX_NEEDED = 3
ENDED_BONUS = 0.1


def _keywords() -> dict[str, tuple[str, ...]]:
  rows = [json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip()]
  return {row["prompt"]: tuple(word.lower() for word in row["keywords"]) for row in rows}


KEYWORDS = _keywords()


def keywords_for(prompt: str) -> tuple[str, ...]:
  for question, words in KEYWORDS.items():
    if question in prompt:
      return words
  return ()


def keyword_fraction(prompt: str, completion: str) -> float:
  """Fraction of the needed keywords the completion names, in [0, 1]."""
  words = keywords_for(prompt)
  if not words:
    return 0.0
  needed = min(MAX_NEEDED, len(words))
  if "autumn" in words:  # the seasons: "autumn" and "fall" are one season.
    needed = 4
  said = set(re.findall(r"[a-z]+", completion.lower()))
  found = {word for word in words if said & {word, word + "s", word + "es"}}  # plurals count
  if {"autumn", "fall"} <= found:
    found.discard("fall")
  return min(1.0, len(found) / needed)


def keyword_reward(prompt: str, completion: str) -> float:
  """The reward the search maximises, in [0, 1.1] (see the module docstring)."""
  ended = completion.rstrip().endswith((".", "!", "?"))
  return keyword_fraction(prompt, completion) + (ENDED_BONUS if ended else 0.0)
