"""Where the example workflows are: what the declarations (`main`) and the commands both need,
in a leaf importing neither, so the two never import each other."""

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
EXAMPLE = EXAMPLES / "todo.yaml"
