"""`--pretrained imagenet` through the standard caches, offline, with caches built here: the Hugging
Face hub cache (timm's published weights) and the torch hub cache (weights timm fetches by URL)."""

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.models import adapt_input_conv

from hpa import models
from hpa.errors import WeightsError


def hf_cache(root, repo_id: str, state: dict) -> None:
    """A Hugging Face hub cache holding `state` as repo_id's model.safetensors (refs + snapshot layout)."""
    commit = "a" * 40
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(repo / "snapshots" / commit / "model.safetensors"))


def three_channel(timm_name: str) -> dict:
    torch.manual_seed(3)
    return timm.create_model(timm_name, pretrained=False, num_classes=1000).state_dict()


def assert_loaded(enc, state, first_conv: str) -> None:
    own = enc.state_dict()
    for k, v in state.items():
        if k not in own:
            assert k.startswith(("fc.", "last_linear.")), k  # the 1000-way classifier is not used
            continue
        want = adapt_input_conv(4, v) if k == first_conv else v
        assert torch.equal(own[k], want), k


def test_imagenet_weights_from_the_hugging_face_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    assert hf.HF_HUB_OFFLINE  # tests never reach the network
    state = three_channel("resnet18")
    hf_cache(tmp_path, "timm/resnet18.a1_in1k", state)
    m = models.build_model("resnet18", pretrained="imagenet", normalize="imagenet")
    assert_loaded(m.encoder, state, "conv1.weight")
    assert m.encoder.conv1.weight[:, 3].equal(m.encoder.conv1.weight[:, 0])  # yellow starts as red's kernel
    # the input statistics of those weights, yellow taking red's
    assert m.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406, 0.485])
    assert m.std.flatten().tolist() == pytest.approx([0.229, 0.224, 0.225, 0.229])
    x = torch.rand(2, 4, 64, 64)
    plain = models.build_model("resnet18", pretrained="imagenet").eval()
    plain.load_state_dict(m.state_dict())  # the same weights, head included
    m.eval()
    with torch.no_grad():
        assert torch.allclose(m(x), plain((x - m.mean) / m.std), atol=1e-5)
    assert "mean" not in m.state_dict()  # rebuilt from the config, not stored


def test_offline_without_the_weights_says_how_to_get_them(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsError) as e:
        models.build_model("resnet18", pretrained="imagenet")
    msg = str(e.value)
    assert "not in the Hugging Face cache" in msg and "hf_hub_download('timm/resnet18.a1_in1k'" in msg
    assert "--pretrained FILE or none" in msg and "\n" not in msg
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        models.build_model("tiny_cnn", pretrained="imagenet")


def test_url_weights_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(WeightsError, match="not in the torch hub cache .* HF_HUB_OFFLINE is set; download https"):
        models.build_model("se_resnext50", pretrained="imagenet")
    state = three_channel("legacy_seresnext50_32x4d")
    url = timm.models.get_pretrained_cfg("legacy_seresnext50_32x4d").url
    (tmp_path / "checkpoints").mkdir()
    torch.save(state, tmp_path / "checkpoints" / url.rsplit("/", 1)[1])
    m = models.build_model("se_resnext50", pretrained="imagenet")
    assert_loaded(m.encoder, state, "layer0.conv1.weight")


def test_none_means_random_initialisation():
    torch.manual_seed(0)
    a = models.build_model("resnet18", pretrained="none")
    torch.manual_seed(0)
    b = models.build_model("resnet18", pretrained=None)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
