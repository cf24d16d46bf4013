"""The node tests' fixtures (standalone bridge, tiny generator, micro CLIP, a direction), reused here."""

from tests.nodes.conftest import bridge, tiny_clip, tiny_direction, tiny_generator  # noqa: F401
