"""What the `stepline` commands share and the declarations need too: a leaf, importing none of
them, so `main` (the declarations) and the modules that do the commands never import each
other."""

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES / "todo.yaml"
