"""Shared tiny fixtures: one small model and task so that compiled functions are reused."""

import os

# Tests run on CPU; keep XLA from grabbing every core's worth of threads per test process.
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
# `tokenzero.cli.main` turns on a persistent compilation cache in ~/.cache; tests stay hermetic
# (test_train_faults gives its subprocesses a cache of their own).
os.environ.setdefault("TOKENZERO_COMPILATION_CACHE", "off")

import atexit
import shutil
import tempfile

import jax
import pytest

from tokenzero import compilation_cache

# One persistent XLA cache for this test session, shared by the xdist workers (they inherit the
# controller's environment): many tests build the same program from fresh Python objects (a new
# optimizer or reward closure is a new jit cache key), and both workers compile the shared tiny
# fixtures; from the disk each costs milliseconds instead of seconds. Made empty per session.
_SESSION_CACHE = "TOKENZERO_TEST_XLA_CACHE"
if _SESSION_CACHE not in os.environ:
  os.environ[_SESSION_CACHE] = tempfile.mkdtemp(prefix="tokenzero-test-xla-")
  atexit.register(shutil.rmtree, os.environ[_SESSION_CACHE], ignore_errors=True)
compilation_cache.enable(os.environ[_SESSION_CACHE])

# The tests hold fast paths equal to reference paths at 1e-5; on a GPU, XLA's default float32
# matmuls use TF32 (about 1e-3), which is enough to flip a search's action weights. Full float32
# everywhere: a no-op on the CPU.
jax.config.update("jax_default_matmul_precision", "highest")

import decoders_reference
from tokenzero import model as model_lib
from tokenzero.config import ModelConfig
from tokenzero.tasks import Sort


@pytest.fixture(scope="session")
def sort_task():
  return Sort(length=3)


@pytest.fixture(scope="session")
def tiny_config(sort_task):
  return ModelConfig(vocab_size=sort_task.tokenizer.vocab_size, num_layers=2, num_heads=2,
                     d_model=16, context=sort_task.prompt_len + sort_task.max_new_tokens)


@pytest.fixture(scope="session")
def tiny_params(tiny_config):
  params = model_lib.init_params(tiny_config, jax.random.key(0))
  # Random init gives near-uniform policies; a little noise makes the tests' logits distinct.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.2 * jax.random.normal(k, x.shape)
                                   for x, k in zip(leaves, keys)])


@pytest.fixture(scope="session", params=("gpt2", "llama", "qwen2"))  # hf_checkpoints.FAMILIES
def hf_checkpoint(request, tmp_path_factory):
  """A tiny random HF model of each family, saved and loaded back (`hf_checkpoints.Checkpoint`);
  shared by the configs, params and files tests of `tokenzero.hf`."""
  # torch and transformers are test extras: only the tests that ask for this fixture need them.
  hf_checkpoints = pytest.importorskip("hf_checkpoints")
  return hf_checkpoints.save_and_load(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="session")
def decoder_model():
  """(params, config) of the decoder tests: see decoders_reference.py."""
  return decoders_reference.make_model()


# Tests too slow for the suite's 15 minutes on 2 cores, run on demand: TOKENZERO_SLOW_TESTS=1.
slow = pytest.mark.skipif(not os.environ.get("TOKENZERO_SLOW_TESTS"),
                          reason="slow; run with TOKENZERO_SLOW_TESTS=1")
