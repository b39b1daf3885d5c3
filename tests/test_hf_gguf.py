"""GGUF files load as the model and tokenizer they were converted from, checked against
`transformers`' own GGUF loader and against the dequantized weights saved as safetensors.

Each test file is a tiny random Llama written with the `gguf` package's writer the way
llama.cpp's converter writes one: Q and K rows permuted, norms in F32, matrices in the quant type
under test (every inner dimension a multiple of 32, the quant block), and a byte-level BPE whose
pre-tokenizer is SmolLM's ("smollm": digits one by one, then GPT-2's split).

Tolerance: the reference is the *dequantized* weights, not the float32 originals, so the loaded
params must be bit-identical to them and logits agree to float32 rounding (1e-4, as every HF test
here); no tolerance is widened for the quantization error, which the reference already carries.
"""

import json
import re

import gguf
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers needs it to load a GGUF

import tokenizers  # noqa: E402
from tokenizers import decoders, models, pre_tokenizers, trainers  # noqa: E402

from hf_checkpoints import forward  # noqa: E402
from tokenzero import cli, hf  # noqa: E402
from tokenzero.errors import HFError, HFTokenizerError  # noqa: E402

torch.set_num_threads(1)
ROPE_THETA = 500.0
Q = gguf.GGMLQuantizationType
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # unk/pad, bos, eos (SmolLM's ids)
CHAT_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
                 "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
                 "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
CORPUS = ["the quick brown fox jumps over the lazy dog 12 times", "Hello, world! 2026 is 2026.",
          "tokens and more tokens: 12345 67890 100 200", "  spaces\tand\nnewlines  3.14",
          "ünïcödé ✓ 漢字 911"]
TEXTS = ["the fox jumps 12345 times", "I have 12 apples and 3.14 pies, 2026", "  3.14 and 2026  ", "Hello\n\n  world 007!", "x1y22z333"]
# (quant type of the matrices, tied embeddings): both head layouts, every supported type.
CASES = [("F32", False), ("F16", True), ("Q8_0", True), ("Q4_0", True), ("Q4_1", False)]


def _smollm_pre():
  return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                  pre_tokenizers.ByteLevel(add_prefix_space=False)])


def _train_tokenizer(split_digits):
  """A SmolLM-style byte-level BPE: trained with digits split one by one (as SmolLM's was, so
  no merge joins two digits) or without (digit merges in the vocabulary, which only the
  "smollm" pre-tokenizer keeps from applying); used with the "smollm" pre-tokenizer."""
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = (_smollm_pre() if split_digits
                       else pre_tokenizers.ByteLevel(add_prefix_space=False))
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(CORPUS * 3, trainers.BpeTrainer(
      vocab_size=352, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
  digit_merges = any(m[0].isdigit() and m[1].isdigit() for m in _vocab_merges(tok)[1])
  assert digit_merges != split_digits
  tok.pre_tokenizer = _smollm_pre()
  return tok


@pytest.fixture(scope="module")
def source_tokenizer():
  return _train_tokenizer(split_digits=True)


def _vocab_merges(tok):
  model = json.loads(tok.to_str())["model"]
  vocab = sorted(model["vocab"], key=model["vocab"].get)
  return vocab, [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]


def _permute(weight, num_heads):
  """llama.cpp's convert_hf_to_gguf `permute` (rows of each head: halves -> interleaved)."""
  return (weight.reshape(num_heads, 2, weight.shape[0] // num_heads // 2, *weight.shape[1:])
          .swapaxes(1, 2).reshape(weight.shape))


def _llama(vocab_size, tied):
  config = transformers.LlamaConfig(
      vocab_size=vocab_size, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
      rope_theta=ROPE_THETA, rms_norm_eps=1e-5, tie_word_embeddings=tied, bos_token_id=1,
      eos_token_id=2)
  hf_model = transformers.LlamaForCausalLM(config).eval()
  gen = torch.Generator().manual_seed(int(tied))
  with torch.no_grad():
    for name, param in hf_model.named_parameters():
      noise = torch.randn(param.shape, generator=gen)
      param.copy_(1.0 + 0.1 * noise if "norm" in name else 0.3 * noise)
  return hf_model


_GGUF_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
               "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
               "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
               "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def _gguf_name(name):
  if name.startswith("model.layers."):
    _, _, i, rest = name.split(".", 3)
    module, suffix = rest.rsplit(".", 1)
    return f"blk.{i}.{_GGUF_NAMES[module]}.{suffix}"
  return {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight":
          "output_norm.weight", "lm_head.weight": "output.weight"}[name]


def write_gguf(path, hf_model, tok, quant, *, pre="smollm", odd_tensor_quant=None):
  """`hf_model` and `tok` as llama.cpp writes a GGUF; returns the dequantized HF state dict."""
  config = hf_model.config
  writer = gguf.GGUFWriter(str(path), "llama")
  writer.add_block_count(config.num_hidden_layers)
  writer.add_context_length(config.max_position_embeddings)
  writer.add_embedding_length(config.hidden_size)
  writer.add_feed_forward_length(config.intermediate_size)
  writer.add_head_count(config.num_attention_heads)
  writer.add_head_count_kv(config.num_key_value_heads)
  writer.add_rope_freq_base(ROPE_THETA)
  writer.add_layer_norm_rms_eps(config.rms_norm_eps)
  writer.add_vocab_size(config.vocab_size)
  vocab, merges = _vocab_merges(tok)
  writer.add_tokenizer_model("gpt2")
  writer.add_tokenizer_pre(pre)
  writer.add_token_list(vocab)
  writer.add_token_types([3 if t in SPECIALS else 1 for t in vocab])
  writer.add_token_merges([f"{a} {b}" for a, b in merges])
  writer.add_bos_token_id(1)
  writer.add_eos_token_id(2)
  writer.add_pad_token_id(0)
  writer.add_add_bos_token(False)
  writer.add_chat_template(CHAT_TEMPLATE)
  dequantized = {}
  for name, tensor in hf_model.state_dict().items():
    if name == "lm_head.weight" and config.tie_word_embeddings:
      continue
    array = tensor.numpy().astype(np.float32)
    kind = Q[quant] if array.ndim == 2 else Q.F32  # llama.cpp keeps norms in F32
    if odd_tensor_quant and name.endswith("layers.1.mlp.up_proj.weight"):
      kind = Q[odd_tensor_quant]
    stored = gguf.quants.quantize(array, kind)
    # Rows quantize independently, so permuting rows commutes with (de)quantizing.
    dequantized[name] = torch.from_numpy(np.asarray(
        gguf.quants.dequantize(stored, kind), np.float32).reshape(array.shape))
    if ".q_proj." in name or ".k_proj." in name:
      heads = config.num_attention_heads if ".q_proj." in name else config.num_key_value_heads
      stored = gguf.quants.quantize(_permute(array, heads), kind)
    writer.add_tensor(_gguf_name(name), stored, raw_dtype=kind)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()
  return dequantized


@pytest.fixture(scope="module", params=CASES, ids=[q for q, _ in CASES])
def gguf_case(request, source_tokenizer, tmp_path_factory):
  """(gguf file, transformers' GGUF load, the dequantized weights as an HF directory)."""
  quant, tied = request.param
  tmp = tmp_path_factory.mktemp(f"gguf_{quant}")
  hf_model = _llama(source_tokenizer.get_vocab_size(), tied)
  path = tmp / f"tiny.{quant}.gguf"
  dequantized = write_gguf(path, hf_model, source_tokenizer, quant)
  hf_model.load_state_dict(dequantized, strict=False)  # tied head: follows the embedding
  hf_model.save_pretrained(tmp / "dequantized")
  theirs = transformers.AutoModelForCausalLM.from_pretrained(
      tmp, gguf_file=path.name, dtype=torch.float32).eval()
  return path, theirs, tmp / "dequantized"


def test_params_equal_the_dequantized_weights(gguf_case):
  path, _, dequantized_dir = gguf_case
  config, params = hf.load(path)
  ref_config, ref_params = hf.load(dequantized_dir)
  assert config == ref_config
  flat, ref_flat = (dict(jax.tree_util.tree_flatten_with_path(p)[0]) for p in (params, ref_params))
  assert flat.keys() == ref_flat.keys()
  for key in flat:
    np.testing.assert_array_equal(flat[key], ref_flat[key], err_msg=str(key))


def test_logits_match_transformers_gguf_load(gguf_case):
  path, theirs, _ = gguf_case
  config, params = hf.load(path.parent)  # a directory holding one GGUF loads the same
  ids = [[5, 77, 3, 200, 14, 9, 31, 150, 2, 60], [1, 40, 41]]
  for row in ids:
    ours = np.asarray(forward(params, config, jnp.asarray([row])).logits[0])
    with torch.no_grad():
      ref = theirs(torch.tensor([row])).logits[0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def test_tokens_match_the_source_and_transformers(gguf_case, source_tokenizer):
  path, _, _ = gguf_case
  ours = hf.load_tokenizer(path)
  theirs = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
  for text in TEXTS:
    ids = ours.encode(text)
    assert ids == source_tokenizer.encode(text).ids, text
    # transformers ignores `tokenizer.ggml.pre` and splits GPT-2's way, which differs from the
    # source only where a run of whitespace meets a digit ("  3" -> "Ġ", "Ġ3" not "ĠĠ", "3").
    if not re.search(r"\s{2}\d", text):
      assert ids == theirs(text)["input_ids"], text
    assert ours.decode(ids) == text
  assert (ours.bos_id, ours.eos_id, ours.pad_id) == (1, 2, 0)
  chat = [{"role": "user", "content": "add 12 and 30"}]
  assert ours.chat_prompt("add 12 and 30") == theirs.apply_chat_template(
      chat, tokenize=False, add_generation_prompt=True)


def test_smollm_pre_tokenizer_splits_digits_despite_digit_merges(tmp_path):
  """With digit merges in the vocabulary, only the "smollm" pre-tokenizer reproduces the
  source tokenizer. transformers (5.x) ignores `tokenizer.ggml.pre` and merges the digits, so
  it is not the reference here; on SmolLM2's own file (no digit merges) it agrees with us."""
  source = _train_tokenizer(split_digits=False)
  path = tmp_path / "merges.gguf"
  write_gguf(path, _llama(source.get_vocab_size(), True), source, "F32")
  ours = hf.load_tokenizer(path)
  for text in TEXTS:
    assert ours.encode(text) == source.encode(text).ids, text
  digits = ours.encode("12345")
  assert [ours.token_str(i) for i in digits] == list("12345")


def test_unknown_quant_type_names_tensor_and_type(source_tokenizer, tmp_path):
  path = tmp_path / "odd.gguf"
  write_gguf(path, _llama(source_tokenizer.get_vocab_size(), True), source_tokenizer, "Q8_0",
             odd_tensor_quant="Q5_0")
  with pytest.raises(HFError, match=r"blk\.1\.ffn_up\.weight .*Q5_0"):
    hf.load(path)


def test_unknown_pre_tokenizer_is_a_clear_error(source_tokenizer, tmp_path, capsys):
  path = tmp_path / "pre.gguf"
  write_gguf(path, _llama(source_tokenizer.get_vocab_size(), True), source_tokenizer, "F32",
             pre="mystery-bpe")
  with pytest.raises(HFTokenizerError, match="pre-tokenizer 'mystery-bpe'"):
    hf.load_tokenizer(path)
  assert cli.main(["decode", str(path), "--prompt", "hi"]) == 2
  assert "mystery-bpe" in capsys.readouterr().err


# --- command line ---------------------------------------------------------------------------------

def _decode_json(capsys, *argv):
  code = cli.main(["decode", *map(str, argv), "--json"])
  captured = capsys.readouterr()
  assert code == 0, captured.err
  return json.loads(captured.out)


@pytest.fixture(scope="module")
def q8_file(source_tokenizer, tmp_path_factory):
  """A Q8_0 GGUF and transformers' load of it."""
  tmp = tmp_path_factory.mktemp("cli")
  path = tmp / "tiny.Q8_0.gguf"
  write_gguf(path, _llama(source_tokenizer.get_vocab_size(), True), source_tokenizer, "Q8_0")
  theirs = transformers.AutoModelForCausalLM.from_pretrained(
      tmp, gguf_file=path.name, dtype=torch.float32).eval()
  return path, theirs, transformers.AutoTokenizer.from_pretrained(tmp, gguf_file=path.name)


def _hf_greedy(theirs, ids, new_tokens):
  with torch.no_grad():
    out = theirs.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=new_tokens,
                          eos_token_id=2, pad_token_id=0,
                          attention_mask=torch.ones(1, len(ids), dtype=torch.long))
  out = out[0, len(ids):].tolist()
  return out[:out.index(2) + 1] if 2 in out else out


def test_decode_gguf_greedy_and_chat_match_transformers(q8_file, capsys):
  path, theirs, hf_tok = q8_file
  out = _decode_json(capsys, path, "--prompt", "the fox jumps 12 times", "--max-new-tokens", 8)
  assert out["prompt_token_ids"] == hf_tok("the fox jumps 12 times")["input_ids"]
  assert out["token_ids"] == _hf_greedy(theirs, out["prompt_token_ids"], 8)
  chat = _decode_json(capsys, path, "--prompt", "add 12 and 30", "--chat",
                      "--max-new-tokens", 8)
  expected = hf_tok.apply_chat_template([{"role": "user", "content": "add 12 and 30"}],
                                        add_generation_prompt=True, tokenize=True)
  expected = expected["input_ids"] if isinstance(expected, dict) or hasattr(
      expected, "keys") else expected
  assert chat["prompt_token_ids"] == list(expected)
  assert chat["token_ids"] == _hf_greedy(theirs, chat["prompt_token_ids"], 8)


def test_sft_and_train_init_from_gguf(q8_file, tmp_path, capsys):
  path = q8_file[0]
  demos = tmp_path / "demos.jsonl"
  demos.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in [
      ("the fox", " jumps 12 times"), ("Hello", ", world!")]))
  out = tmp_path / "sft"
  assert cli.main(["sft", str(path), "--data", str(demos), "--out", str(out), "--steps", "2",
                   "--batch-size", "2", "--no-progress"]) == 0
  # The exported HF directory carries the GGUF's tokenizer and chat template.
  exported, original = hf.load_tokenizer(out), hf.load_tokenizer(path)
  assert [exported.encode(t) for t in TEXTS] == [original.encode(t) for t in TEXTS]
  assert exported.chat_prompt("hi") == original.chat_prompt("hi")
  assert hf.load(out)[0] == hf.load(path)[0]
  prompts, reward = tmp_path / "prompts.txt", tmp_path / "reward.py"
  prompts.write_text("the fox\nHello\n12 and 30\nthe dog\n")
  reward.write_text("def score(prompt, completion):\n  return float('1' in completion)\n")
  run = tmp_path / "run"
  capsys.readouterr()
  assert cli.main([
      "train", "--init-from", str(path), "--prompts", str(prompts), "--reward",
      f"{reward}:score", "--out", str(run), "--iterations", "1", "--no-progress",
      "selfplay.batch_size=4", "search.num_simulations=2", "eval.num_prompts=2",
      "task.max_new_tokens=4", "optim.steps_per_iteration=1", "optim.warmup_steps=0"]) == 0, (
          capsys.readouterr().err)
  assert json.loads((run / "config.json").read_text())["init_from"] == str(path.resolve())
