"""Any backbone by name: torchvision and timm models, widths from the model, weights
offline (hub caches or a file), normalisation from the model's config, PackNet."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import DEMO

from benchmarks.errors import UserError
from experiments.cli import main
from experiments.config import load_config
from models import build_model
from models.backbones import build_backbone
from strategies.packnet import PackNetModel


def tiny(root: Path, *extra: str) -> list[str]:
    return [f"stream.EVA.root={root / 'EVA'}", f"stream.AVA.root={root / 'AVA'}",
            "data.image_size=64", "train.epochs=1", "log.progress=false", "log.plots=false",
            "eval.validation=false", "model.pretrained=false", *extra]


def test_torchvision_width_from_the_model_and_only_the_final_linear_removed():
    bb = build_backbone("convnext_tiny")
    assert bb.features == 768 and bb.classifier == "classifier.2"
    assert isinstance(bb.net.classifier[0], torch.nn.LayerNorm)  # ConvNeXt's norm stays
    assert bb.net(torch.rand(2, 3, 64, 64)).shape == (2, 768)
    vit = build_backbone("vit_b_16")
    assert vit.features == 768 and vit.classifier == "heads.head" and vit.fixed_size == 224


def test_timm_width_and_normalisation_from_its_config():
    bb = build_backbone("timm/resnet18")
    assert bb.features == 512 and bb.source == "timm"
    assert bb.net(torch.rand(1, 3, 64, 64)).shape == (1, 512)
    vit = build_model("timm/vit_tiny_patch16_224.augreg_in21k", pretrained=False).eval()
    assert vit.mean == (0.5, 0.5, 0.5) and vit.std == (0.5, 0.5, 0.5)  # not ImageNet's
    with torch.no_grad():  # dynamic image size: no resize to 224 needed
        assert vit(torch.rand(2, 3, 96, 128)).shape == (2,)
    x = torch.rand(1, 3, 32, 32)
    assert torch.allclose(vit.as_input(x), (x - 0.5) / 0.5)


@pytest.mark.parametrize("head,heads", [("similarity", "shared"), ("regression", "shared"),
                                        ("similarity", "per_task")])
def test_every_head_on_a_timm_and_a_torchvision_model(head, heads):
    for name in ("timm/resnet18", "convnext_tiny"):
        model = build_model(name, head=head, heads=heads).eval()
        with torch.no_grad():
            out = model(torch.rand(3, 3, 64, 64), torch.zeros(3, dtype=torch.long)) \
                if heads == "per_task" else model(torch.rand(3, 3, 64, 64))
        assert out.shape == (3,)


@pytest.mark.parametrize("name", ["convnext_tiny", "swin_t", "timm/vit_tiny_patch16_224"])
def test_bf16_channels_last_matches_fp32(name):
    """train.amp's path (bf16 autocast, channels_last), here on the CPU's autocast: the
    scores agree with fp32 and gradients reach the first layer."""
    torch.manual_seed(0)
    model = build_model(name, pretrained=False).eval()
    x = torch.rand(2, 3, 96, 96)
    reference = model(x)
    model.to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = model(x.contiguous(memory_format=torch.channels_last))
    assert scores.shape == reference.shape and torch.isfinite(scores).all()
    assert torch.allclose(scores.float(), reference, atol=0.01)  # seen: ~1e-3
    scores.float().sum().backward()
    first = next(p for p in model.backbone.parameters() if p.dim() > 1)
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_weights_from_a_file_strictly_classifier_ignored(tmp_path):
    torch.manual_seed(1)
    from torchvision.models import resnet18

    full = resnet18()  # with its fc: the classifier's keys must be ignored
    torch.save(full.state_dict(), tmp_path / "r18.pth")
    bb = build_backbone("resnet18", weights=str(tmp_path / "r18.pth"))
    assert torch.equal(bb.net.conv1.weight, full.conv1.weight)
    assert len(bb.info["sha256"]) == 64 and bb.info["weights_file"].endswith("r18.pth")
    import timm

    t = timm.create_model("resnet18")
    torch.save(t.state_dict(), tmp_path / "t18.pth")
    tb = build_backbone("timm/resnet18", weights=str(tmp_path / "t18.pth"))
    assert torch.equal(tb.net.conv1.weight, t.conv1.weight)
    with pytest.raises(UserError, match="does not fit backbone 'mobilenet_v2'"):
        build_backbone("mobilenet_v2", weights=str(tmp_path / "r18.pth"))
    torch.save({"net": full}, tmp_path / "pickled.pth")  # a module, not tensors
    with pytest.raises(UserError, match=r"pickled.pth holds pickled objects .*state_dict\(\)"):
        build_backbone("resnet18", weights=str(tmp_path / "pickled.pth"))
    with pytest.raises(UserError, match="nothere.pth not found"):
        build_backbone("resnet18", weights=str(tmp_path / "nothere.pth"))
    with pytest.raises(UserError, match="is a folder; give the weight file in it"):
        build_backbone("resnet18", weights=str(tmp_path))
    (tmp_path / "notes.pth").write_text("not weights")
    with pytest.raises(UserError, match="notes.pth is not a PyTorch or safetensors weight file"):
        build_backbone("resnet18", weights=str(tmp_path / "notes.pth"))


def test_missing_pretrained_weights_name_the_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError) as info:
        build_backbone("convnext_tiny", pretrained=True)
    msg = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / "convnext_tiny-983f1562.pth") in msg
    assert "get_model('convnext_tiny', weights='IMAGENET1K_V1')" in msg and "\n" not in msg
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(UserError) as info:
        build_backbone("timm/resnet18", pretrained=True)
    msg = str(info.value)
    assert "timm/resnet18.a1_in1k" in msg and "model.safetensors" in msg
    assert str(tmp_path / "hf") in msg and "hf download timm/resnet18.a1_in1k" in msg


def test_weights_tags_pick_the_weights_or_say_what_exists(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    for name, tag in (("timm/resnet18", "tv_in1k"), ("timm/resnet18.tv_in1k", None)):
        with pytest.raises(UserError, match=r"hub repository timm/resnet18\.tv_in1k,"):
            build_backbone(name, pretrained=True, weights_tag=tag)
    with pytest.raises(UserError, match="no pretrained tag 'BOGUS'; its tags: a1_in1k, "):
        build_backbone("timm/resnet18.BOGUS")  # checked with the name, pretrained or not
    with pytest.raises(UserError, match="names the tag 'a1_in1k' and model.weights_tag=tv_in1k"):
        build_backbone("timm/resnet18.a1_in1k", pretrained=True, weights_tag="tv_in1k")
    with pytest.raises(UserError, match="model.pretrained is false; set model.pretrained=true"):
        build_backbone("resnet50", weights_tag="IMAGENET1K_V2")  # a tag is never ignored
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UserError) as info:  # only the V1 file comes from `make weights`
        build_backbone("mobilenet_v2", pretrained=True, weights_tag="IMAGENET1K_V2")
    assert "make weights" not in str(info.value) and "IMAGENET1K_V2" in str(info.value)
    with pytest.raises(UserError, match=r"\(`make weights` installs it\)"):
        build_backbone("mobilenet_v2", pretrained=True)


def test_timm_weights_from_the_hugging_face_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(2)
    t = timm.create_model("resnet18")
    repo = tmp_path / "hf" / "models--timm--resnet18.a1_in1k"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    save_file(t.state_dict(), str(snap / "model.safetensors"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    bb = build_backbone("timm/resnet18", pretrained=True)
    assert torch.equal(bb.net.conv1.weight, t.conv1.weight)
    assert bb.info["weights_tag"] == "timm/resnet18.a1_in1k"


def test_unknown_names_fail_before_any_data_is_read(tmp_path, capsys):
    args = ["run", str(DEMO), "--out", str(tmp_path / "r"), "stream.EVA.root=/nowhere"]
    assert main([*args, "model.backbone=resnet_nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown backbone 'resnet_nope'" in err and "iqacl models --list" in err
    assert "did you mean resnet50" in err  # close names first
    assert main([*args, "model.backbone=timm/convnext_nan"]) == 2
    err = capsys.readouterr().err
    assert "unknown timm model 'convnext_nan'" in err and "convnext_nano" in err
    assert main([*args, "model.backbone=zzz"]) == 2
    assert "did you mean" not in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_fixed_size_models_say_what_they_need():
    from experiments.run import model_from_config

    cfg = load_config(DEMO, ["model.backbone=vit_b_16", "model.pretrained=false"])
    with pytest.raises(UserError, match="data.image_size=224"):
        model_from_config(cfg)
    crop = load_config(DEMO, ["model.backbone=vit_b_16", "model.pretrained=false",
                              "data.image_size=224", "data.transform=crop"])
    with pytest.raises(UserError, match="data.crop_eval=five_crop"):
        model_from_config(crop)


def test_packnet_prunes_attention_and_keeps_every_norm_per_task():
    vit = PackNetModel.wrap(build_model("vit_b_16", heads="per_task"))
    assert "encoder.layers.encoder_layer_0.self_attention.in_proj_weight" in vit.weights
    assert "encoder.layers.encoder_layer_0.self_attention.out_proj.weight" in vit.weights
    assert "encoder.layers.encoder_layer_0.ln_1.weight" in vit.norm_keys  # LayerNorm
    assert "class_token" in vit.shared
    shares = vit.shares()
    assert abs(shares["prunable"] + shares["shared_frozen"] + shares["per_task_norms"] - 1) \
        < 1e-9
    assert shares["prunable"] > 0.95
    timm_vit = PackNetModel.wrap(build_model("timm/vit_tiny_patch16_224", heads="per_task"))
    assert "blocks.0.attn.qkv.weight" in timm_vit.weights
    assert "blocks.0.norm1.weight" in timm_vit.norm_keys


def test_a_torchvision_and_a_timm_model_through_a_short_stream(tiny_demo, tmp_path):
    """The issue's two runs, small; the timm one with PackNet, the other a frozen backbone
    with cached features."""
    assert main(["run", str(DEMO), "--out", str(tmp_path / "cx"),
                 *tiny(tiny_demo, "model.backbone=convnext_tiny", "model.freeze_backbone=true",
                       "train.amp=true")]) == 0
    r = json.loads((tmp_path / "cx" / "results.json").read_text())
    assert len(r["matrices"]["srcc"]) == 2 and r["model"]["name"] == "convnext_tiny"
    assert r["model"]["features"] == 768
    assert r["precision"] == "fp32"  # train.amp takes effect on CUDA only
    assert main(["run", str(DEMO), "--out", str(tmp_path / "tm"),
                 *tiny(tiny_demo, "model.backbone=timm/resnet18", "strategy.name=packnet",
                       "train.epochs=2")]) == 0
    r = json.loads((tmp_path / "tm" / "results.json").read_text())
    assert r["model"]["source"] == "timm" and r["uses_task_labels"]
    shares = r["model"]["packnet"]
    assert set(shares["prunable_owned_by_task"]) == {"0", "1"}
    # Nothing forgotten: EVA's scores after AVA are EVA's after EVA, to the bit (whatever
    # the untrained network's scores are on this machine).
    eva = [pd.read_csv(tmp_path / "tm" / "predictions" / stage / "EVA.csv")
           for stage in ("after_0", "after_1")]
    assert eva[0].equals(eva[1])


def test_input_sizes_a_backbone_cannot_take_stop_the_run_first(tmp_path, capsys):
    from experiments.run import model_from_config

    vit = load_config(DEMO, ["model.backbone=timm/vit_tiny_patch16_224",
                             "model.pretrained=false", "data.image_size=100"])
    model_from_config(vit)  # 100 px is no multiple of the patch: timm pads it
    small = load_config(DEMO, ["model.backbone=inception_v3", "model.pretrained=false",
                               "data.image_size=64"])
    with pytest.raises(UserError, match=r"'inception_v3' cannot take 64 x 64 px images \("):
        model_from_config(small)
    with pytest.raises(UserError, match="has no final Linear classifier"):
        build_backbone("squeezenet1_1")  # refused by name, before building it
    args = ["run", str(DEMO), "--out", str(tmp_path / "r"), "stream.EVA.root=/nowhere",
            "model.pretrained=false", "strategy.name=packnet", "train.epochs=1"]
    assert main(args) == 2  # a strategy's own checks come before the model and data
    assert "post_prune_epochs (1) must be less than train.epochs (1)" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_models_command_lists_and_measures(capsys):
    assert main(["models", "--list", "convnext_n"]) == 0
    out = capsys.readouterr().out.split()
    assert "timm/convnext_nano" in out and "convnext_tiny" not in out
    assert main(["models", "--list", "resnet5*"]) == 0
    out = capsys.readouterr().out.split()
    assert "resnet50" in out and "timm/resnet50" in out
    assert main(["models", "--list", "squeezenet"]) == 0  # refused names are not offered
    assert "squeezenet1_0" not in capsys.readouterr().out
    assert main(["models", "--list", "vit_base_patch16_clip_224", "--tags"]) == 0
    assert "timm/vit_base_patch16_clip_224.openai" in capsys.readouterr().out.split()
    assert main(["models", "timm/resnet18", "--format", "csv", "--repeats", "1",
                 "--image-size", "32"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("backbone,embedding width") and lines[1].startswith(
        "timm/resnet18,512,")


@pytest.mark.slow
def test_the_models_refused_by_name_are_exactly_those_without_a_linear():
    from torchvision import models as tvm

    from models.backbones import CONV_CLASSIFIER, torchvision_names

    no_linear = {n for n in torchvision_names() if not any(
        isinstance(m, torch.nn.Linear) for m in tvm.get_model(n).modules())}
    assert no_linear == CONV_CLASSIFIER
