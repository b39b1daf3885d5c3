"""Decoders against hand-computed answers on a tiny model, their compute counts, and the eval
harness's JSON. Every decoder runs under `decoding.decode` (jitted).

References recompute with the full forward (no KV cache) in plain Python loops.
"""

import functools
import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenzero import cli, decoding, harness, model
from tokenzero import config as config_lib
from tokenzero import train as train_lib
from tokenzero.config import ModelConfig, SearchConfig

VOCAB, PAD, SEP, EOS = 8, 0, 1, 2
PROMPT = np.array([[3, 4, SEP, PAD], [5, 6, 7, SEP]], np.int32)  # [B, P]
PROMPT_LEN = np.array([3, 4], np.int32)
T = 3  # answer budget of most tests


@pytest.fixture(scope="module")
def tiny():
  config = ModelConfig(vocab_size=VOCAB, num_layers=1, num_heads=2, d_model=16, context=8)
  params = jax.jit(model.init_params, static_argnums=0)(config, jax.random.key(0))
  # Sharper than the init (so near-ties are rare) and a value head that is not all zeros.
  params = jax.tree.map(lambda x: x * 8 if x.ndim == 2 else x, params)
  head = params["value_head"]
  params["value_head"] = dict(head, kernel=jax.random.normal(jax.random.key(1),
                                                             head["kernel"].shape))
  return params, config


ALLOWED = np.array([t not in (PAD, SEP) for t in range(VOCAB)])  # EOS may end an answer
NO_EOS = np.array([t not in (PAD, SEP, EOS) for t in range(VOCAB)])  # every answer is T long


def run(tiny, decoder, *, allowed=ALLOWED, max_new_tokens=T, reward_fn=None, seed=0):
  params, config = tiny
  out = decoding.decode(params, jnp.asarray(PROMPT), jnp.asarray(PROMPT_LEN),
                        jax.random.key(seed), jnp.asarray(allowed), decoder=decoder,
                        config=config, max_new_tokens=max_new_tokens, eos_id=EOS,
                        reward_fn=reward_fn)
  return jax.tree.map(np.asarray, out)


@functools.partial(jax.jit, static_argnames="config")
def _full_forward(params, tokens, *, config):
  return model.forward(params, config, tokens)


def next_outputs(tiny, seq):
  """Full-forward (no cache) logits [V] and value after the token list `seq`."""
  params, config = tiny
  # Padded to the context so that one compiled forward serves every length; causal attention
  # keeps the padding out of position len(seq) - 1.
  tokens = np.zeros((1, config.context), np.int32)
  tokens[0, :len(seq)] = seq
  out = _full_forward(params, jnp.asarray(tokens), config=config)
  return (np.asarray(out.logits[0, len(seq) - 1], np.float64),
          float(out.value[0, len(seq) - 1]))


def log_softmax(logits, allowed):
  """The model's log-probabilities, forbidden tokens then ruled out (transformers' order)."""
  logprobs = logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()
  return np.where(allowed, logprobs, -np.inf)


def prompt_of(row):
  return [int(t) for t in PROMPT[row, :PROMPT_LEN[row]]]


def answer_of(out, row):
  return [int(t) for t in out.completion[row, :out.completion_len[row]]]


def first_token_reward(target):
  """Reward 1 when the answer starts with target[b]."""
  target = jnp.asarray(target)

  def reward(prompt, prompt_len, completion, completion_len):
    del prompt, prompt_len, completion_len
    return (completion[:, 0] == target).astype(jnp.float32)

  return reward


def digit_sum_reward(prompt, prompt_len, completion, completion_len):
  """A reward that depends on the whole answer (and differs between samples)."""
  del prompt, prompt_len
  steps = jnp.arange(completion.shape[1])[None, :]
  return jnp.sum(jnp.where(steps < completion_len[:, None], completion, 0), 1) / 20.0


# --- next-token rules ---------------------------------------------------------------------------

PROBS = np.array([0.05, 0.5, 0.1, 0.2, 0.15])


@pytest.mark.parametrize("top_p, nucleus", [
    (0.45, {1}), (0.65, {1, 3}), (0.8, {1, 3, 4}), (0.9, {1, 2, 3, 4}), (0.99, {0, 1, 2, 3, 4})])
def test_top_p_keeps_exactly_the_nucleus(top_p, nucleus):
  logits = jnp.log(jnp.asarray([PROBS, PROBS[::-1]], jnp.float32))
  kept = jax.jit(decoding.top_p_logits, static_argnums=1)(logits, top_p)
  assert set(np.flatnonzero(np.isfinite(kept[0]))) == nucleus
  assert set(np.flatnonzero(np.isfinite(kept[1]))) == {4 - i for i in nucleus}
  np.testing.assert_array_equal(np.asarray(kept)[np.isfinite(kept)],
                                np.asarray(logits)[np.isfinite(kept)])


@pytest.mark.parametrize("k, kept", [(1, {1}), (3, {1, 3, 4}), (5, {0, 1, 2, 3, 4})])
def test_top_k_keeps_exactly_k(k, kept):
  logits = jnp.log(jnp.asarray([PROBS], jnp.float32))
  out = jax.jit(decoding.top_k_logits, static_argnums=1)(logits, k)
  assert set(np.flatnonzero(np.isfinite(out[0]))) == kept
  # Ties at the boundary still keep exactly k (the lower ids).
  tied = decoding.top_k_logits(jnp.asarray([[1.0, 2.0, 1.0, 1.0]]), 2)
  assert set(np.flatnonzero(np.isfinite(tied[0]))) == {0, 1}


def test_sampling_draws_from_the_renormalised_nucleus():
  logits = jnp.log(jnp.broadcast_to(jnp.asarray(PROBS, jnp.float32), (20000, 5)))
  draws = jax.jit(decoding.Sample(top_p=0.8).get_next_tokens)(logits, jax.random.key(0))
  counts = np.bincount(np.asarray(draws), minlength=5) / len(draws)
  expected = np.where(np.isin(np.arange(5), [1, 3, 4]), PROBS, 0.0)
  np.testing.assert_allclose(counts, expected / expected.sum(), atol=0.015)
  assert counts[0] == counts[2] == 0.0
  top1 = jax.jit(decoding.Sample(top_k=1).get_next_tokens)(logits[:8], jax.random.key(1))
  np.testing.assert_array_equal(top1, 1)


# --- decoders -----------------------------------------------------------------------------------


def test_greedy_is_the_argmax_path_of_the_full_forward(tiny):
  out = run(tiny, decoding.Greedy())
  for row in range(len(PROMPT)):
    seq, want = prompt_of(row), []
    for _ in range(T):
      logits, _ = next_outputs(tiny, seq + want)
      want.append(int(np.argmax(np.where(ALLOWED, logits, -np.inf))))
      if want[-1] == EOS:
        break
    assert answer_of(out, row) == want
    assert out.forward_tokens[row] == len(want)
    assert np.all(out.completion[row, len(want):] == PAD)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_as_wide_as_the_vocab_finds_the_best_pair(tiny, length_penalty):
  """Two steps, EOS allowed: the best of [EOS] and every [a, b] by summed log-probability over
  length ** length_penalty, found by brute force."""
  out = run(tiny, decoding.Beam(VOCAB, length_penalty=length_penalty), max_new_tokens=2)
  for row in range(len(PROMPT)):
    seq = prompt_of(row)
    first = log_softmax(next_outputs(tiny, seq)[0], ALLOWED)
    scored = {(EOS,): first[EOS]}
    for a in np.flatnonzero(ALLOWED):
      if a != EOS:
        second = log_softmax(next_outputs(tiny, seq + [int(a)])[0], ALLOWED)
        for b in np.flatnonzero(ALLOWED):
          scored[(int(a), int(b))] = (first[a] + second[b]) / 2 ** length_penalty
    best = max(scored, key=scored.get)
    assert tuple(answer_of(out, row)) == best
    np.testing.assert_allclose(out.score[row], scored[best], rtol=1e-4)


def test_beam_without_eos_is_textbook_beam_search(tiny):
  """Keep the W best continuations by summed log-probability at every step; return the best."""
  width = 3
  out = run(tiny, decoding.Beam(width), allowed=NO_EOS)
  for row in range(len(PROMPT)):
    beams = [([], 0.0)]
    for _ in range(T):
      options = []
      for answer, total in beams:
        logprobs = log_softmax(next_outputs(tiny, prompt_of(row) + answer)[0], NO_EOS)
        options += [(answer + [int(t)], total + logprobs[t]) for t in np.flatnonzero(NO_EOS)]
      beams = sorted(options, key=lambda option: -option[1])[:width]
    assert answer_of(out, row) == beams[0][0]
    np.testing.assert_allclose(out.score[row], beams[0][1] / T, rtol=1e-4)


def test_value_beam_follows_the_value_head(tiny):
  """One beam expanding every allowed token: each step keeps the child with the highest value;
  at the last step all children end with their parent's value, so the likeliest one wins."""
  expand = int(NO_EOS.sum())
  out = run(tiny, decoding.ValueBeam(1, expand), allowed=NO_EOS)
  for row in range(len(PROMPT)):
    answer = []
    for _ in range(T - 1):
      values = {int(t): next_outputs(tiny, prompt_of(row) + answer + [int(t)])[1]
                for t in np.flatnonzero(NO_EOS)}
      answer.append(max(values, key=values.get))
    logits, value = next_outputs(tiny, prompt_of(row) + answer)
    answer.append(int(np.argmax(np.where(NO_EOS, logits, -np.inf))))
    assert answer_of(out, row) == answer
    np.testing.assert_allclose(out.score[row], value, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def samples(tiny):
  """The n samples that BestOfN(n) and MajorityVote(n) draw with key 0 (EOS forbidden)."""
  params, config = tiny
  n = 4
  rollout = jax.jit(decoding._sample_n, static_argnames=(
      "config", "max_new_tokens", "eos_id", "sampler", "n"))(
          params, jnp.asarray(PROMPT), jnp.asarray(PROMPT_LEN), jax.random.key(0),
          jnp.asarray(NO_EOS), config=config, max_new_tokens=T, eos_id=EOS,
          sampler=decoding.Sample(), n=n)
  completion = np.asarray(rollout.episode.completion).reshape(len(PROMPT), n, T)
  reward = np.asarray(digit_sum_reward(None, None, rollout.episode.completion,
                                       rollout.episode.num_generated)).reshape(-1, n)
  loglik = np.asarray(rollout.logprobs.sum(-1)).reshape(-1, n)
  return n, completion, reward, loglik


def test_best_of_n_keeps_the_best_sample_by_reward(tiny, samples):
  n, completion, reward, _ = samples
  out = run(tiny, decoding.BestOfN(n), allowed=NO_EOS, reward_fn=digit_sum_reward)
  for row in range(len(PROMPT)):
    assert reward[row].max() > reward[row].min()  # the test means something
    np.testing.assert_array_equal(out.completion[row], completion[row, reward[row].argmax()])
    np.testing.assert_allclose(out.score[row], reward[row].max())


def test_best_of_n_by_value_keeps_the_best_last_decision_value(tiny, samples):
  n, completion, _, _ = samples
  out = run(tiny, decoding.BestOfN(n, score="value"), allowed=NO_EOS)
  for row in range(len(PROMPT)):
    values = [next_outputs(tiny, prompt_of(row) + list(map(int, c[:-1])))[1]
              for c in completion[row]]
    np.testing.assert_array_equal(out.completion[row], completion[row, int(np.argmax(values))])
    np.testing.assert_allclose(out.score[row], max(values), rtol=1e-4, atol=1e-5)


def test_majority_vote_returns_the_most_common_answer(tiny, samples):
  n, completion, _, loglik = samples
  out = run(tiny, decoding.MajorityVote(n), allowed=NO_EOS)
  for row in range(len(PROMPT)):
    answers = [tuple(c) for c in completion[row]]
    votes = [answers.count(a) for a in answers]
    tied = [i for i in range(n) if votes[i] == max(votes)]
    want = max(tied, key=lambda i: loglik[row, i])
    assert tuple(out.completion[row]) == answers[want]
    np.testing.assert_allclose(out.score[row], max(votes) / n)
  # All samples greedy: one answer, all votes.
  same = run(tiny, decoding.MajorityVote(n, decoding.Sample(temperature=0.0)), allowed=NO_EOS)
  np.testing.assert_array_equal(same.score, 1.0)
  np.testing.assert_array_equal(same.completion, run(tiny, decoding.Greedy(),
                                                     allowed=NO_EOS).completion)


def test_puct_search_without_simulations_is_greedy(tiny):
  search = SearchConfig(algorithm="puct", num_simulations=0, top_k=VOCAB)
  out = run(tiny, decoding.TreeSearch(search), reward_fn=first_token_reward([0, 0]))
  np.testing.assert_array_equal(out.completion, run(tiny, decoding.Greedy()).completion)
  np.testing.assert_array_equal(out.forward_tokens, out.completion_len)


def test_gumbel_search_finds_a_planted_token(tiny):
  """One-token answers; the reward is 1 only for each row's least likely allowed token."""
  params, config = tiny
  logits = np.stack([next_outputs(tiny, prompt_of(row))[0] for row in range(len(PROMPT))])
  target = np.argmin(np.where(ALLOWED, logits, np.inf), axis=1)
  search = SearchConfig(algorithm="gumbel", num_simulations=int(ALLOWED.sum()), top_k=VOCAB)
  out = run(tiny, decoding.TreeSearch(search), max_new_tokens=1,
            reward_fn=first_token_reward(target))
  np.testing.assert_array_equal(out.completion[:, 0], target)
  np.testing.assert_array_equal(out.forward_tokens, search.num_simulations + 1)
  greedy = run(tiny, decoding.Greedy(), max_new_tokens=1)
  assert np.all(greedy.completion[:, 0] != target)


# --- compute accounting -------------------------------------------------------------------------


@pytest.mark.parametrize("decoder, per_token", [
    (decoding.Greedy(), 1),
    (decoding.Sample(), 1),
    (decoding.BestOfN(4), 4),
    (decoding.MajorityVote(4), 4),
    (decoding.Beam(3), 3),
    (decoding.ValueBeam(1, 5), 5),
], ids=lambda x: type(x).__name__ if not isinstance(x, int) else str(x))
def test_forward_tokens_per_token(tiny, decoder, per_token):
  """Without EOS every answer is T tokens: a decoder spends exactly its budget per token."""
  out = run(tiny, decoder, allowed=NO_EOS, reward_fn=digit_sum_reward)
  assert decoder.forward_tokens_per_token == per_token
  np.testing.assert_array_equal(out.completion_len, T)
  np.testing.assert_array_equal(out.forward_tokens, per_token * T)


def test_steps_after_the_end_are_not_charged(tiny):
  lengths = []
  for seed in range(5):
    out = run(tiny, decoding.Sample(), seed=seed)
    np.testing.assert_array_equal(out.forward_tokens, out.completion_len)
    lengths.extend(out.completion_len)
  assert min(lengths) < T  # some answer did end early


@pytest.mark.parametrize("method, budget, per_token", [
    ("best_of_n", 16, 16), ("majority", 8, 8), ("beam", 4, 4), ("beam_value", 16, 16),
    ("beam_value", 8, 8), ("mcts", 16, 16), ("mcts_puct", 4, 4), ("greedy", 64, 1),
])
def test_budget_means_forward_tokens_per_token(method, budget, per_token):
  decoder = harness.make_decoder(method, budget)
  assert decoder.forward_tokens_per_token == per_token
  if method.startswith("mcts"):
    assert decoder.search.num_simulations == budget - 1
    assert decoder.search.algorithm == ("gumbel" if method == "mcts" else "puct")


# --- evaluation harness -------------------------------------------------------------------------


def test_eval_cli_writes_json_plot_and_table(tmp_path, capsys):
  run_dir = tmp_path / "run"
  config = config_lib.resolve(overrides=[
      "iterations=0", "task.params.length=2", "model.d_model=16", "model.num_heads=2",
      "model.num_layers=1", "eval.num_prompts=5"])
  train_lib.train(config, run_dir, progress=False, log=lambda s: None)  # the initial network
  argv = ["eval", str(run_dir), "--methods", "greedy,beam", "--budgets", "2", "--batch-size",
          "4", "--no-progress"]
  assert cli.main(argv) == 0
  stdout = capsys.readouterr().out
  assert "| beam |" in stdout and "eval.json" in stdout
  data = json.loads((run_dir / "eval.json").read_text())
  assert data["schema"] == harness.SCHEMA and data["meta"]["task"] == "sort"
  assert [(r["method"], r["budget"]) for r in data["rows"]] == [("greedy", 1), ("beam", 2)]
  required = {"method": str, "budget": int, "mean_reward": float, "success_rate": float,
              "forward_tokens_per_token": float, "wall_s": float, "stderr": float}
  for row in data["rows"]:
    assert set(row) == set(harness.ROW_FIELDS)
    for key, kind in required.items():
      assert isinstance(row[key], kind), key
    assert 0.0 <= row["mean_reward"] <= 1.0 and 0.0 <= row["success_rate"] <= 1.0
    assert row["num_prompts"] == 5 and row["wall_s"] >= 0 and math.isfinite(row["stderr"])
  assert data["rows"][0]["forward_tokens_per_token"] == 1.0
  rows, meta = harness.load_json(run_dir / "eval.json")
  assert [r.method for r in rows] == ["greedy", "beam"] and meta["num_prompts"] == 5
  assert (run_dir / "eval.png").stat().st_size > 1000
  assert harness.markdown_table(rows).count("\n") == 4
  assert cli.main(["eval", str(run_dir), "--methods", "greedy,nosuch"]) == 2
  assert "unknown method" in capsys.readouterr().err


def test_parse_methods_and_budgets():
  assert harness.parse_methods("greedy, mcts") == ["greedy", "mcts"]
  assert harness.parse_budgets("16,1,4,4") == [1, 4, 16]
  for bad in ("greedy,nope", ""):
    with pytest.raises(ValueError, match="unknown method"):
      harness.parse_methods(bad)
  with pytest.raises(ValueError):
    harness.parse_budgets("0,4")
  assert list(itertools.chain(harness.FIXED_COST_METHODS,
                              harness.BUDGETED_METHODS)) == list(harness.METHODS)
