"""Where the repository's shipped files live (schemas, model configs, base text)."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"
MODELS_DIR = REPO_ROOT / "data" / "models"
BASE_TEXT = REPO_ROOT / "data" / "prompts" / "base.txt"
