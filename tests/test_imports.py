"""The package's import graph: no import circles, and no imports inside functions.

Both read the source with `ast`, never importing it. Edges count at any nesting level
(`if TYPE_CHECKING:` blocks included, since a circle there is still a circle of the design),
except inside the CLI's functions, which defer imports on purpose so that `tokenzero --help` is
fast. Importing `tokenzero.a.b` from outside package `tokenzero.a` also runs `tokenzero.a`'s
`__init__`: that counts as an edge too.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator

PACKAGE_DIR = Path(__file__).resolve().parent.parent / "tokenzero"

# Modules outside tokenzero that may be imported inside a function: optional heavy dependencies
# only (a user who never needs them must not have to install them).
FUNCTION_LEVEL_ALLOWED: frozenset[str] = frozenset()

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)


def _module_name(path: Path) -> str:
  parts = list(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _sources() -> dict[str, tuple[Path, ast.Module]]:
  """Module name -> (path, parsed source) for every module of the package."""
  return {_module_name(path): (path, ast.parse(path.read_text(), str(path)))
          for path in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_cli(name: str) -> bool:
  return name == "tokenzero.cli" or name.startswith("tokenzero.cli.")


def _imports(tree: ast.AST, in_function: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
  """Every import statement under `tree`, with whether it sits inside a function body."""
  for child in ast.iter_child_nodes(tree):
    if isinstance(child, (ast.Import, ast.ImportFrom)):
      yield child, in_function
    yield from _imports(child, in_function or isinstance(child, _FUNCTIONS))


def _targets(node: ast.stmt, importer: str, path: Path, known: set[str]) -> list[str]:
  """The tokenzero modules an import statement names (packages as their `__init__`)."""
  if isinstance(node, ast.Import):
    names = [alias.name for alias in node.names]
    return [_longest_known(name, known) for name in names if _in_package(name)]
  base = node.module or ""
  if node.level:  # relative: from the importer's package, `level - 1` packages up.
    package = importer if path.name == "__init__.py" else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
      package = package.rpartition(".")[0]
    base = f"{package}.{base}" if base else package
  if not _in_package(base):
    return []
  return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else _longest_known(base, known)
          for alias in node.names]


def _in_package(name: str) -> bool:
  return name == "tokenzero" or name.startswith("tokenzero.")


def _longest_known(name: str, known: set[str]) -> str:
  while name not in known and "." in name:
    name = name.rpartition(".")[0]
  return name


def _with_packages(target: str, importer: str) -> list[str]:
  """`target` and each package above it whose `__init__` the import runs (those that do not
  already hold the importer)."""
  out = [target]
  parent = target.rpartition(".")[0]
  while parent and not (importer == parent or importer.startswith(parent + ".")):
    out.append(parent)
    parent = parent.rpartition(".")[0]
  return out


def import_graph() -> dict[str, set[str]]:
  """Module -> the tokenzero modules it imports."""
  sources = _sources()
  known = set(sources)
  graph: dict[str, set[str]] = {name: set() for name in sources}
  for name, (path, tree) in sources.items():
    for node, in_function in _imports(tree):
      if in_function and _is_cli(name):
        continue
      for target in _targets(node, name, path, known):
        graph[name].update(t for t in _with_packages(target, name) if t != name)
  return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One import circle, as [a, b, ..., a], or None."""
  done: set[str] = set()
  for root in sorted(graph):
    if root in done:
      continue
    path, on_path = [root], {root}
    stack = [(root, iter(sorted(graph[root])))]
    while stack:
      node, children = stack[-1]
      child = next(children, None)
      if child is None:
        stack.pop()
        path.pop()
        on_path.discard(node)
        done.add(node)
      elif child in on_path:
        return path[path.index(child):] + [child]
      elif child not in done:
        stack.append((child, iter(sorted(graph.get(child, ())))))
        path.append(child)
        on_path.add(child)
  return None


def test_no_import_cycles():
  cycle = find_cycle(import_graph())
  assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_function_level_imports():
  offenders = []
  for name, (path, tree) in _sources().items():
    if _is_cli(name):
      continue
    for node, in_function in _imports(tree):
      if not in_function:
        continue
      if isinstance(node, ast.Import):
        modules = [alias.name for alias in node.names]
      else:
        modules = [("." * node.level) + (node.module or "")]
      if any(m.startswith(".") or _in_package(m) or m.split(".")[0] not in FUNCTION_LEVEL_ALLOWED
             for m in modules):
        offenders.append(f"{path.relative_to(PACKAGE_DIR.parent)}:{node.lineno}: "
                         f"{ast.unparse(node)}")
  assert not offenders, "imports inside functions:\n" + "\n".join(offenders)
