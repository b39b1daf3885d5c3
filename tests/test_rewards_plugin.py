"""The plug-in API: loading a reward from a file, and every way loading can fail
(tokenzero/rewards/plugin.py)."""

import pytest

from tokenzero import rewards
from tokenzero.rewards import RewardError


def test_load_reward_from_a_file(tmp_path):
  path = tmp_path / "my_rewards.py"
  path.write_text("import tokenzero\n\n"
                  "def plain(prompt, completion):\n  return float(completion == prompt)\n\n"
                  "@tokenzero.batched_reward\n"
                  "def many(prompts, completions):\n  return [0.5] * len(prompts)\n\n"
                  "THRESHOLD = 3\n")
  plain = rewards.load_reward(f"{path}:plain")
  assert plain.form == "text" and plain.name == f"{path}:plain"
  assert plain.fn("ab", "ab") == 1.0
  assert rewards.load_reward(f"{path}:many").form == "batched"
  with pytest.raises(RewardError, match=r"has no function 'missing'; it defines: many, plain"):
    rewards.load_reward(f"{path}:missing")
  with pytest.raises(RewardError, match=r"'THRESHOLD' in reward file .* is a int, not a function"):
    rewards.load_reward(f"{path}:THRESHOLD")
  with pytest.raises(RewardError, match=r"reward file '.*nope.py' does not exist"):
    rewards.load_reward(f"{tmp_path}/nope.py:plain")
  with pytest.raises(RewardError, match="is not of the form path/to/file.py:function"):
    rewards.load_reward(str(path))
  broken = tmp_path / "broken.py"
  broken.write_text("import not_a_module_anywhere\n")
  with pytest.raises(RewardError, match="importing reward file .* raised ModuleNotFoundError"):
    rewards.load_reward(f"{broken}:f")
