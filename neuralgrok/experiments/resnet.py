"""ResNet-18 without torchvision: torchvision's ``torchvision.models.resnet.ResNet`` with ``BasicBlock`` and
layers ``[2, 2, 2, 2]``, written out so that the polygon task needs no torchvision (whose PyPI builds are tied
to one torch release each).

It is torchvision's architecture exactly, for the options ResNet-18 uses (no groups, width 64, no dilation,
batch norm): the same modules under the same names, so a torchvision state dict (e.g. ``resnet18-f37072fd.pth``)
loads with the same keys and shapes and gives the same outputs; and the same initialisation, drawn in the same
order from the global RNG (every module's own ``reset_parameters`` while it is built, then Kaiming-normal
convolutions in ``modules()`` order, batch norm weight 1 and bias 0), so ``torch.manual_seed(s)`` followed by
:func:`resnet18` gives the weights torchvision's ``resnet18()`` gives after the same seed.
``tests/test_resnet.py`` checks both against torchvision where it is installed.

Standard ImageNet stem (7x7 stride-2 convolution, max pooling): at 64 px the last feature map is 2x2.
"""
from typing import Any
import torch
from torch import nn

__all__ = ["BasicBlock", "ResNet", "resnet18"]


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3x3 convolution with padding 1, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and a residual connection (``downsample`` when the shape changes)."""

    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
        super().__init__()
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet with :class:`BasicBlock`: ``layers`` blocks in each of the four stages (64, 128, 256,
    512 channels), then global average pooling and a linear head of ``num_classes``."""

    def __init__(self, layers=(2, 2, 2, 2), num_classes=1000, zero_init_residual=False):
        super().__init__()
        if len(layers) != 4:
            raise ValueError(f"layers={tuple(layers)} must give 4 stages")
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * BasicBlock.expansion, num_classes)

        # torchvision's initialisation, in its order (the draws above, by each module's constructor, come first)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:  # each residual branch starts as zero
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.constant_(m.bn2.weight, 0)

    def _make_layer(self, planes, blocks, stride=1):
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * BasicBlock.expansion, stride),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        for _ in range(1, blocks):
            layers.append(BasicBlock(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def resnet18(num_classes: int = 1000, **kwargs: Any) -> "ResNet":
    """ResNet-18, randomly initialised as torchvision's ``resnet18(weights=None, num_classes=...)``."""
    return ResNet((2, 2, 2, 2), num_classes=num_classes, **kwargs)
