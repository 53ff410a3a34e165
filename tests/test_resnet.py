"""neuralgrok.experiments.resnet is torchvision's ResNet-18: same state-dict keys and shapes, same outputs from the same
weights, same initialisation from the same seed. Compared with torchvision where it is installed (Debian's
leg has python3-torchvision); the checks that need no torchvision run everywhere."""
import pytest
import torch

from neuralgrok.experiments.resnet import BasicBlock, ResNet, resnet18

def bn(prefix, channels):
    return [(f"{prefix}.{name}", (channels,)) for name in ("weight", "bias", "running_mean", "running_var")] + [
        (f"{prefix}.num_batches_tracked", ())]


def expected_shapes():
    """torchvision's resnet18() state dict (ImageNet head) in its order: what resnet18-f37072fd.pth holds."""
    shapes = [("conv1.weight", (64, 3, 7, 7)), *bn("bn1", 64)]
    inplanes = 64
    for stage, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            prefix = f"layer{stage}.{block}"
            shapes += [(f"{prefix}.conv1.weight", (planes, inplanes if block == 0 else planes, 3, 3)),
                       *bn(f"{prefix}.bn1", planes), (f"{prefix}.conv2.weight", (planes, planes, 3, 3)),
                       *bn(f"{prefix}.bn2", planes)]
            if block == 0 and stage > 1:
                shapes += [(f"{prefix}.downsample.0.weight", (planes, inplanes, 1, 1)),
                           *bn(f"{prefix}.downsample.1", planes)]
        inplanes = planes
    return shapes + [("fc.weight", (1000, 512)), ("fc.bias", (1000,))]


def test_state_dict_has_torchvisions_keys_and_shapes_in_order():
    state = resnet18().state_dict()
    assert [(name, tuple(value.shape)) for name, value in state.items()] == expected_shapes()
    assert sum(p.numel() for p in resnet18().parameters()) == 11_689_512  # torchvision's documented count


def test_initialisation_is_torchvisions():
    model = resnet18(num_classes=10)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))
    conv = model.layer3[0].conv1.weight  # kaiming normal, fan_out mode: std sqrt(2 / (out * 3 * 3))
    assert conv.std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.05)
    zero = ResNet(num_classes=10, zero_init_residual=True)
    assert all(block.bn2.weight.abs().sum() == 0 for block in zero.modules() if isinstance(block, BasicBlock))


def test_forward_maps_small_images_to_logits_and_backpropagates():
    model = resnet18(num_classes=7)
    x = torch.randn(2, 3, 32, 32)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.fixture(scope="module")
def torchvision_resnet():
    try:
        from torchvision.models import resnet
    except Exception as error:  # absent, or built for another torch (PyPI's torchvision follows one torch release)
        pytest.skip(f"torchvision is not importable here ({type(error).__name__}: {error})")
    return resnet


def test_same_seed_gives_torchvisions_weights(torchvision_resnet):
    torch.manual_seed(123)
    theirs = torchvision_resnet.ResNet(torchvision_resnet.BasicBlock, [2, 2, 2, 2], num_classes=47)
    after_theirs = torch.rand(3)
    torch.manual_seed(123)
    ours = resnet18(num_classes=47)
    after_ours = torch.rand(3)
    their_state, our_state = theirs.state_dict(), ours.state_dict()
    assert list(our_state) == list(their_state)
    for name in their_state:
        assert torch.equal(our_state[name], their_state[name]), name
    assert torch.equal(after_ours, after_theirs)  # as many draws: what a run draws next is unchanged too


def test_torchvision_state_dict_loads_and_gives_identical_outputs(torchvision_resnet):
    torch.manual_seed(0)
    theirs = torchvision_resnet.resnet18()  # ImageNet head, random weights: the layout of resnet18-f37072fd.pth
    with torch.no_grad():  # non-trivial batch norm statistics, so that eval mode uses them
        for module in theirs.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    ours = resnet18()
    state = theirs.state_dict()
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}
    ours.load_state_dict(state)  # strict: same keys
    x = torch.randn(4, 3, 64, 64)
    for train in (False, True):
        theirs.train(train)
        ours.train(train)
        assert torch.equal(ours(x), theirs(x))
    x.requires_grad_(True)
    theirs.zero_grad()
    ours.zero_grad()
    their_out = theirs(x)
    our_out = ours(x)
    their_out.square().sum().backward()
    our_out.square().sum().backward()
    for (name, ours_p), (_, theirs_p) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert torch.equal(ours_p.grad, theirs_p.grad), name


def test_polygons_resnet18_is_ours_and_loads_a_torchvision_file(torchvision_resnet, tmp_path):
    from neuralgrok.experiments.polygons import NUM_CLASSES
    from neuralgrok.experiments.polygons import resnet18 as polygon_resnet18

    torch.manual_seed(1)
    path = tmp_path / "resnet18-imagenet-layout.pth"
    torch.save(torchvision_resnet.resnet18().state_dict(), path)
    model = polygon_resnet18(weights_path=path)  # the 1000-way head is replaced by a fresh 47-way one
    assert isinstance(model, ResNet) and model.fc.out_features == NUM_CLASSES
    state = torch.load(path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items() if not k.startswith("fc."))
