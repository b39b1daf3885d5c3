"""Supervised warm start, `train --init-from` an HF checkpoint, and the fresh-data anchor.

The HF model is a tiny random-init GPT-2 with a word-level tokenizer.json, saved with
`save_pretrained` into a temp dir (no downloads).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from tokenzero import cli  # noqa: E402
from tokenzero import config as config_lib  # noqa: E402
from tokenzero import demos as demos_lib  # noqa: E402
from tokenzero import hf, inference, learner, sft  # noqa: E402
from tokenzero import run as run_lib  # noqa: E402
from tokenzero.config import ConfigError, OptimConfig  # noqa: E402
from tokenzero.selfplay import Trajectory  # noqa: E402

torch.set_num_threads(1)
WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "and", "then"]
DEMOS = [("the cat", "sat on a mat"), ("a dog", "ran far away"), ("then the dog", "sat")]
EOS = 0


def _write_jsonl(path, pairs):
  path.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in pairs))
  return path


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
  """A tiny GPT-2 whose tokenizer, like GPT-2's, adds no BOS and has no PAD (pads with EOS)."""
  from tokenizers import models, pre_tokenizers
  path = tmp_path_factory.mktemp("gpt2")
  vocab = {"<|endoftext|>": EOS, "<unk>": 1, **{w: i + 2 for i, w in enumerate(WORDS)}}
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.add_special_tokens(["<|endoftext|>", "<unk>"])
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps({
      "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
      "eos_token": "<|endoftext|>", "unk_token": "<unk>"}))
  config = transformers.GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=4,
                                   n_positions=32, bos_token_id=EOS, eos_token_id=EOS)
  torch.manual_seed(0)
  transformers.GPT2LMHeadModel(config).save_pretrained(path)
  return path


@pytest.fixture(scope="module")
def demos_file(tmp_path_factory):
  return _write_jsonl(tmp_path_factory.mktemp("demos") / "demos.jsonl", DEMOS)


def _decode_json(capsys, model, prompt):
  code = cli.main(["decode", str(model), "--prompt", prompt, "--max-new-tokens", "6", "--json"])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  return json.loads(captured.out)


SFT_ARGS = dict(steps=80, learning_rate=1e-2, batch_size=3)  # the same compiled step for both


def test_sft_memorizes_the_demos(gpt2_dir, demos_file, tmp_path, capsys):
  out = tmp_path / "sft"
  code = cli.main(["sft", str(gpt2_dir), "--data", str(demos_file), "--out", str(out),
                   "--steps", str(SFT_ARGS["steps"]), "--lr", str(SFT_ARGS["learning_rate"]),
                   "--batch-size", str(SFT_ARGS["batch_size"]), "--no-progress"])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  assert "NLL per completion token" in captured.out
  # Measured independently of sft's own report: the exported model against the original.
  config, before = hf.load(gpt2_dir)
  _, after = hf.load(out)
  tokenizer = inference.load_policy(out).tokenizer
  batch = demos_lib.encode_demos(tokenizer, demos_lib.read_demos(demos_file),
                                 context=config.context)
  nll_before = demos_lib.mean_nll(before, config, batch)
  nll_after = demos_lib.mean_nll(after, config, batch)
  assert nll_after < 0.05 < 1.0 < nll_before, (nll_before, nll_after)
  result = _decode_json(capsys, out, "the cat")
  assert result["text"] == "sat on a mat" and result["token_ids"][-1] == EOS
  assert _decode_json(capsys, out, "a dog")["text"] == "ran far away"


@pytest.fixture(scope="module")
def init_from_run(gpt2_dir, demos_file, tmp_path_factory):
  """A one-iteration run started from the HF GPT-2, with the demos as its anchor."""
  tmp = tmp_path_factory.mktemp("init_from")
  prompts = tmp / "prompts.txt"
  prompts.write_text("the cat\na dog\nthen the dog\nthe mat\na cat ran\n")
  reward = tmp / "reward.py"
  reward.write_text("def score(prompt, completion):\n"
                    "  return float('sat' in completion.split())\n")
  run = tmp / "run"
  code = cli.main([
      "train", "--init-from", str(gpt2_dir), "--prompts", str(prompts), "--reward",
      f"{reward}:score", "--out", str(run), "--iterations", "1", "--no-progress",
      "selfplay.batch_size=4", "search.num_simulations=2", "eval.num_prompts=2",
      "task.max_new_tokens=4", "optim.steps_per_iteration=2", "optim.warmup_steps=0",
      f"optim.anchor_data={demos_file}", "optim.anchor_weight=1.0",
      "optim.anchor_batch_size=2"])
  assert code == 0
  return run


def test_train_init_from_hf_with_anchor(gpt2_dir, init_from_run):
  run = init_from_run
  saved = json.loads((run / "config.json").read_text())
  assert saved["init_from"] == str(gpt2_dir.resolve())
  assert saved["task"]["params"]["tokenizer_spec"] == f"hf:{gpt2_dir.resolve()}"
  assert saved["model"]["vocab_size"] == len(WORDS) + 2 and saved["model"]["context"] == 32
  rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
  assert [r["iteration"] for r in rows] == [0, 1]
  assert np.isfinite(rows[1]["loss_anchor"]) and np.isfinite(rows[1]["loss_policy"])


def test_sft_of_a_run_dir_writes_a_run_that_loads(gpt2_dir, init_from_run, demos_file, tmp_path):
  # The init-from run started from the checkpoint's weights, and reads back with its tokenizer.
  setup, run_params = run_lib.load_run(init_from_run)
  assert setup.tokenizer.describe() == f"hf:{gpt2_dir.name}"
  _, hf_params = hf.load(gpt2_dir)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), run_params, hf_params)
  assert 0 < max(jax.tree.leaves(moved)) < 1.0
  result = sft.sft(init_from_run, demos_file, out=tmp_path / "out", progress=False, **SFT_ARGS)
  assert result.source == "run" and result.nll_after < 0.1 * result.nll_before
  setup, params = run_lib.load_run(result.out_dir)
  batch = demos_lib.encode_demos(setup.tokenizer, demos_lib.read_demos(demos_file),
                                 context=setup.config.model.context)
  assert demos_lib.mean_nll(params, setup.config.model, batch) == pytest.approx(
      result.nll_after, rel=1e-4)
  assert json.loads((result.out_dir / "config.json").read_text()) == json.loads(
      (init_from_run / "config.json").read_text())
  with pytest.raises(ConfigError, match="already holds"):
    sft.sft(init_from_run, demos_file, out=result.out_dir, steps=1, progress=False)


@pytest.mark.parametrize("override,message", [
    ("task.name=sort", "needs the prompts task"),
    ("model.d_model=8", "leave model.d_model=8 unset"),
])
def test_init_from_rejects_what_it_cannot_honour(gpt2_dir, tmp_path, override, message):
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("the cat\na dog\n")
  reward = tmp_path / "reward.py"
  reward.write_text("def score(prompt, completion):\n  return 0.0\n")
  config = config_lib.resolve(overrides=[
      f"init_from={gpt2_dir}", "task.name=prompts", f"task.params.prompts={prompts}",
      f"task.params.reward={reward}:score", override])
  with pytest.raises(ConfigError, match=message):
    run_lib.build(config)


def test_anchor_loss_is_in_the_learner_and_lowers_demo_nll(sort_task, tiny_config, tiny_params):
  tokenizer = sort_task.tokenizer
  anchor = demos_lib.encode_demos(
      tokenizer, [demos_lib.Demo("312", "123"), demos_lib.Demo("970", "079")],
      context=tiny_config.context)
  anchor = demos_lib.DemoBatch(*map(jnp.asarray, anchor))
  rng = np.random.default_rng(0)
  batch, prompt_len, steps, k = 4, sort_task.prompt_len, sort_task.max_new_tokens, 3
  tokens = rng.integers(3, tokenizer.vocab_size, (batch, prompt_len + steps))
  traj = Trajectory(
      prompt=jnp.asarray(tokens[:, :prompt_len]), prompt_len=jnp.full((batch,), prompt_len),
      tokens=jnp.asarray(tokens), completion=jnp.asarray(tokens[:, prompt_len:]),
      completion_len=jnp.full((batch,), steps),
      policy_ids=jnp.asarray(rng.integers(3, tokenizer.vocab_size, (batch, steps, k))),
      policy_weights=jnp.full((batch, steps, k), 1.0 / k), step_mask=jnp.ones((batch, steps), bool),
      reward=jnp.asarray(rng.uniform(size=batch), jnp.float32),
      search_value=jnp.zeros((batch, steps)), root_value=jnp.zeros((batch, steps)),
      tree_kept=jnp.zeros((batch, steps)), root_prior=jnp.full((batch, steps, k), 1.0 / k),
      terminal_reached=jnp.zeros((batch, steps), bool),
      terminal_on_pick=jnp.zeros((batch, steps), bool),
      explored=jnp.zeros((batch, steps), bool), off_policy=jnp.zeros((batch, steps), bool))
  nll_start = float(demos_lib.lm_loss(tiny_params, tiny_config, anchor))
  optimizer = learner.make_optimizer(OptimConfig(learning_rate=1e-2, warmup_steps=0), 10)

  def run(weight):  # one compile: the weight is traced.
    params = jax.tree.map(jnp.array, tiny_params)  # train_steps donates its params.
    params, _, metrics = learner.train_steps(
        params, optimizer.init(params), traj, config=tiny_config, optimizer=optimizer,
        num_steps=10, weights=learner.LossWeights(value=1.0, anchor=weight), anchor=anchor)
    return params, metrics

  plain, plain_metrics = run(0.0)
  anchored, metrics = run(5.0)
  # The term is in the loss, at its weight, measured before the first update.
  assert float(metrics.loss_anchor[0]) == pytest.approx(nll_start, rel=1e-5)
  assert float(metrics.loss[0]) == pytest.approx(
      float(metrics.loss_policy[0] + metrics.loss_value[0] + 5.0 * metrics.loss_anchor[0]),
      rel=1e-5)
  assert float(plain_metrics.loss[0]) == pytest.approx(
      float(plain_metrics.loss_policy[0] + plain_metrics.loss_value[0]), rel=1e-5)
  nll_plain = float(demos_lib.lm_loss(plain, tiny_config, anchor))
  nll_anchored = float(demos_lib.lm_loss(anchored, tiny_config, anchor))
  assert nll_anchored < 0.5 * nll_start and nll_anchored < nll_plain, (
      nll_start, nll_plain, nll_anchored)
