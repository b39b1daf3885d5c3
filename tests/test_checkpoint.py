"""Checkpoints: a digest that catches what orbax loads silently, and older ones without it."""

import shutil

import jax
import jax.numpy as jnp
import pytest

from tokenzero import checkpoint as ckpt_lib


def test_silent_corruption_is_caught_by_the_digest(tmp_path):
  """A flipped bit in orbax's array data loads without complaint from orbax itself."""
  weights = jax.random.normal(jax.random.key(0), (32, 32))
  states = [ckpt_lib.TrainState(params={"w": weights * i}, opt_state={"mu": weights},
                                step=jnp.int32(2 * i), iteration=jnp.int32(i),
                                rng=jnp.array([0, 7], jnp.uint32)) for i in (1, 2)]
  checkpointer = ckpt_lib.Checkpointer(tmp_path, writer=True)
  for state in states:
    checkpointer.save(state, {"seed": 0})
  data = max((p for p in (tmp_path / "2").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  flipped = bytearray(data.read_bytes())
  flipped[len(flipped) * 3 // 10] ^= 0x01
  data.write_bytes(bytes(flipped))
  with pytest.warns(UserWarning, match="checkpoints?.*2: .*does not match the digest"):
    restored, config = checkpointer.restore_latest(states[0])
  checkpointer.close()
  assert int(restored.iteration) == 1 and config == {"seed": 0}
  assert ckpt_lib.state_digest(restored) == ckpt_lib.state_digest(states[0])

  shutil.rmtree(tmp_path / "1" / "digest")  # as an older tokenzero wrote it: loads, unchecked.
  checkpointer = ckpt_lib.Checkpointer(tmp_path)
  with pytest.warns(UserWarning, match="has no digest"):
    restored, _ = checkpointer.restore(1, states[0])
  checkpointer.close()
  assert ckpt_lib.state_digest(restored) == ckpt_lib.state_digest(states[0])
