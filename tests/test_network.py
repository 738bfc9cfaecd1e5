import numpy as np
import open_clip
import pytest
import torch
from conftest import tiny_net

from emclip.export import export_onnx, export_torchscript
from emclip.losses import EMCLIPLoss
from emclip.networks import EMAggregation, EMCLIP, build_clip, load_prompts
from emclip.networks import standardize_images
from emclip.networks.backbone import InstanceBatchNorm, MixStyle
from emclip.workflows.checks import ConfigError, check_checkpoint


@pytest.mark.parametrize("backbone", ["cpu-resnet", "cpu-vit"])
@pytest.mark.parametrize("size", [(224, 224), (256, 320), (384, 384)])
def test_output_shape(backbone, size):
    net = tiny_net(3, backbone).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, *size))
    assert out.shape == (2, 3, *size)


def test_vit_pyramid_widths():
    """The ViT levels are narrowed as configured; full width keeps the earlier layout and keys."""
    narrow = tiny_net(3, "cpu-vit")  # width 192, default fractions 1/4, 1/2, 1, 1
    assert narrow.backbone.level_channels == [48, 96, 192, 192]
    levels, _ = narrow.backbone(torch.randn(1, 3, 224, 224))
    assert [tuple(t.shape[1:]) for t in levels] == [(48, 56, 56), (96, 28, 28), (192, 14, 14), (192, 7, 7)]
    full = tiny_net(3, "cpu-vit", vit_pyramid_widths=(1, 1, 1, 1))
    assert full.backbone.level_channels == [192] * 4
    pyramid = {k: v.shape for k, v in full.state_dict().items() if k.startswith("backbone.pyramid.")}
    assert pyramid == {f"backbone.pyramid.{k}": s for k, s in (
        ("0.0.weight", (192, 192, 2, 2)), ("0.0.bias", (192,)), ("0.2.weight", (192, 192, 2, 2)),
        ("0.2.bias", (192,)), ("1.weight", (192, 192, 2, 2)), ("1.bias", (192,)))}
    with pytest.raises(ValueError, match="vit_pyramid_widths needs four fractions"):
        tiny_net(3, "cpu-vit", vit_pyramid_widths=(0.5, 1.0))


@pytest.mark.parametrize("kind, norm", [("instance", torch.nn.InstanceNorm2d), ("group", torch.nn.GroupNorm)])
def test_per_image_norm_image_tower_keeps_the_affine_weights(kind, norm):
    torch.manual_seed(0)
    batch = tiny_net(3)
    torch.manual_seed(0)
    swapped = tiny_net(3, image_norm=kind)
    visual = swapped.backbone.visual
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in visual.modules())
    assert sum(isinstance(m, norm) for m in visual.modules()) == sum(
        isinstance(m, torch.nn.BatchNorm2d) for m in batch.backbone.visual.modules())
    torch.testing.assert_close(visual.bn1.weight, batch.backbone.visual.bn1.weight)
    torch.testing.assert_close(visual.layer4[0].bn3.bias, batch.backbone.visual.layer4[0].bn3.bias)
    # per-image statistics: in training too, an image's features do not depend on the rest of the batch
    x = torch.randn(2, 3, 64, 64)
    for net, independent in ((swapped, True), (batch, False)):
        net.train()
        with torch.no_grad():
            together, alone = net.backbone(x)[1], net.backbone(x[:1])[1]
        assert torch.allclose(together[:1], alone, atol=1e-5) == independent
    frozen = tiny_net(3, image_norm=kind, freeze_image=True).backbone.visual
    assert not any(p.requires_grad for p in frozen.parameters())  # freezing reaches the new norms
    with pytest.raises(ValueError, match="needs a ModifiedResNet"):
        tiny_net(3, "cpu-vit", image_norm=kind)


def test_stem_image_norm_swaps_the_stem_only():
    visual = tiny_net(3, image_norm="stem").backbone.visual
    assert all(isinstance(getattr(visual, f"bn{i}"), torch.nn.InstanceNorm2d) for i in (1, 2, 3))
    later = [m for name, m in visual.named_modules() if name.startswith("layer")]
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in later)
    assert not any(isinstance(m, torch.nn.InstanceNorm2d) for m in later)
    with pytest.raises(ValueError, match="image_norm must be one of batch, instance, group, stem, ibn"):
        tiny_net(3, image_norm="layer")


def test_ibn_image_norm_halves_the_first_norm_of_stages_1_to_3():
    torch.manual_seed(0)
    batch = tiny_net(3).backbone.visual
    torch.manual_seed(0)
    visual = tiny_net(3, image_norm="ibn").backbone.visual
    assert isinstance(visual.bn1, torch.nn.BatchNorm2d) and isinstance(visual.layer4[0].bn1, torch.nn.BatchNorm2d)
    for stage in ("layer1", "layer2", "layer3"):
        norm, old = getattr(visual, stage)[0].bn1, getattr(batch, stage)[0].bn1
        assert isinstance(norm, InstanceBatchNorm) and isinstance(getattr(visual, stage)[0].bn2, torch.nn.BatchNorm2d)
        assert norm.split == old.num_features // 2
        torch.testing.assert_close(torch.cat([norm.instance.weight, norm.batch.weight]), old.weight)
        torch.testing.assert_close(torch.cat([norm.instance.bias, norm.batch.bias]), old.bias)
    # the instance half is per image, the batch half is not
    norm = InstanceBatchNorm(8).train()
    x = torch.randn(4, 8, 5, 5) * torch.arange(1, 5.0).view(4, 1, 1, 1)
    together, alone = norm(x)[:1], norm(x[:1])
    torch.testing.assert_close(together[:, :4], alone[:, :4])
    assert not torch.allclose(together[:, 4:], alone[:, 4:])
    with pytest.raises(ValueError, match="ratio must be in"):
        InstanceBatchNorm(8, ratio=1.0)


def test_mixstyle_changes_the_style_keeps_the_content_and_is_off_in_eval():
    torch.manual_seed(0)
    mix = MixStyle(p=1.0, alpha=0.5)
    content = torch.randn(4, 8, 6, 6)
    x = content * torch.rand(4, 8, 1, 1).add(0.5) * 3 + torch.randn(4, 8, 1, 1)  # four styles

    def normalised(t):
        return (t - t.mean((2, 3), keepdim=True)) / t.std((2, 3), keepdim=True)

    y = mix.train()(x)
    assert not torch.allclose(y, x, atol=1e-2)
    torch.testing.assert_close(normalised(y), normalised(x), atol=1e-3, rtol=1e-3)
    same = x[:1].expand(4, -1, -1, -1)  # one style: nothing to mix
    torch.testing.assert_close(mix(same), same, atol=1e-3, rtol=1e-3)
    assert torch.equal(mix.eval()(x), x) and torch.equal(MixStyle(p=0.0).train()(x), x)
    net = tiny_net(3, mixstyle=1.0).train()
    assert net(torch.randn(2, 3, 64, 64))["pred"].shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="needs a ModifiedResNet"):
        tiny_net(3, "cpu-vit", mixstyle=0.5)


def test_input_norm_image_ignores_a_global_gain_and_offset(tmp_path):
    """A scanner that renders the whole image brighter or darker changes nothing with input_norm image."""
    torch.manual_seed(0)
    x = torch.rand(2, 1, 96, 96)
    shifted = 1.7 * x + 0.2
    net = tiny_net(4, in_channels=1, input_norm="image").eval()
    plain = tiny_net(4, in_channels=1).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if k != "input_standardized"})
    with torch.no_grad():
        torch.testing.assert_close(net(shifted), net(x), atol=1e-4, rtol=0)
        assert not torch.allclose(plain(shifted), plain(x), atol=1e-2)
    # two numbers per image: the relations inside an image, and the colours, are kept
    rgb = torch.rand(2, 3, 8, 8)
    z = standardize_images(rgb)
    torch.testing.assert_close(z.flatten(1).mean(1), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.flatten(1).std(1), torch.ones(2), atol=1e-3, rtol=0)
    torch.testing.assert_close(z[:, 0] - z[:, 1], (rgb[:, 0] - rgb[:, 1]) / rgb.flatten(1).std(1).view(2, 1, 1), atol=1e-3, rtol=0)
    assert torch.equal(standardize_images(torch.zeros(1, 1, 4, 4)), torch.zeros(1, 1, 4, 4))  # a blank image stays finite
    # weightless, so a marker keeps a checkpoint from loading into a network with the other setting
    with pytest.raises(RuntimeError, match="input_standardized"):
        plain.load_state_dict(net.state_dict())
    with pytest.raises(RuntimeError, match="input_standardized"):
        net.load_state_dict(plain.state_dict())
    torch.save(plain.state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ConfigError, match=r"1 missing \(e.g. 'input_standardized'\); use the backbone and network_def settings"):
        check_checkpoint(str(tmp_path / "plain.pt"), 4, net)
    with pytest.raises(ValueError, match="input_norm must be one of none, image; got 'batch'"):
        tiny_net(3, input_norm="batch")


def test_grayscale_input_and_training_outputs():
    net = tiny_net(4, in_channels=1).train()
    out = net(torch.randn(2, 1, 256, 256))
    assert out["pred"].shape == (2, 4, 256, 256)
    assert out["score_map"].shape == (2, 4, 8, 8)  # ModifiedResNet: stride 32


@pytest.mark.parametrize("use_em,text_guided", [(False, True), (True, False), (False, False)])
def test_ablations_change_structure(use_em, text_guided):
    net = tiny_net(3, use_em=use_em, text_guided=text_guided)
    assert isinstance(net.em, EMAggregation) == use_em
    assert hasattr(net.decoder, "cross") == text_guided
    net.train()
    out = net(torch.randn(1, 3, 224, 224))
    # without text guidance there is no score map, so training returns the logits alone
    assert isinstance(out, dict) == text_guided


def test_em_responsibilities_and_bases_unit_norm():
    em = EMAggregation(16, num_bases=5, iterations=3)
    x = torch.randn(2, 16, 40)
    mu = em.bases.t().unsqueeze(0).expand(2, -1, -1)
    z = em.e_step(x, mu)
    assert z.shape == (2, 40, 5)
    torch.testing.assert_close(z.sum(dim=2), torch.ones(2, 40))
    new_mu = em.m_step(x, z)
    torch.testing.assert_close(new_mu.norm(dim=1), torch.ones(2, 5))
    torch.testing.assert_close(em.bases.norm(dim=1), torch.ones(5))


def test_em_bases_move_only_in_training():
    em = EMAggregation(16, num_bases=4)
    before = em.bases.clone()
    em.eval()
    em(torch.randn(2, 16, 6, 6))
    assert torch.equal(em.bases, before)
    em.train()
    em(torch.randn(2, 16, 6, 6))
    assert not torch.allclose(em.bases, before)
    torch.testing.assert_close(em.bases.norm(dim=1), torch.ones(4))


def test_em_text_init_and_bad_init():
    seed = torch.nn.functional.normalize(torch.randn(3, 16), dim=1)
    em = EMAggregation(16, num_bases=8, init_bases=seed)
    torch.testing.assert_close(em.bases[:3], seed)
    with pytest.raises(ValueError, match="init_bases"):
        EMAggregation(16, num_bases=2, init_bases=seed)


def test_em_gradient_reaches_clustered_features():
    em = EMAggregation(8, num_bases=4)
    torch.nn.init.ones_(em.conv_out[1].weight)  # leave the zero-init start so the EM path counts
    em(torch.randn(2, 8, 5, 5)).sum().backward()
    assert em.conv_in.weight.grad is not None and em.conv_in.weight.grad.abs().sum() > 0


def test_same_seed_same_output():
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        net = tiny_net(3).eval()
        with torch.no_grad():
            outs.append(net(torch.ones(1, 3, 224, 224)))
    torch.testing.assert_close(outs[0], outs[1])


def test_frozen_towers_get_no_gradient():
    net = tiny_net(3, freeze_image=True).train()
    out = net(torch.randn(1, 3, 224, 224))
    EMCLIPLoss()(out, torch.randint(0, 3, (1, 1, 224, 224))).backward()
    visual = list(net.backbone.visual.parameters())
    assert all(p.grad is None for p in visual)
    assert net.decoder.lateral[0][0].weight.grad.abs().sum() > 0
    assert net.em.conv_out[1].weight.grad is not None
    # default: text tower frozen and dropped after encoding, only the buffer remains
    assert net.text.text_model is None
    assert not any(k.startswith("text.") and k != "text.embeddings" for k in net.state_dict())


def test_trainable_text_tower_gets_gradient():
    net = tiny_net(3, freeze_text=False).train()
    EMCLIPLoss()(net(torch.randn(1, 3, 224, 224)), torch.randint(0, 3, (1, 1, 224, 224))).backward()
    grads = [p.grad for p in net.text.text_model.transformer.parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_text_buffer_round_trip_without_text_tower(tmp_path):
    net = tiny_net(4, in_channels=1).eval()
    emb = net.text.embeddings.clone()
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(4))
    torch.save(net.state_dict(), tmp_path / "model.pt")
    bare = tiny_net(4, in_channels=1, encode_text=False).eval()
    assert torch.count_nonzero(bare.text.embeddings) == 0
    bare.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    torch.testing.assert_close(bare.text.embeddings, emb)
    x = torch.randn(1, 1, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(bare(x), net(x))


def test_prompt_buffer_recomputes_from_file(tmp_path):
    net = tiny_net(3)
    prompts = load_prompts("fundus")
    assert list(prompts) == ["background", "optic disc rim", "optic cup"]
    assert all(len(v) >= 8 for v in prompts.values())
    path = tmp_path / "p.json"
    path.write_text('{"classes": {"a": ["one"], "b": ["two"], "c": ["three"]}}')
    other = tiny_net(3, prompts=str(path))
    assert not torch.allclose(other.text.embeddings, net.text.embeddings)


def test_pretrained_local_path_loads_weights(tmp_path):
    from emclip.networks import get_preset

    torch.manual_seed(1)
    source = open_clip.CLIP(**get_preset("cpu-vit"))
    path = tmp_path / "clip.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    torch.manual_seed(2)
    loaded = build_clip(get_preset("cpu-vit"), pretrained=str(path))
    for (k, a), b in zip(source.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    net = EMCLIP(3, backbone=get_preset("cpu-vit"), pretrained=str(path), em_bases=4, decoder_channels=16)
    torch.testing.assert_close(net.backbone.visual.conv1.weight, source.visual.conv1.weight)


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone 'ViT-Q-99'"):
        build_clip("ViT-Q-99")
    net = tiny_net(3, backbone="cpu-vit").eval()
    with pytest.raises(ValueError, match=r"250x250 is not a multiple of 16.*240 or 256"):
        net(torch.randn(1, 3, 250, 250))
    with pytest.raises(ValueError, match="num_classes=4 but the prompt file has 3"):
        tiny_net(4, prompts="fundus")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        build_clip("cpu-vit", pretrained=str(tmp_path / "missing.pt"))


def test_loss_uses_aux_score_map():
    target = torch.randint(0, 3, (2, 1, 64, 64))
    logits = torch.randn(2, 3, 64, 64)
    score = torch.randn(2, 3, 8, 8)
    plain = EMCLIPLoss(aux_weight=0.0)({"pred": logits, "score_map": score}, target)
    with_aux = EMCLIPLoss(aux_weight=0.5)({"pred": logits, "score_map": score}, target)
    assert torch.isclose(plain, EMCLIPLoss()(logits, target))
    assert with_aux > plain


@pytest.mark.parametrize("backbone", ["cpu-resnet", "cpu-vit"])
def test_torchscript_and_onnx_match_eager(tmp_path, backbone):
    ort = pytest.importorskip("onnxruntime")
    net = tiny_net(3, backbone).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        ref = net(x)
    export_torchscript(net, tmp_path / "m.ts", (1, 3, 224, 224))
    ts = torch.jit.load(str(tmp_path / "m.ts"))
    with torch.no_grad():
        torch.testing.assert_close(ts(x), ref, atol=1e-4, rtol=0)
    export_onnx(net, tmp_path / "m.onnx", (1, 3, 224, 224))
    out = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(out, ref.numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "backbone,options",
    [("cpu-resnet", {"use_em": e, "text_guided": t}) for e in (True, False) for t in (True, False)]
    # the ViT towers share the ViT branch of the backbone: each flag value once, to keep the time down
    + [(b, {"use_em": e, "text_guided": not e}) for b in ("cpu-vit", "ViT-B-16") for e in (True, False)]
    # the finer decoder levels: the ResNet stem's stride-2 map, the light conv stem, per-level EM
    + [("cpu-resnet", {"output_stride": 2, "image_norm": "instance", "mixstyle": 0.5}), ("cpu-resnet", {"output_stride": 1, "text_guided": False, "image_norm": "ibn", "input_norm": "image"}),
       ("cpu-vit", {"output_stride": 1, "em_levels": [0, 2], "vit_pyramid_widths": (0.25, 0.5, 0.5, 0.25)})],
)
def test_torch_jit_script_matches_eager(tmp_path, backbone, options):
    """The Model Zoo exports by scripting: the scripted network, saved and loaded, equals eager."""
    net = tiny_net(3, backbone, encode_text=backbone != "ViT-B-16", **options).eval()
    torch.jit.save(torch.jit.script(net), str(tmp_path / "m.ts"))
    scripted = torch.jit.load(str(tmp_path / "m.ts"))
    with torch.no_grad():
        sizes = ((224, 224),) if backbone == "ViT-B-16" else ((224, 224), (160, 256))  # free, unlike a trace
        for size in sizes:
            x = torch.randn(1, 3, *size)
            torch.testing.assert_close(scripted(x), net(x), atol=1e-5, rtol=0)


def test_mc_dropout_passes_vary_and_leave_the_network_unchanged(tmp_path):
    """MONAI Label's epistemic scoring: `network_def#dropout` set, train mode, passes under no_grad."""
    plain = tiny_net(3)
    torch.save(plain.state_dict(), tmp_path / "model.pt")  # trained without dropout
    net = tiny_net(3, dropout=0.3)
    net.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))  # strict: no new weights
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(x), plain.eval()(x))  # eval mode: no dropout
        net.train()
        bases = net.em.bases.clone()
        passes = [net(x) for _ in range(2)]
    # logits, not the training dict; two samples differ; the EM bases did not move
    assert all(isinstance(p, torch.Tensor) and p.shape == (1, 3, 224, 224) for p in passes)
    assert not torch.allclose(passes[0], passes[1])
    assert torch.equal(net.em.bases, bases)
    # without dropout, train-mode passes are repeatable; with autograd on, training returns the dict
    with torch.no_grad():
        torch.testing.assert_close(plain.train()(x), plain(x))
    assert isinstance(net(x), dict)
