"""The node tests' fixtures (standalone bridge, tiny generator, micro CLIP, a direction), reused here,
and one torch thread per test: these tests run many tiny steps, where thread hand-offs on a shared
2-core machine cost more than they save. The previous setting is restored afterwards."""

import pytest
import torch

from tests.nodes.conftest import bridge, tiny_clip, tiny_direction, tiny_generator  # noqa: F401


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
