"""Verifiable tasks: a seeded prompt generator, an exact verifier and a partial-credit reward.

Built-in tasks register themselves in `TASKS` when this package is imported; `make_task(name,
params)` builds one and `describe_tasks()` lists them with their parameters.
"""

from tokenzero.tasks.base import (TASKS, Task, TaskError, describe_tasks,
                                  make_task, positional_credit, positional_credit_tokens,
                                  register, task_params, task_token_reward)
from tokenzero.tasks.sequences import Reverse, Sort
from tokenzero.tasks.arithmetic import Addition
from tokenzero.tasks.countdown import Countdown
from tokenzero.tasks.words import Anagram
from tokenzero.tasks.brackets import Parentheses
from tokenzero.tasks.prompt_file import (PromptFileTask, check_task_reward, prompt_task_values,
                                         read_prompts)

__all__ = [
    "TASKS", "Task", "TaskError", "describe_tasks", "make_task",
    "positional_credit", "positional_credit_tokens", "register", "task_params",
    "task_token_reward", "check_task_reward",
    "Sort", "Reverse", "Addition", "Countdown", "Anagram", "Parentheses", "PromptFileTask",
    "prompt_task_values", "read_prompts",
]
