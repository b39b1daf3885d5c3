"""The persistent XLA compilation cache of the command line."""

from pathlib import Path

import pytest

from tokenzero import compilation_cache


@pytest.mark.parametrize("value,expected", [
    (None, Path("~/.cache/tokenzero/xla").expanduser()), ("", Path("~/.cache/tokenzero/xla")
                                                          .expanduser()),
    ("off", None), ("OFF", None), ("/tmp/x", Path("/tmp/x")),
])
def test_compilation_cache_dir_from_the_environment(value, expected):
  environ = {} if value is None else {compilation_cache.ENV_VAR: value}
  assert compilation_cache.cache_dir(environ) == expected
