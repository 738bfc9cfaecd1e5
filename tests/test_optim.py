"""Optimiser parameter groups (learning-rate multipliers per part, no decay for norms, biases and
embeddings) and the warm-up + cosine schedule."""

import logging

import pytest
import torch
from conftest import tiny_net
from monai.networks.nets import UNet

from emclip.workflows import network_part, param_groups, warmup_cosine


def by_name(groups):
    return {g["name"]: g for g in groups}


def test_groups_cover_each_trainable_parameter_once_with_its_part_rate(caplog):
    net = tiny_net(3, backbone="cpu-vit", freeze_text=False)
    with caplog.at_level(logging.INFO, logger="emclip.workflows"):
        groups = param_groups(net, 1e-3, 0.05, {"image": 0.1, "text": 0.5, "em": 2.0})
    names = {id(p): n for n, p in net.named_parameters()}
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in net.parameters() if p.requires_grad)
    rates = {"image": 1e-4, "text": 5e-4, "em": 2e-3, "decoder": 1e-3}
    for g in groups:
        part, decay = g["name"].split("/")
        assert {network_part(names[id(p)]) for p in g["params"]} == {part}
        assert g["lr"] == pytest.approx(rates[part])
        assert g["weight_decay"] == (0.05 if decay == "decay" else 0.0)
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]}
    decayed = {names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name in ("backbone.visual.class_embedding", "backbone.visual.positional_embedding",
                 "backbone.visual.ln_pre.weight", "em.conv_in.bias",
                 "text.text_model.token_embedding.weight", "text.text_model.positional_embedding"):
        assert name in no_decay, name
    assert {"backbone.visual.conv1.weight", "em.conv_in.weight", "text.text_model.text_projection"} <= decayed
    # the frozen logit scale and the attention pool's unused projections are not optimised
    assert not any("logit_scale" in n for n in no_decay | decayed)
    assert groups[0]["name"] == "decoder/decay"  # the rate MONAI's LrScheduleHandler prints
    logged = [r.getMessage() for r in caplog.records]
    for g in groups:
        assert any(m.startswith(f"parameter group {g['name']}: {len(g['params'])} tensors") for m in logged), g["name"]
    assert any("image/decay" in m and "lr 0.0001," in m for m in logged)


def test_zero_multiplier_and_frozen_text_leave_parts_out():
    net = tiny_net(3)  # text tower frozen and dropped: no text group
    names = by_name(param_groups(net, 1e-3, 0.0, {"image": 0.0}))
    assert not any(n.startswith(("image/", "text/")) for n in names)
    assert {"decoder/decay", "decoder/no_decay", "em/decay", "em/no_decay"} == set(names)


def test_bad_multipliers_name_the_key():
    net = tiny_net(3)
    with pytest.raises(ValueError, match=r"lr_multipliers.*unknown: \['backbone'\]"):
        param_groups(net, 1e-3, 0.0, {"backbone": 0.1})
    with pytest.raises(ValueError, match="lr_multipliers"):
        param_groups(net, 1e-3, 0.0, {"em": -1.0})
    with pytest.raises(ValueError, match="no trainable parameter"):
        param_groups(net, 1e-3, 0.0, dict.fromkeys(("image", "text", "em", "decoder"), 0.0))


def test_other_networks_get_one_part_with_the_no_decay_split():
    unet = UNet(2, 3, 3, channels=(8, 16), strides=(2,), num_res_units=1)
    wrapper = torch.nn.Module()  # stands for DistributedDataParallel, which keeps the network as `module`
    wrapper.module = unet
    groups = by_name(param_groups(wrapper, 1e-3, 0.01, {"image": 0.1}))
    assert set(groups) == {"all/decay", "all/no_decay"}
    assert all(g["lr"] == 1e-3 for g in groups.values())
    assert all(p.ndim > 1 for p in groups["all/decay"]["params"])
    assert all(p.ndim <= 1 for p in groups["all/no_decay"]["params"])


def epoch_rates(scheduler, optimizer, epochs):
    rates = []
    for _ in range(epochs):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_then_cosine_keeps_the_multipliers():
    params = [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))]

    def optimizer():
        return torch.optim.AdamW([{"params": params[:1], "lr": 1.0}, {"params": params[1:], "lr": 0.1}])

    opt = optimizer()
    plain = epoch_rates(warmup_cosine(opt, 6), opt, 6)
    reference = optimizer()
    expected = epoch_rates(torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=6), reference, 6)
    assert plain == expected  # 0 warm-up epochs: today's schedule
    opt = optimizer()
    rates = epoch_rates(warmup_cosine(opt, 6, warmup_epochs=2, warmup_start=0.1), opt, 6)
    first = [r[0] for r in rates]
    assert first[:3] == pytest.approx([0.1, 0.55, 1.0])
    assert first[3] < first[2] and first[5] < first[4] < first[3]  # cosine over the 4 epochs left
    assert all(r[1] == pytest.approx(r[0] * 0.1) for r in rates)
    with pytest.raises(ValueError, match="warmup_epochs=6"):
        warmup_cosine(optimizer(), 6, warmup_epochs=6)
    with pytest.raises(ValueError, match="warmup_start=0"):
        warmup_cosine(optimizer(), 6, warmup_epochs=2, warmup_start=0.0)
