"""Where the tests find the checkout: the repository root, its committed models and the payload vectors."""
from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
MODELS = REPO / "models"
VECTORS = TESTS / "vectors"
