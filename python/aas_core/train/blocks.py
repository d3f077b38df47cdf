"""A backbone cut in two: a frozen "stem" (everything before its last N blocks) and a
trainable "tail" (the last N blocks, the layers after them and the pooling).

``aas train --train-blocks N`` runs the stem once per image and mirror image
(:mod:`aas_core.train.activations` caches what it returns) and trains only the
tail and the neck on those activations.

What a "block" is:

- EfficientNet-Lite: an MBConv block (16 in Lite0, 20 in Lite2); the tail
  also holds the 1x1 head convolution;
- our ResNets (torchvision's layout): a residual block of layer1..layer4
  (ResNet-50: 3 + 4 + 6 + 3; ``N=3`` is layer4);
- ``tiny``: one of its four conv-BN-ReLU blocks;
- timm models: the items of their ``blocks``, ``stages`` or ``layers``
  sequence (nested sequences flattened one level; timm ResNets: the residual
  blocks of layer1..layer4). The stem runs the model's ``forward_features``
  up to the first tail block (a hook stops it there), the tail runs the
  blocks, then the modules that ``forward_features`` calls after them (found
  by watching one call), then ``forward_head``. The cut is checked on a
  random image: where the tail does not reproduce the model's own output,
  the model is refused (it does something between the blocks that the cut
  cannot see).
"""

from __future__ import annotations

from ._runtime import require_torch

torch = require_torch("aas_core.train.blocks")
nn = torch.nn
F = torch.nn.functional

__all__ = ["BlockSplit", "count_blocks", "split_backbone"]


class _Stop(Exception):  # noqa: N818 - a control-flow signal, not an error
    def __init__(self, value):
        super().__init__()
        self.value = value


def _sequence(module):
    """The children of a sequential container, nested sequences flattened one level."""
    out = []
    for child in module.children():
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            out.extend(child.children())
        else:
            out.append(child)
    return out


def _timm_blocks(trunk):
    """(blocks, name of the container(s) they sit in) of a timm-style model, or None."""
    if all(hasattr(trunk, f"layer{i}") for i in range(1, 5)):
        blocks = [b for i in range(1, 5) for b in getattr(trunk, f"layer{i}").children()]
        return blocks, ["layer1", "layer2", "layer3", "layer4"]
    for name in ("blocks", "stages", "layers"):
        container = getattr(trunk, name, None)
        if isinstance(container, (nn.Sequential, nn.ModuleList)):
            return _sequence(container), [name]
    return None


def _blocks_of(trunk):
    from .architectures import ResNet, TinyNet
    from .efficientnet import EfficientNetLite

    if isinstance(trunk, EfficientNetLite):
        return list(trunk._blocks)
    if isinstance(trunk, ResNet):
        return [b for i in range(1, 5) for b in getattr(trunk, f"layer{i}")]
    if isinstance(trunk, TinyNet):
        return list(trunk.features)
    if hasattr(trunk, "forward_features") and hasattr(trunk, "forward_head"):
        found = _timm_blocks(trunk)
        if found is not None:
            return found[0]
    return None


def count_blocks(trunk):
    """The number of blocks ``--train-blocks`` may train, or None where the backbone cannot
    be cut (a TorchScript file, a model of another structure)."""
    blocks = _blocks_of(trunk)
    return None if blocks is None else len(blocks)


class BlockSplit:
    """``stem(x)``: the activations entering the last ``n`` blocks (no gradient, eval mode);
    ``tail(a)``: the pooled features from those activations (the trainable part).

    The modules stay the trunk's own: training the tail trains the trunk's last
    blocks, and the trunk as a whole still maps images to features.
    """

    def __init__(self, trunk, n: int):
        blocks = _blocks_of(trunk)
        if blocks is None:
            raise ValueError(
                f"'train_blocks' (--train-blocks) {n}: the {_name(trunk)} backbone cannot be cut "
                "into blocks; give 0 (its head alone) or 'all'."
            )
        if not 1 <= n <= len(blocks):
            raise ValueError(
                f"'train_blocks' (--train-blocks) must be 'all' or 0..{len(blocks)} for the "
                f"{_name(trunk)} backbone ({len(blocks)} blocks); got {n}."
            )
        self.trunk, self.n, self.n_blocks = trunk, n, len(blocks)
        self.first = len(blocks) - n
        self.blocks = blocks
        self._after = None
        from .architectures import ResNet, TinyNet
        from .efficientnet import EfficientNetLite

        if isinstance(trunk, EfficientNetLite):
            self.kind = "efficientnet"
            self.tail_modules = [*blocks[self.first :], trunk._conv_head, trunk._bn1]
        elif isinstance(trunk, (ResNet, TinyNet)):
            self.kind = "plain"
            self.tail_modules = list(blocks[self.first :])
        else:
            self.kind = "timm"
            self._after, unused = _modules_after(trunk, _timm_blocks(trunk)[1], blocks)
            # forward_head's modules (pooling, norm, head) are those forward_features never calls
            self.tail_modules = [*blocks[self.first :], *self._after, *unused]
            self._check()

    def parameters(self):
        seen = set()
        for m in self.tail_modules:
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield p

    def stem_parameters(self):
        tail = {id(p) for p in self.parameters()}
        return [p for p in self.trunk.parameters() if id(p) not in tail]

    def freeze_stem(self):
        for p in self.stem_parameters():
            p.requires_grad_(False)

    def set_train(self, mode: bool):
        """The trunk in eval mode (the stem's BatchNorm statistics as pretrained), the tail's
        modules in ``mode``."""
        self.trunk.eval()
        for m in self.tail_modules:
            m.train(mode)

    @torch.no_grad()
    def stem(self, x):
        # the stem's BatchNorm as pretrained, whatever mode the caller left the model in
        modes = [(m, m.training) for m in self.trunk.modules()]
        self.trunk.eval()
        try:
            return self._stem(x)
        finally:
            for m, training in modes:
                m.training = training

    def _stem(self, x):
        t = self.trunk
        if self.kind == "efficientnet":
            x = F.relu6(t._bn0(t._conv_stem(x)))
            for block in self.blocks[: self.first]:
                x = block(x)
            return x
        if self.kind == "plain":
            from .architectures import ResNet

            if isinstance(t, ResNet):
                x = t.maxpool(t.relu(t.bn1(t.conv1(x))))
            for block in self.blocks[: self.first]:
                x = block(x)
            return x
        handle = self.blocks[self.first].register_forward_pre_hook(_raise_input)
        try:
            t.forward_features(x)
        except _Stop as stop:
            return stop.value
        finally:
            handle.remove()
        raise ValueError(f"train_blocks: the {_name(t)} backbone never reached its block.")

    def tail(self, a):
        t = self.trunk
        for block in self.blocks[self.first :]:
            a = block(a)
        if self.kind == "efficientnet":
            return F.relu6(t._bn1(t._conv_head(a))).mean(dim=(2, 3))
        if self.kind == "plain":
            return a.mean(dim=(2, 3))
        for m in self._after:
            a = m(a)
        return t.forward_head(a)

    def __call__(self, a):
        return self.tail(a)

    @torch.no_grad()
    def _check(self):
        """The tail on the stem's output must give the model's own features."""
        modes = [(m, m.training) for m in self.trunk.modules()]
        self.trunk.eval()
        try:
            size = getattr(getattr(self.trunk, "preprocess", None), "size", None) or (224, 224)
            x = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
            want = self.trunk(x)
            got = self.tail(self.stem(x))
        finally:
            for m, training in modes:
                m.training = training
        if got.shape != want.shape or not torch.allclose(got, want, atol=1e-4, rtol=1e-3):
            raise ValueError(
                f"train_blocks: the {_name(self.trunk)} backbone does not cut into a stem and "
                "its last blocks (its own output differs from the blocks run in turn); train "
                "it whole (train_blocks='all') or its head alone (train_blocks=0)."
            )


def _raise_input(module, args):
    raise _Stop(args[0])


def _name(trunk):
    return getattr(trunk, "arch", None) or type(trunk).__name__


def _modules_after(trunk, containers, blocks):
    """The direct children of ``trunk`` that ``forward_features`` calls after the last of
    ``blocks``, in call order, and those it never calls (found by watching one call)."""
    order = []
    handles = [
        child.register_forward_hook(lambda m, i, o, name=name: order.append(name))
        for name, child in trunk.named_children()
    ]
    # a container's hook fires after its blocks ran: mark the blocks themselves
    handles += [b.register_forward_hook(lambda m, i, o: order.append(None)) for b in blocks]
    modes = [(m, m.training) for m in trunk.modules()]
    trunk.eval()
    try:
        size = getattr(getattr(trunk, "preprocess", None), "size", None) or (224, 224)
        with torch.no_grad():
            trunk.forward_features(torch.zeros(1, 3, *size))
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
    last = max((i for i, name in enumerate(order) if name is None), default=-1)
    if last < 0:
        raise ValueError(
            f"'train_blocks' (--train-blocks): the {_name(trunk)} backbone never runs its "
            "blocks in forward_features; give 0 (its head alone) or 'all'."
        )
    after = [name for name in order[last + 1 :] if name is not None and name not in containers]
    unused = [
        m for name, m in trunk.named_children() if name not in order and name not in containers
    ]
    return [getattr(trunk, name) for name in after], unused


def split_backbone(trunk, n: int) -> BlockSplit:
    """The stem and the tail of the last ``n`` blocks (``1 <= n <= count_blocks(trunk)``)."""
    return BlockSplit(trunk, n)
