"""The exponential moving average of the weights (WeightAverage): off is the trained network,
on it follows the trained weights with the ramped decay and never trains itself."""

import types

import pytest
import torch
import torch.nn as nn

from emclip.workflows import WeightAverage
from emclip.workflows.checks import ConfigError


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))


def step(average, iteration):
    average(types.SimpleNamespace(state=types.SimpleNamespace(iteration=iteration)))


def test_off_is_the_trained_network_and_saves_nothing_extra():
    trained = net()
    average = WeightAverage(trained, 0.0)
    assert average.network is trained
    assert average.state_dict() == {}


def test_average_follows_the_ramped_decay_and_copies_counters():
    trained = net()
    average = WeightAverage(trained, 0.99)
    start = {k: v.clone() for k, v in trained.state_dict().items()}
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(1.0)
    trained.train()(torch.randn(2, 1, 8, 8))  # moves the batch-norm statistics and counter
    step(average, 1)
    decay = min(0.99, 2 / 11)
    for name, value in trained.state_dict().items():
        got = average.network.state_dict()[name]
        if value.is_floating_point():
            torch.testing.assert_close(got, decay * start[name] + (1 - decay) * value)
        else:
            assert torch.equal(got, value), name
    # the copy is frozen: no gradient reaches it, and it holds its own tensors
    assert not any(p.requires_grad for p in average.network.parameters())
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(average.network.parameters(), trained.parameters()))


def test_average_converges_to_constant_weights_and_round_trips():
    trained = net()
    average = WeightAverage(trained, 0.9)
    with torch.no_grad():
        trained[0].weight.fill_(0.5)
    for t in range(1, 200):
        step(average, t)
    torch.testing.assert_close(average.network[0].weight, trained[0].weight)
    other = WeightAverage(net(), 0.9)
    other.load_state_dict(average.state_dict())
    torch.testing.assert_close(other.network[0].weight, trained[0].weight)


def test_average_starts_from_weights_loaded_when_training_starts():
    """MONAI Label fine-tunes by loading the current model in a start handler, after the copy."""
    from ignite.engine import Engine, Events

    trained = net()
    average = WeightAverage(trained, 0.99)
    engine = Engine(lambda engine, batch: None)
    average.attach(engine)

    @engine.on(Events.STARTED)
    def load_checkpoint(_):
        with torch.no_grad():
            for p in trained.parameters():
                p.add_(1.0)

    engine.run([0, 1, 2], max_epochs=1)
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(average.network.state_dict()[name], value)


def test_ddp_like_wrapper_is_unwrapped():
    inner = net()
    wrapper = types.SimpleNamespace(module=inner)
    assert WeightAverage(wrapper, 0.0).network is inner


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5])
def test_bad_decay_names_the_key(decay):
    with pytest.raises(ConfigError, match="weight_average_decay"):
        WeightAverage(net(), decay)
