"""Model zoo: registry, the features/head split of Eq. 4-7, in-model normalisation, MACs."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ferd.models import FerdModel, count_macs, create_model, is_known_model, list_models

# Tiny widths keep every architecture's test fast on 2 CPU cores.
TINY = [
    ("wrn-10-1", {}),
    ("resnet18", {"width": 8}),
    ("resnet34", {"width": 4}),
    ("preactresnet18", {"width": 8}),
    ("preactresnet34", {"width": 4}),
    ("mobilenetv2", {"width": 0.25}),
    ("cnn-8", {}),
]


pytestmark = pytest.mark.usefixtures("one_thread_module")  # tiny models: one intra-op thread


CASES = [(name, kw, layer) for name, kw in TINY
         for layer in create_model(name, num_classes=10, **kw).layer_names]


def test_registry_lists_every_architecture() -> None:
    names = list_models()
    for name in ("resnet18", "resnet34", "preactresnet18", "preactresnet34", "mobilenetv2"):
        assert name in names
    for name in ("wrn-34-10", "wrn-16-2", "wrn-10-1", "cnn-32", "cnn-16", "resnet18"):
        assert is_known_model(name)
    assert not is_known_model("wrn-34") and not is_known_model("resnet19")


def test_unknown_architecture_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"arch: unknown architecture 'vgg16'.*resnet18"):
        create_model("vgg16", num_classes=10)
    with pytest.raises(ValueError, match="depth"):
        create_model("wrn-12-2", num_classes=10)


@pytest.mark.parametrize(("name", "kwargs"), TINY)
def test_every_model_is_a_ferd_model(name: str, kwargs: dict) -> None:
    model = create_model(name, num_classes=7, **kwargs).eval()
    assert isinstance(model, FerdModel)
    assert model.default_layer == model.layer_names[-1]
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 7)
    z = model.features(x)  # the default layer
    assert z.ndim == 4 and z.shape[1] == model.feature_channels
    with pytest.raises(ValueError, match="layer: expected one of"):
        model.features(x, "nope")


@pytest.mark.parametrize(("name", "kwargs", "layer"), CASES)
def test_head_of_features_is_forward_exactly(name: str, kwargs: dict, layer: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, **kwargs).eval()
    # non-trivial BN statistics so that a skipped or doubled BN would show
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        z = model.features(x, layer)
        assert torch.equal(model.head(z, layer), model(x))


def test_default_layer_is_the_prerelu_last_block() -> None:
    """For the last layer the feature is pre-ReLU (after the final BN) and the head starts with ReLU."""
    model = create_model("wrn-10-1", num_classes=10).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        z = model.features(x, "block3")
        assert (z < 0).any()
        assert torch.equal(z, model.bn1(model.block3(model.block2(model.block1(model.conv1(x))))))
        assert torch.equal(model.head(z), model.fc(F.relu(z).mean((2, 3))))


def test_wideresnet_matches_the_trades_reference() -> None:
    """Same weights in a transcription of TRADES' wideresnet.py give the same logits."""

    class RefBlock(nn.Module):
        def __init__(self, i: int, o: int, s: int) -> None:
            super().__init__()
            self.bn1, self.relu1 = nn.BatchNorm2d(i), nn.ReLU(inplace=True)
            self.conv1 = nn.Conv2d(i, o, 3, s, 1, bias=False)
            self.bn2, self.relu2 = nn.BatchNorm2d(o), nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(o, o, 3, 1, 1, bias=False)
            self.equalInOut = i == o
            self.convShortcut = (not self.equalInOut) and nn.Conv2d(i, o, 1, s, 0, bias=False) or None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.equalInOut:
                x = self.relu1(self.bn1(x))
            else:
                out = self.relu1(self.bn1(x))
            out = self.relu2(self.bn2(self.conv1(out if self.equalInOut else x)))
            out = self.conv2(out)
            return torch.add(x if self.equalInOut else self.convShortcut(x), out)

    class RefNB(nn.Module):
        def __init__(self, n: int, i: int, o: int, s: int) -> None:
            super().__init__()
            self.layer = nn.Sequential(*[RefBlock(i if k == 0 else o, o, s if k == 0 else 1) for k in range(n)])

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.layer(x)

    class RefWRN(nn.Module):
        def __init__(self, depth: int, w: int, nc: int) -> None:
            super().__init__()
            ch, n = [16, 16 * w, 32 * w, 64 * w], (depth - 4) // 6
            self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
            self.block1, self.block2, self.block3 = RefNB(n, ch[0], ch[1], 1), RefNB(n, ch[1], ch[2], 2), RefNB(n, ch[2], ch[3], 2)
            self.bn1, self.relu, self.fc, self.nChannels = nn.BatchNorm2d(ch[3]), nn.ReLU(inplace=True), nn.Linear(ch[3], nc), ch[3]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = self.block3(self.block2(self.block1(self.conv1(x))))
            out = F.avg_pool2d(self.relu(self.bn1(out)), 8)
            return self.fc(out.view(-1, self.nChannels))

    for depth, width in ((10, 1), (16, 2)):
        torch.manual_seed(1)
        ref = RefWRN(depth, width, 10).eval()
        for m in ref.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        ours = create_model(f"wrn-{depth}-{width}", num_classes=10).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
        x = torch.rand(4, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_normalisation_lives_inside_the_model() -> None:
    mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    torch.manual_seed(0)
    plain = create_model("cnn-8", num_classes=10).eval()
    normed = create_model("cnn-8", num_classes=10, mean=mean, std=std).eval()
    assert set(plain.state_dict()) == set(normed.state_dict())  # no normalisation keys
    normed.load_state_dict(plain.state_dict())
    x = torch.rand(4, 3, 32, 32)
    x_norm = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(normed(x), plain(x_norm))
        torch.testing.assert_close(normed.features(x, "block2"), plain.features(x_norm, "block2"))
        assert not torch.allclose(normed(x), plain(x))


def test_larger_inputs_work_through_global_pooling() -> None:
    model = create_model("preactresnet18", num_classes=200, width=4).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 200)


def test_count_macs_by_hand() -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    net.train()
    # conv 4·8·8 outputs × 3·3·3; depthwise 4·8·8 × 1·3·3; linear 256 × 5
    assert count_macs(net, (1, 3, 8, 8)) == 256 * 27 + 256 * 9 + 256 * 5
    assert count_macs(net, (2, 3, 8, 8)) == 2 * (256 * 27 + 256 * 9 + 256 * 5)
    assert net.training  # mode restored
    # cnn-32 on 32×32: 32·32²·27 + 64·16²·288 + 128·8²·576 + 128·10
    assert count_macs(create_model("cnn-32", num_classes=10)) == 884_736 + 4_718_592 + 4_718_592 + 1_280


def test_parameter_counts_of_the_paper_architectures() -> None:
    """Full-size models build and have the published sizes (WRN-34-10 46.2 M, RN-18 11.2 M, MN-V2 2.3 M)."""
    def millions(name: str) -> float:
        return sum(p.numel() for p in create_model(name, num_classes=10).parameters()) / 1e6

    assert millions("wrn-34-10") == pytest.approx(46.16, abs=0.01)
    assert millions("resnet18") == pytest.approx(11.17, abs=0.01)
    assert millions("mobilenetv2") == pytest.approx(2.30, abs=0.01)
    assert millions("wrn-16-2") == pytest.approx(0.69, abs=0.01)
