"""Loaded HF checkpoints compute what `transformers` computes: logits, cached decoding, greedy
and beam continuations, export round trips, and tokenizer encodings.

Every model is a tiny random-init config saved with `save_pretrained` into a temp dir (no
downloads). Weights are redrawn larger than HF's init so that next-token distributions are
sharp and greedy/beam choices are not near-ties that float noise could flip.
"""

import copy
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")
torch.set_num_threads(1)  # tiny models: threads only contend with XLA for the few cores.

from tokenzero import decoders  # noqa: E402
from tokenzero import hf  # noqa: E402
from tokenzero import hf_tokenizer  # noqa: E402
from tokenzero import model as model_lib  # noqa: E402
from tokenzero.config import ModelConfig  # noqa: E402

VOCAB = 97
PROMPT_LENS = (3, 9, 1, 6)  # varied lengths, right-padded on our side
NEW_TOKENS = 6

HF_CONFIGS = {
    "gpt2": lambda: transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=0,
        eos_token_id=0),
    # GQA (2 KV heads for 4 query heads), untied head, non-default RoPE theta.
    "llama": lambda: transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
        rope_theta=500.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    # q/k/v biases, multi-query (1 KV head), tied embeddings.
    "qwen2": lambda: transformers.Qwen2Config(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, max_position_embeddings=32,
        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2),
}
FAMILIES = tuple(HF_CONFIGS)


def _sharpen(hf_model, seed):
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, param in hf_model.named_parameters():
      noise = torch.randn(param.shape, generator=gen)
      is_norm = "norm" in name or ".ln_" in name
      if is_norm and name.endswith("weight"):
        param.copy_(1.0 + 0.1 * noise)
      else:
        param.copy_((0.1 if is_norm else 0.3) * noise)


@pytest.fixture(scope="module", params=FAMILIES)
def loaded(request, tmp_path_factory):
  family = request.param
  hf_model = transformers.AutoModelForCausalLM.from_config(HF_CONFIGS[family]()).eval()
  _sharpen(hf_model, seed=FAMILIES.index(family))
  model_dir = tmp_path_factory.mktemp(family)
  hf_model.save_pretrained(model_dir)
  config, params = hf.load(model_dir)
  return family, hf_model, config, params, model_dir


def _prompts(seed=0, extra=0):
  """Token rows of lengths PROMPT_LENS (+ `extra`), and the same right-padded: [B, P]."""
  rng = np.random.default_rng(seed)
  rows = [rng.integers(0, VOCAB, n + extra).tolist() for n in PROMPT_LENS]
  padded = np.zeros((len(rows), max(PROMPT_LENS) + extra), np.int32)
  for i, row in enumerate(rows):
    padded[i, :len(row)] = row
  return rows, jnp.asarray(padded), jnp.asarray(PROMPT_LENS, jnp.int32) + extra


def _hf_logits(hf_model, ids):
  with torch.no_grad():
    return hf_model(torch.tensor([ids])).logits[0].numpy()


_forward = jax.jit(model_lib.forward, static_argnums=1)


@functools.partial(jax.jit, static_argnums=1)
def _cached_logits(params, config, prompt, lengths, continuation):
  """Prefill right-padded prompts [B, P], then decode `continuation` [B, T] one token at a
  time from the KV cache -> logits [B, T, V]."""
  _, cache = model_lib.prefill(params, config, prompt, lengths,
                               prompt.shape[1] + continuation.shape[1])

  def body(cache, token):
    out, cache = model_lib.decode_step(params, config, token, cache)
    return cache, out.logits

  _, logits = jax.lax.scan(body, cache, continuation.T)
  return jnp.moveaxis(logits, 0, 1)


def test_config_maps_layout(loaded):
  family, _, config, params, _ = loaded
  assert config.vocab_size == VOCAB and config.num_layers == 2
  if family == "llama":
    assert (config.kv_heads, config.rope_theta, config.tie_embeddings) == (2, 500.0, False)
    assert "lm_head" in params
  if family == "qwen2":
    assert (config.attn_bias, config.proj_bias, config.tie_embeddings) == (True, False, True)
    assert "bias" in params["block_0"]["attn"]["q"] and "bias" not in params["block_0"]["attn"]["o"]


def test_logits_match_transformers(loaded):
  _, hf_model, config, params, _ = loaded
  rows, tokens, _ = _prompts(extra=NEW_TOKENS)
  out = _forward(params, config, tokens)
  for i, ids in enumerate(rows):
    np.testing.assert_allclose(out.logits[i, :len(ids)], _hf_logits(hf_model, ids), atol=1e-4,
                               rtol=0)
  # The new value head starts neutral.
  np.testing.assert_array_equal(out.value, 0.0)


def test_cached_decoding_matches_forward(loaded):
  _, _, config, params, _ = loaded
  rows, tokens, _ = _prompts(extra=NEW_TOKENS)
  lengths = jnp.asarray(PROMPT_LENS, jnp.int32)
  prompt = jnp.where(jnp.arange(max(PROMPT_LENS)) < lengths[:, None], tokens[:, :max(PROMPT_LENS)],
                     0)
  continuation = jnp.asarray([row[n:] for row, n in zip(rows, PROMPT_LENS)])
  cached = _cached_logits(params, config, prompt, lengths, continuation)
  full = _forward(params, config, tokens).logits
  for i, n in enumerate(PROMPT_LENS):
    np.testing.assert_allclose(cached[i], full[i, n:n + NEW_TOKENS], atol=1e-4, rtol=0)


def _until_eos(ids, eos_id):
  ids = list(ids)
  return ids[:ids.index(eos_id) + 1] if eos_id in ids else ids


def test_greedy_matches_generate(loaded):
  _, hf_model, config, params, _ = loaded
  rows, prompt, lengths = _prompts(seed=2)

  def hf_greedy(ids, eos_id):
    with torch.no_grad():
      out = hf_model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=NEW_TOKENS,
                              eos_token_id=eos_id, pad_token_id=eos_id,
                              attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    return _until_eos(out[0, len(ids):].tolist(), eos_id)

  # EOS = a token row 0 emits mid-answer, so stopping at EOS is exercised too.
  eos_id = hf_greedy(rows[0], eos_id=VOCAB - 1)[min(2, NEW_TOKENS - 1)]
  ours = decoders.generate(params, prompt, lengths, jax.random.key(0), jnp.ones(VOCAB, bool),
                           config=config, sampler=decoders.Greedy(),
                           max_new_tokens=NEW_TOKENS, eos_id=int(eos_id))
  for i, ids in enumerate(rows):
    got = ours.completion[i, :int(ours.completion_len[i])].tolist()
    assert got == hf_greedy(ids, eos_id), f"row {i}"


def test_beam_matches_generate(loaded):
  _, hf_model, config, params, _ = loaded
  rows, prompt, lengths = _prompts(seed=3)
  width = 4
  # Sequences without EOS: HF gets none (its generation config's EOS is lifted for the call;
  # a generation_config argument would not do, generate fills None from the model's), ours an
  # id outside the vocabulary.
  ours = decoders.decode(params, prompt, lengths, jax.random.key(0), jnp.ones(VOCAB, bool),
                         decoder=decoders.Beam(width), config=config,
                         max_new_tokens=NEW_TOKENS, eos_id=VOCAB)
  saved_eos = hf_model.generation_config.eos_token_id
  hf_model.generation_config.eos_token_id = None
  try:
    for i, ids in enumerate(rows):
      with torch.no_grad():
        out = hf_model.generate(torch.tensor([ids]), do_sample=False, num_beams=width,
                                max_new_tokens=NEW_TOKENS, eos_token_id=None, pad_token_id=0,
                                attention_mask=torch.ones(1, len(ids), dtype=torch.long))
      assert ours.completion[i].tolist() == out[0, len(ids):].tolist(), f"row {i}"
  finally:
    hf_model.generation_config.eos_token_id = saved_eos


def test_export_round_trip(loaded, tmp_path):
  family, hf_model, config, params, model_dir = loaded
  head = {"kernel": 0.1 * jnp.ones_like(params["value_head"]["kernel"]),
          "bias": jnp.full_like(params["value_head"]["bias"], 0.5)}
  trained = {**params, "value_head": head}
  hf.export(trained, config, tmp_path)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
  assert type(reloaded) is type(hf_model)
  ids = _prompts()[0][1]
  np.testing.assert_allclose(_hf_logits(reloaded, ids), _hf_logits(hf_model, ids), atol=1e-5,
                             rtol=0)
  # tokenzero reads its own export back, value head included.
  config2, params2 = hf.load(tmp_path)
  assert config2 == config
  jax.tree.map(np.testing.assert_array_equal, params2, trained)


NATIVE_CONFIGS = {
    "gpt2_untied_no_bias": ModelConfig(arch="gpt2", vocab_size=VOCAB, num_layers=1, num_heads=2,
                                       d_model=16, context=16, tie_embeddings=False,
                                       attn_bias=False, proj_bias=False),
    "llama_proj_bias": ModelConfig(arch="llama", vocab_size=VOCAB, num_layers=1, num_heads=2,
                                   num_kv_heads=1, d_model=16, d_ff=24, context=16,
                                   attn_bias=False, proj_bias=True),
    "llama_all_bias": ModelConfig(arch="llama", vocab_size=VOCAB, num_layers=1, num_heads=4,
                                  head_dim=8, d_model=16, context=16, tie_embeddings=False),
}


def _random_params(config, seed=0):
  """Params of `config` drawn at random (shapes traced, never run: eager init is slow)."""
  shapes = jax.eval_shape(lambda: model_lib.init_params(config, jax.random.key(0)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype), shapes)


@pytest.mark.parametrize("name", NATIVE_CONFIGS)
def test_export_native_config(name, tmp_path):
  """A from-scratch tokenzero model exports to a layout that computes the same logits."""
  config = NATIVE_CONFIGS[name]
  params = _random_params(config)
  hf.export(params, config, tmp_path)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
  ids = [5, 17, 3, 90, 41]
  ours = _forward(params, config, jnp.asarray([ids])).logits[0]
  np.testing.assert_allclose(_hf_logits(reloaded, ids), ours, atol=1e-4, rtol=0)


@pytest.mark.parametrize("loaded", ["llama"], indirect=True)  # one family is enough here
def test_sharded_and_bfloat16_checkpoints(loaded, tmp_path):
  _, hf_model, config, params, _ = loaded
  sharded = tmp_path / "sharded"
  hf_model.save_pretrained(sharded, max_shard_size="20KB")
  assert (sharded / "model.safetensors.index.json").exists()
  _, sharded_params = hf.load(sharded)
  jax.tree.map(np.testing.assert_array_equal, sharded_params, params)

  half = tmp_path / "bf16"
  copy.deepcopy(hf_model).to(torch.bfloat16).save_pretrained(half)  # the fixture is shared
  config16, params16 = hf.load(half, dtype="bfloat16", param_dtype="bfloat16")
  assert config16.dtype == "bfloat16"
  assert params16["embed"]["embedding"].dtype == jnp.bfloat16
  _, params32 = hf.load(half)  # float32 by default, whatever the checkpoint stores
  assert params32["embed"]["embedding"].dtype == jnp.float32
  tokens = _prompts(extra=NEW_TOKENS)[1]
  np.testing.assert_allclose(_forward(params16, config16, tokens).logits,
                             _forward(params, config, tokens).logits, atol=0.3)


def _write_config(path, **changes):
  data = json.loads((path / "config.json").read_text())
  data.update(changes)
  (path / "config.json").write_text(json.dumps(data))


@pytest.mark.parametrize("loaded", ["llama"], indirect=True)
def test_clear_errors(loaded, tmp_path):
  _, hf_model, _, _, _ = loaded
  hf_model.save_pretrained(tmp_path)
  _write_config(tmp_path, architectures=["MistralForCausalLM"], model_type="mistral")
  with pytest.raises(hf.HFError, match="MistralForCausalLM"):
    hf.load(tmp_path)
  _write_config(tmp_path, architectures=["LlamaForCausalLM"], model_type="llama",
                rope_scaling={"rope_type": "llama3", "factor": 8.0}, rope_parameters=None)
  with pytest.raises(hf.HFError, match="llama3"):
    hf.load(tmp_path)
  _write_config(tmp_path, rope_scaling=None, num_hidden_layers=3)
  with pytest.raises(hf.HFError, match=r"missing tensors: model\.layers\.2\."):
    hf.load(tmp_path)
  (tmp_path / "model.safetensors").unlink()
  with pytest.raises(hf.HFError, match="no model.safetensors"):
    hf.load(tmp_path)


# --- tokenizers ---------------------------------------------------------------------------------

CORPUS = ["the quick brown fox jumps over the lazy dog", "Hello, world! Hello again.",
          "tokens and more tokens: 12345 67890", "  spaces\tand\nnewlines  ", "ünïcödé ✓ 漢字"]
TEXTS = ["Hello world", " leading space", "tabs\tand\nnewlines", "ünïcödé ✓ 漢字 ok", "x",
         "the lazy dog<|endoftext|>again"]


def _byte_bpe(special_tokens):
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tok = tokenizers.Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=special_tokens,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(CORPUS, trainer)
  return tok


def _vocab_merges(tok):
  model = json.loads(tok.to_str())["model"]
  return model["vocab"], [tuple(m) for m in model["merges"]]


def _gpt2_style(path):
  """GPT2Tokenizer's own save of a byte-level BPE: BOS = EOS but not added, no PAD."""
  tok = _byte_bpe(["<|endoftext|>"])
  vocab, merges = _vocab_merges(tok)
  transformers.GPT2Tokenizer(vocab=vocab, merges=merges).save_pretrained(path)
  return {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "pad": None}


def _qwen2_style(path):
  """Qwen2Tokenizer's own save: NFC + split regex pre-tokenizer, PAD = EOS = <|endoftext|>."""
  tok = _byte_bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
  vocab, merges = _vocab_merges(tok)
  transformers.Qwen2Tokenizer(vocab=vocab, merges=merges).save_pretrained(path)
  return {"bos": None, "eos": "<|endoftext|>", "pad": "<|endoftext|>"}


def _llama3_style(path):
  """tokenizer.json whose post-processor adds BOS; several EOS ids in generation_config."""
  from tokenizers import processors
  specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|endoftext|>"]
  tok = _byte_bpe(specials)
  tok.post_processor = processors.TemplateProcessing(
      single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", 0)])
  path.mkdir(exist_ok=True)
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps({
      "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
      "eos_token": "<|eot_id|>", "clean_up_tokenization_spaces": False}))
  (path / "generation_config.json").write_text(json.dumps({
      "bos_token_id": 0, "eos_token_id": [1, 2]}))
  return {"bos": "<|begin_of_text|>", "eos": "<|eot_id|>", "pad": None, "eos_ids": (1, 2),
          "adds_bos": True}


def _stale_flags_style(path):
  """tokenizer_config.json flags that disagree with tokenizer.json's post-processor: transformers
  v5 ignores them (tokenizer.json wins), and so do we."""
  from tokenizers import processors
  specials = ["<unk>", "<s>", "</s>", "<|endoftext|>"]
  tok = _byte_bpe(specials)
  tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                     special_tokens=[("<s>", 1)])
  path.mkdir(exist_ok=True)
  tok.save(str(path / "tokenizer.json"))
  (path / "tokenizer_config.json").write_text(json.dumps({
      "tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": False,
      "add_eos_token": True, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
      "pad_token": "<unk>", "clean_up_tokenization_spaces": False}))
  return {"bos": "<s>", "eos": "</s>", "pad": "<unk>", "adds_bos": True}


TOKENIZER_STYLES = {"gpt2": _gpt2_style, "qwen2": _qwen2_style, "llama3": _llama3_style,
                    "stale_flags": _stale_flags_style}


@pytest.mark.parametrize("style", TOKENIZER_STYLES)
def test_tokenizer_matches_transformers(style, tmp_path):
  expected = TOKENIZER_STYLES[style](tmp_path)
  reference = transformers.AutoTokenizer.from_pretrained(tmp_path)
  ours = hf_tokenizer.load(tmp_path)
  for text in TEXTS:
    ids = ours.encode(text)
    assert ids == reference(text)["input_ids"], text
    # Decoding drops special tokens (and stops at EOS) as decode(skip_special_tokens=True) does.
    body = [i for i in ids if i not in ours.eos_ids]
    assert ours.decode(body) == reference.decode(body, skip_special_tokens=True), text
  token_id = ours.backend.token_to_id
  assert ours.bos_id == (token_id(expected["bos"]) if expected["bos"] else None)
  assert ours.eos_id == token_id(expected["eos"]) == reference.eos_token_id
  assert ours.eos_ids == expected.get("eos_ids", (ours.eos_id,))
  assert ours.pad_token_id == (token_id(expected["pad"]) if expected["pad"] else None)
  assert ours.pad_id == (ours.pad_token_id if expected["pad"] else ours.eos_id)
  assert (ours.encode("x")[0] == ours.bos_id) == expected.get("adds_bos", False)
  assert ours.sep_id is None and ours.vocab_size == len(reference)
  assert ours.describe().startswith("hf:")


def test_export_copies_tokenizer(tmp_path):
  _llama3_style(tmp_path / "tok")
  config = NATIVE_CONFIGS["llama_proj_bias"]
  tok = hf_tokenizer.load(tmp_path / "tok")
  config = ModelConfig(**{**config.__dict__, "vocab_size": tok.vocab_size})
  params = _random_params(config)
  hf.export(params, config, tmp_path / "out", tokenizer_dir=tmp_path / "tok")
  data = json.loads((tmp_path / "out" / "config.json").read_text())
  assert (data["bos_token_id"], data["eos_token_id"]) == (0, 2)
  again = hf_tokenizer.load(tmp_path / "out")
  assert again.encode("Hello world") == tok.encode("Hello world")
  assert again.eos_ids == (1, 2)


# --- search on a loaded model with a real-size vocabulary ---------------------------------------


def _walk_avals(jaxpr):
  """Every intermediate's aval in `jaxpr`, sub-jaxprs (loops, conds, pjit) included."""
  from jax.extend import core as jex_core
  for eqn in jaxpr.eqns:
    yield from (v.aval for v in eqn.outvars)
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        if isinstance(sub, jex_core.ClosedJaxpr):
          yield from _walk_avals(sub.jaxpr)
        elif isinstance(sub, jex_core.Jaxpr):
          yield from _walk_avals(sub)


def test_search_on_50k_vocab_is_sized_by_candidates(tmp_path):
  """A loaded GPT-2 with GPT-2's 50257-token vocabulary: the tree holds [B, N, K], never V,
  and no array of the whole search program has both a node and a vocabulary axis. Traced
  only (shapes), so the test costs no compilation."""
  from tokenzero import episode as episode_lib, search as search_lib
  from tokenzero.config import SearchConfig
  vocab, batch, prompt_len, budget, sims, top_k = 50257, 3, 5, 4, 10, 8
  # The checkpoint is written by `export` (building it in torch is slow at this vocab size).
  written = ModelConfig(arch="gpt2", vocab_size=vocab, num_layers=1, num_heads=2, d_model=16,
                        context=32)
  hf.export(_random_params(written), written, tmp_path)
  config, params = hf.load(tmp_path)
  assert config.vocab_size == vocab
  search_config = SearchConfig(num_simulations=sims, top_k=top_k, max_num_considered_actions=top_k)

  def search(params, prompt, lengths, key):
    state = episode_lib.start(params, config, prompt, lengths, budget)
    return search_lib.run_search(
        params, config, search_config, state, key, allowed=jnp.ones((vocab,), bool),
        reward_fn=lambda p, pl, c, cl: jnp.zeros(p.shape[0]), eos_id=vocab - 1)

  args = (params, jnp.zeros((batch, prompt_len), jnp.int32),
          jnp.full((batch,), prompt_len, jnp.int32), jax.random.key(0))
  jaxpr = jax.make_jaxpr(search)(*args)
  tree = jax.eval_shape(search, *args).tree
  nodes = sims + 1
  tree_bytes = 0
  for leaf in jax.tree.leaves(tree):
    assert vocab not in leaf.shape, leaf.shape
    tree_bytes += leaf.size * leaf.dtype.itemsize
  assert tree.children_prior_logits.shape == (batch, nodes, top_k)
  assert tree_bytes < batch * nodes * vocab  # well under even one byte per [B, N, V] entry
  for aval in _walk_avals(jaxpr.jaxpr):
    shape = getattr(aval, "shape", ())
    assert not (vocab in shape and nodes in shape), shape
