"""Where things are: the repository root and the official JS client's test folder.
Tests read files by these absolute paths, so they run from any working directory."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
JS_DIR = ROOT / "tests" / "js"
