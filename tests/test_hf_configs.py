"""`config.json` of each HF family maps to the `ModelConfig` (and so the params) it describes."""

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from hf_checkpoints import VOCAB  # noqa: E402


def test_config_maps_layout(hf_checkpoint):
  family, config, params = hf_checkpoint.family, hf_checkpoint.config, hf_checkpoint.params
  assert config.vocab_size == VOCAB and config.num_layers == 2
  if family == "llama":
    assert (config.kv_heads, config.rope_theta, config.tie_embeddings) == (2, 500.0, False)
    assert "lm_head" in params
  if family == "qwen2":
    assert (config.attn_bias, config.proj_bias, config.tie_embeddings) == (True, False, True)
    assert "bias" in params["block_0"]["attn"]["q"] and "bias" not in params["block_0"]["attn"]["o"]
