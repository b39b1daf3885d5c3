"""HF model directories: export round trips (value head included), sharded and bfloat16
checkpoints, clear errors, tokenizer files copied by export, and a loaded 50k-vocabulary model
whose search never allocates [B, N, V].

The checkpoints are the session-wide `hf_checkpoint` fixture (see `hf_checkpoints`).
"""

import copy
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.extend import core as jex_core

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hf_checkpoints import (NATIVE_CONFIGS, NEW_TOKENS, forward, hf_logits,  # noqa: E402
                            llama3_style, prompts, random_params)
from tokenzero import episode as episode_lib  # noqa: E402
from tokenzero import hf  # noqa: E402
from tokenzero import search as search_lib  # noqa: E402
from tokenzero.config import ModelConfig, SearchConfig  # noqa: E402


def test_export_round_trip(hf_checkpoint, tmp_path):
  hf_model, config, params = hf_checkpoint.hf_model, hf_checkpoint.config, hf_checkpoint.params
  head = {"kernel": 0.1 * jnp.ones_like(params["value_head"]["kernel"]),
          "bias": jnp.full_like(params["value_head"]["bias"], 0.5)}
  trained = {**params, "value_head": head}
  hf.export(trained, config, tmp_path)
  reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
  assert type(reloaded) is type(hf_model)
  ids = prompts()[0][1]
  np.testing.assert_allclose(hf_logits(reloaded, ids), hf_logits(hf_model, ids), atol=1e-5,
                             rtol=0)
  # tokenzero reads its own export back, value head included.
  config2, params2 = hf.load(tmp_path)
  assert config2 == config
  jax.tree.map(np.testing.assert_array_equal, params2, trained)


@pytest.mark.parametrize("hf_checkpoint", ["llama"], indirect=True)  # one family is enough here
def test_sharded_and_bfloat16_checkpoints(hf_checkpoint, tmp_path):
  hf_model, config, params = hf_checkpoint.hf_model, hf_checkpoint.config, hf_checkpoint.params
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
  tokens = prompts(extra=NEW_TOKENS)[1]
  np.testing.assert_allclose(forward(params16, config16, tokens).logits,
                             forward(params, config, tokens).logits, atol=0.3)


def _write_config(path, **changes):
  data = json.loads((path / "config.json").read_text())
  data.update(changes)
  (path / "config.json").write_text(json.dumps(data))


@pytest.mark.parametrize("hf_checkpoint", ["llama"], indirect=True)
def test_clear_errors(hf_checkpoint, tmp_path):
  hf_checkpoint.hf_model.save_pretrained(tmp_path)
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


def test_export_copies_tokenizer(tmp_path):
  llama3_style(tmp_path / "tok")
  config = NATIVE_CONFIGS["llama_proj_bias"]
  tok = hf.load_tokenizer(tmp_path / "tok")
  config = ModelConfig(**{**config.__dict__, "vocab_size": tok.vocab_size})
  params = random_params(config)
  hf.export(params, config, tmp_path / "out", tokenizer_dir=tmp_path / "tok")
  data = json.loads((tmp_path / "out" / "config.json").read_text())
  assert (data["bos_token_id"], data["eos_token_id"]) == (0, 2)
  again = hf.load_tokenizer(tmp_path / "out")
  assert again.encode("Hello world") == tok.encode("Hello world")
  assert again.eos_ids == (1, 2)


# --- search on a loaded model with a real-size vocabulary ---------------------------------------


def _walk_avals(jaxpr):
  """Every intermediate's aval in `jaxpr`, sub-jaxprs (loops, conds, pjit) included."""
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
  vocab, batch, prompt_len, budget, sims, top_k = 50257, 3, 5, 4, 10, 8
  # The checkpoint is written by `export` (building it in torch is slow at this vocab size).
  written = ModelConfig(arch="gpt2", vocab_size=vocab, num_layers=1, num_heads=2, d_model=16,
                        context=32)
  hf.export(random_params(written), written, tmp_path)
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
  nodes = search_lib.num_nodes(search_config)  # with one tree per answer: 2 S + 1
  tree_bytes = 0
  for leaf in jax.tree.leaves(tree):
    assert vocab not in leaf.shape, leaf.shape
    tree_bytes += leaf.size * leaf.dtype.itemsize
  assert tree.children_prior_logits.shape == (batch, nodes, top_k)
  assert tree_bytes < batch * nodes * vocab  # well under even one byte per [B, N, V] entry
  for aval in _walk_avals(jaxpr.jaxpr):
    shape = getattr(aval, "shape", ())
    assert not (vocab in shape and nodes in shape), shape
