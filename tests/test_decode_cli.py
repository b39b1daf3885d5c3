"""`tokenzero decode` on an HF model directory: greedy equals transformers' generate, per-token
logprobs equal transformers' log-softmax, and the search methods run."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from tokenzero import cli  # noqa: E402

torch.set_num_threads(1)
WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "away", "and", "then"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
  """A tiny Llama with a word-level tokenizer.json that adds BOS, as Llama's does."""
  from tokenizers import models, pre_tokenizers, processors
  path = tmp_path_factory.mktemp("llama")
  vocab = {"<s>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
  tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
  tok.add_special_tokens(["<s>", "</s>", "<unk>"])
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps({
      "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
      "unk_token": "<unk>"}))
  config = transformers.LlamaConfig(
      vocab_size=len(vocab), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32, bos_token_id=0,
      eos_token_id=1)
  hf_model = transformers.LlamaForCausalLM(config).eval()
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for name, param in hf_model.named_parameters():
      noise = torch.randn(param.shape, generator=gen)
      param.copy_(1.0 + 0.1 * noise if "norm" in name else 0.5 * noise)
  hf_model.save_pretrained(path)
  return path, hf_model


def _decode(capsys, *argv):
  code = cli.main(["decode", *map(str, argv)])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_greedy_json_matches_transformers(model_dir, capsys):
  path, hf_model = model_dir
  code, out, err = _decode(capsys, path, "--prompt", "the cat sat", "--max-new-tokens", 6,
                           "--json")
  assert code == 0, err
  result = json.loads(out)
  reference_tok = transformers.AutoTokenizer.from_pretrained(path)
  prompt_ids = reference_tok("the cat sat")["input_ids"]
  assert result["prompt_token_ids"] == prompt_ids and prompt_ids[0] == 0  # BOS added
  with torch.no_grad():
    generated = hf_model.generate(torch.tensor([prompt_ids]), do_sample=False, max_new_tokens=6,
                                  eos_token_id=1, pad_token_id=1,
                                  attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long))
  expected = generated[0, len(prompt_ids):].tolist()
  expected = expected[:expected.index(1) + 1] if 1 in expected else expected
  assert result["token_ids"] == expected
  with torch.no_grad():
    logits = hf_model(torch.tensor([prompt_ids + expected])).logits[0]
  logprobs = torch.log_softmax(logits, -1)[len(prompt_ids) - 1:-1]
  np.testing.assert_allclose(result["logprobs"],
                             logprobs[torch.arange(len(expected)), expected].numpy(), atol=1e-4)
  assert result["text"] == reference_tok.decode(
      [t for t in expected if t != 1], skip_special_tokens=True)


@pytest.mark.parametrize("method", ["beam", "mcts", "mcts_value", "best_of_n_value"])
def test_budgeted_methods_run(model_dir, tmp_path, capsys, method):
  path, _ = model_dir
  reward = tmp_path / "reward.py"
  reward.write_text("def score(prompt, completion):\n  return float('cat' in completion)\n")
  # mcts calls a reward (an HF model has none); the value-only methods run without one.
  given = ["--reward", f"{reward}:score"] if method == "mcts" else []
  code, out, err = _decode(capsys, path, "--method", method, "--budget", 3, "--token-ids",
                           "0,3,4", "--max-new-tokens", 3, "--json", *given)
  assert code == 0, err
  result = json.loads(out)
  length = len(result["token_ids"])
  assert 1 <= length <= 3 and len(result["logprobs"]) == length
  if method == "beam":  # 3 per step while the prompt's beams may still change: the answer's
    # steps, and perhaps more while a running beam could still beat a finished one.
    assert result["forward_tokens"] in range(3 * length, 3 * 3 + 1, 3)
  else:
    assert result["forward_tokens"] == 3 * length


@pytest.mark.parametrize("method", ["best_of_n", "mcts", "mcts_puct"])
def test_methods_that_need_a_reward_refuse_to_run_without_one(model_dir, capsys, method):
  path, _ = model_dir
  code, out, err = _decode(capsys, path, "--method", method, "--token-ids", "0,3,4",
                           "--max-new-tokens", 3)
  assert code == 2 and out == ""
  assert err.count("\n") == 1 and f"method '{method}'" in err and "--reward" in err


def test_user_errors_are_one_line(model_dir, tmp_path, capsys):
  path, _ = model_dir
  code, _, err = _decode(capsys, path, "--max-new-tokens", 3)
  assert code == 2 and "exactly one of --prompt" in err
  code, _, err = _decode(capsys, tmp_path, "--prompt", "the")
  assert code == 2 and "neither an HF model directory" in err
  code, _, err = _decode(capsys, path, "--token-ids", "0,99", "--max-new-tokens", 3)
  assert code == 2 and "token ids" in err
  code, _, err = _decode(capsys, path, "--prompt", "the", "--method", "nope")
  assert code == 2 and "unknown method" in err


def test_prompts_file_decodes_a_batch_and_reports_the_search(model_dir, tmp_path, capsys):
  """--prompts decodes the file's prompts together (right-padded): greedy gives each the tokens
  it gets alone; a tree method also prints its simulations/s and tree memory."""
  path, _ = model_dir
  prompts = tmp_path / "prompts.txt"
  prompts.write_text("the cat sat\nthe dog\n")
  code, out, err = _decode(capsys, path, "--prompts", prompts, "--max-new-tokens", 4, "--json")
  assert code == 0, err
  batch = [json.loads(line) for line in out.splitlines()]
  for row, text in zip(batch, ["the cat sat", "the dog"]):
    code, alone, err = _decode(capsys, path, "--prompt", text, "--max-new-tokens", 4, "--json")
    assert code == 0, err
    alone = json.loads(alone)
    assert row["token_ids"] == alone["token_ids"]
    np.testing.assert_allclose(row["logprobs"], alone["logprobs"], atol=1e-5)
  reward = tmp_path / "reward.py"
  reward.write_text("def score(prompt, completion):\n  return float('cat' in completion)\n")
  code, out, err = _decode(capsys, path, "--prompts", prompts, "--max-new-tokens", 3,
                           "--method", "mcts", "--budget", 3, "--reward", f"{reward}:score")
  assert code == 0, err
  assert len(out.splitlines()) == 2
  assert "simulations/s" in err and "tree arena 7 nodes x 2 rows" in err
