"""A reward for the SmolLM2 training run of benchmarks/smollm_train.py: 1 for an answer that
contains a digit, else 0 (the prompts in digit_prompts.txt all ask for a number).

Check it with `tokenzero check-reward benchmarks/smollm/digit_reward.py:has_digit
--prompts benchmarks/smollm/digit_prompts.txt`.
"""


def has_digit(prompt: str, completion: str) -> float:
  del prompt  # any number will do
  return float(any(ch.isdigit() for ch in completion))
