"""timm models and the Hugging Face hub: building them, their preprocessing, clear errors.

timm and huggingface_hub stay optional: nothing here imports them before a
timm model is asked for, and each failure says what to do -- install timm,
or (offline, not cached) how to pass a local weights file instead.
"""

from __future__ import annotations

import os
from pathlib import Path

from .._files import file_sha256
from ._runtime import require_torch
from .transforms import Preprocess

torch = require_torch("aas_core.train.hub")

__all__ = ["import_timm", "pretrained_timm", "timm_model", "timm_preprocess"]

_TIMM_HINT = (
    "pip install timm (it needs torchvision built for your torch: on a CPU-only torch from "
    "pytorch.org install the matching torchvision from there too)"
)
# huggingface_hub's exceptions (by class name, to work across its versions)
_NOT_CACHED = {"LocalEntryNotFoundError", "OfflineModeIsEnabled"}
_NOT_ON_HUB = {"RepositoryNotFoundError", "RevisionNotFoundError", "EntryNotFoundError"}
_GATED = {"GatedRepoError"}
_NETWORK = {"ConnectionError", "ConnectError", "URLError", "TimeoutException", "Timeout"}
_NETWORK |= {"HfHubHTTPError", "HTTPError"}


def import_timm(what: str):
    """``import timm``, or an ImportError saying ``what`` needs it and how to install it."""
    try:
        import timm
    except ImportError as exc:
        raise ImportError(
            f"{what} needs timm, which is not installed or cannot be imported ({exc}); "
            f"{_TIMM_HINT}."
        ) from None
    return timm


def _hub_cache() -> str:
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.environ[var]
    home = os.environ.get("HF_HOME") or os.path.join("~", ".cache", "huggingface")
    return os.path.join(os.path.expanduser(home), "hub")


def _chain(exc):
    """The exception and its causes / contexts, outermost first."""
    seen = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _names(exc) -> set:
    return {cls.__name__ for e in _chain(exc) for cls in type(e).__mro__}


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def hub_error(exc, name: str, what: str):
    """A ValueError that says why the timm model ``name`` could not be had, or None.

    Offline / not cached, unknown repository, gated repository, a network
    failure, or timm's "unknown model" / "no pretrained weights".
    """
    names = _names(exc)
    local = (
        f"--arch timm:ARCHITECTURE --weights FILE (a local state-dict file; {what} never "
        "needs the network for it)"
    )
    if names & _NOT_CACHED:
        return ValueError(
            f"cannot load timm:{name}: it is not in the Hugging Face cache ({_hub_cache()}) "
            "and the hub cannot be reached (offline, or HF_HUB_OFFLINE=1 is set). Run the "
            "same command once on a machine that is online (the download is cached; copy the "
            f"cache folder over), or pass the weights yourself: {local}."
        )
    if names & _GATED:
        return ValueError(
            f"cannot load timm:{name}: the Hugging Face repository is gated; accept its terms "
            "on huggingface.co and log in (huggingface-cli login), or pass the weights "
            f"yourself: {local}."
        )
    if names & _NOT_ON_HUB:
        return ValueError(
            f"cannot load timm:{name}: the Hugging Face hub has no such model or file "
            f"({_first_line(exc)}); check the name."
        )
    if names & _NETWORK:
        return ValueError(
            f"cannot download timm:{name} ({_first_line(exc)}); check the network, or pass "
            f"the weights yourself: {local}."
        )
    text = str(exc)
    if "Unknown model" in text or "Invalid model name" in text:
        return ValueError(
            f"timm cannot build the model {name!r} ({_first_line(exc)}); timm.list_models() "
            "lists the names it knows, and 'hf-hub:ORG/NAME' loads a hub model."
        )
    if "No pretrained weights" in text:
        return ValueError(
            f"timm has no pretrained weights for {name!r} ({_first_line(exc)}); "
            "timm.list_pretrained() lists the models that have them."
        )
    return None


def timm_preprocess(net) -> Preprocess:
    """Input size, mean, std and resampling from a timm model's pretrained config.

    The image is resized to the input size without cropping (a crop could cut
    off the animal). Resampling other than bicubic becomes bilinear.
    """
    timm = import_timm("timm_preprocess")
    data = getattr(timm.data, "resolve_model_data_config", None)
    cfg = data(net) if data is not None else timm.data.resolve_data_config({}, model=net)
    _, h, w = cfg["input_size"]
    interpolation = "bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear"
    return Preprocess((int(h), int(w)), tuple(cfg["mean"]), tuple(cfg["std"]), interpolation)


def timm_model(name: str, *, pretrained: bool, owner: str = "build_backbone"):
    """``timm.create_model(name, pretrained=pretrained, num_classes=0)`` with clear errors.

    Sets ``feat_dim`` (the pooled feature size) and ``preprocess``.
    """
    timm = import_timm(f"the backbone timm:{name}")
    try:
        net = timm.create_model(name, pretrained=pretrained, num_classes=0)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - timm and the hub raise many types
        err = hub_error(exc, name, "aas-core")
        if err is None:
            raise ValueError(
                f"{owner}: timm could not build {name!r} ({type(exc).__name__}: "
                f"{_first_line(exc)})."
            ) from None
        raise err from None
    # With num_classes=0, timm's forward returns the pooled (pre-logits) features, whose
    # size is head_hidden_size where a model has a hidden head layer, else num_features.
    feat_dim = getattr(net, "head_hidden_size", None) or net.num_features
    net.feat_dim = int(feat_dim)
    net.preprocess = timm_preprocess(net)
    return net


def _cached_weights(net):
    """(path, revision) of the weights file timm just read from the hub cache, or (None, None)."""
    cfg = getattr(net, "pretrained_cfg", None) or {}
    repo = cfg.get("hf_hub_id")
    if not repo:
        return None, None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None, None
    names = [cfg.get("hf_hub_filename"), "open_clip_pytorch_model.bin"]
    names = [n for n in names if n] + ["model.safetensors", "pytorch_model.bin"]
    for filename in names:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str) and os.path.isfile(found):
            path = Path(found)
            revision = path.parent.name if path.parent.parent.name == "snapshots" else None
            return path, revision
    return None, None


def pretrained_timm(name: str):
    """(net, weights path or None, its sha256 or None, source text) of a pretrained timm model."""
    net = timm_model(name, pretrained=True, owner="load_backbone")
    path, revision = _cached_weights(net)
    cfg = getattr(net, "pretrained_cfg", None) or {}
    repo = cfg.get("hf_hub_id")
    if repo:
        source = f"Hugging Face hub {repo}" + (f" (revision {revision})" if revision else "")
    else:
        source = f"timm {getattr(import_timm('timm'), '__version__', '?')} pretrained {name}"
    sha = file_sha256(path) if path is not None else None
    return net, path, sha, source
