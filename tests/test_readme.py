"""The README's layout table is the tree's: regenerated from the module docstrings, never edited
by hand. When this fails, paste the table it prints into README.md."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "tokenzero"


def _summary(path: Path) -> str:
  """First sentence of a module's docstring, on one line."""
  doc = ast.get_docstring(ast.parse(path.read_text())) or ""
  text = " ".join(doc.split("\n\n")[0].split())
  return re.split(r"(?<=\.)\s", text)[0].rstrip(".")


def layout_table() -> str:
  """One row per top-level module and per package (its modules listed), in name order."""
  rows = ["| where | modules | what it is |", "|---|---|---|"]
  for path in sorted(PACKAGE.iterdir()):
    if path.name == "__init__.py" or path.name.startswith(("_", ".")):
      continue
    if path.is_dir() and (path / "__init__.py").exists():
      modules = sorted(p.stem for p in path.glob("*.py") if not p.name.startswith("_"))
      rows.append(f"| `tokenzero/{path.name}/` | {', '.join(modules)} | "
                  f"{_summary(path / '__init__.py')} |")
    elif path.suffix == ".py":
      rows.append(f"| `tokenzero/{path.name}` | | {_summary(path)} |")
  return "\n".join(rows) + "\n"


def test_readme_layout_table_is_the_tree():
  table = layout_table()
  assert table in (REPO / "README.md").read_text(), "README layout table is stale:\n" + table


def test_every_module_has_a_docstring():
  missing = [str(p.relative_to(REPO)) for p in sorted(PACKAGE.rglob("*.py"))
             if p.name != "__main__.py" and not ast.get_docstring(ast.parse(p.read_text()))]
  assert not missing, missing
