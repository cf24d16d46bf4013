"""nada.devices: one meaning of "same device" (index-less = the current device of its type)."""

from __future__ import annotations

import torch

from nada.devices import on_device, parse_device, same_device, trainable_copy


def current_is(index: int):
    return lambda device_type: index


def test_cuda_indices_are_compared_as_numbers_not_as_truth_values():
    cuda0, cuda1, cuda = torch.device("cuda:0"), torch.device("cuda:1"), torch.device("cuda")
    # The bug this replaces: `(a.index or current)` turned cuda:0 into the current device, so with
    # current device 1, cuda:0 and cuda:1 counted as one and the frozen generator stayed on the wrong GPU.
    assert not same_device(cuda0, cuda1, current_is(1))
    assert not same_device(cuda1, cuda0, current_is(1))
    assert not same_device(cuda0, cuda1, current_is(0))
    # An index-less device is the current one.
    assert same_device(cuda, cuda1, current_is(1)) and not same_device(cuda, cuda0, current_is(1))
    assert same_device(cuda, cuda0, current_is(0)) and not same_device(cuda, cuda1, current_is(0))
    assert same_device(cuda0, torch.device("cuda", 0), current_is(1))
    assert same_device(cuda, "cuda", current_is(3))


def test_types_differ_and_the_cpu_is_one_device():
    assert not same_device(torch.device("cpu"), torch.device("cuda:0"), current_is(0))
    assert same_device("cpu", torch.device("cpu"))
    assert parse_device("cpu") == torch.device("cpu") and parse_device("cuda:1") == torch.device("cuda", 1)


def test_on_device_returns_the_module_itself_when_already_there_and_never_moves_it():
    m = torch.nn.Linear(2, 2)
    assert on_device(m, torch.device("cpu")) is m
    assert on_device(torch.nn.ReLU(), "cpu") is not None  # no tensors: nothing to move
    with torch.inference_mode():
        frozen = torch.nn.Linear(2, 2)
    copy = trainable_copy(frozen, "cpu")
    assert copy is not frozen and not copy.weight.is_inference()
    assert torch.equal(copy.weight, frozen.weight)
