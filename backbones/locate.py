"""Where the libraries keep the files that weights names denote (docs/weights.md): names -> files.

    torchvision:ResNet50_Weights.IMAGENET1K_V2       any torchvision weight enum (classification,
    torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V1   detection, segmentation; ``.DEFAULT`` too)
    timm:resnet50.a1_in1k                             timm's pretrained_cfg: Hugging Face hub, else its URL
    detectron2://ImageNetPretrained/MSRA/R-50.pkl     detectron2's URL prefix on dl.fbaipublicfiles.com

This module only finds (and, when allowed, downloads) the library's own file; :mod:`backbones.hub`
converts it into a reskit backbone checkpoint. It imports nothing of ``backbones`` (the bottom of
the weights-by-name stack: hub -> transfer -> weights, locate; docs/ARCHITECTURE.md).

Where the files live, as each library keeps them:
  * torchvision: ``torch.hub.get_dir()/checkpoints/<file name of the enum's URL>`` ($TORCH_HOME/hub);
    the name carries the hash prefix (``resnet50-11ad3fa6.pth``); a download checks it, as torch.hub does;
  * timm: the Hugging Face hub cache ($HF_HUB_CACHE, $HF_HOME/hub; ``model.safetensors``, else
    ``pytorch_model.bin``) for configs with an ``hf_hub_id``, else torch.hub's cache for its URL;
  * detectron2: detectron2's own iopath cache when it is there ($FVCORE_CACHE, ``~/.torch/iopath_cache``),
    else ``cache_dir()/detectron2/<path>``.

No network: ``RESKIT_OFFLINE=1`` (or ``HF_HUB_OFFLINE=1``) forbids downloads; a file that is not in
the cache then stops with one line naming the URL to fetch and the path to put it at (DataError,
exit 1). A failed download says the same.
"""
from __future__ import annotations

import logging
import os
from typing import List, NamedTuple, Optional

from engine.data import DataError

__all__ = ["WEIGHTS_PREFIXES", "is_weights_name", "check_weights_name", "cache_dir", "downloads_allowed",
           "locate", "Located", "fetch", "library_file", "weights_names_help"]

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
DETECTRON2_PREFIX = "detectron2://"
DETECTRON2_URL = "https://dl.fbaipublicfiles.com/detectron2/"  # what detectron2's path handler maps it to
WEIGHTS_PREFIXES = (TORCHVISION_PREFIX, TIMM_PREFIX, DETECTRON2_PREFIX)
_HF_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's order: the safetensors alternative first


def is_weights_name(value) -> bool:
    return isinstance(value, str) and value.startswith(WEIGHTS_PREFIXES)


def downloads_allowed() -> bool:
    off = {"1", "true", "yes", "on"}
    return not (os.environ.get("RESKIT_OFFLINE", "").lower() in off or
                os.environ.get("HF_HUB_OFFLINE", "").lower() in off)


def cache_dir() -> str:
    """reskit's own cache, shared with the annotation cache (engine.cache): $RESKIT_CACHE, else
    ``~/.cache/reskit``."""
    root = os.environ.get("RESKIT_CACHE", "")
    return os.path.abspath(os.path.expanduser(root or os.path.join("~", ".cache", "reskit")))


class Located(NamedTuple):
    """Where a named file is or would be: the local path, the URL to fetch, how to fetch it."""

    name: str
    path: Optional[str]  # the cached file, None when it is not there
    url: str
    target: str  # where a download goes (the path to put a file fetched by hand)
    fetch: object  # () -> path, downloads into target
    arch: Optional[str] = None  # the architecture the name states (timm), for the conversion
    input_norm: Optional[dict] = None  # the normalisation the name states (timm's pretrained_cfg)


# --------------------------------------------------------------------------------------------------
# Names -> files
# --------------------------------------------------------------------------------------------------


def _torchvision_enum(spec: str):
    from torchvision.models import get_model_weights, get_weight, list_models

    enum_name, _, member = spec.partition(".")
    enums = {get_model_weights(m).__name__: get_model_weights(m) for m in list_models()}
    if enum_name not in enums:
        import difflib

        close = difflib.get_close_matches(enum_name, list(enums), n=4, cutoff=0.6)
        raise ValueError(f"torchvision:{spec}: torchvision has no weights '{enum_name}'"
                         + (f"; closest: {', '.join(close)}" if close else "; e.g. ResNet50_Weights.IMAGENET1K_V2"))
    members = [w.name for w in enums[enum_name]] + ["DEFAULT"]
    if (member or "DEFAULT") not in members:
        raise ValueError(f"torchvision:{spec}: {enum_name} has no '{member}'; choose one of {', '.join(members)}")
    return get_weight(f"{enum_name}.{member or 'DEFAULT'}")


def _hub_download(url: str, target: str) -> str:
    import torch.hub

    match = torch.hub.HASH_REGEX.search(os.path.basename(target))  # "-<hash>." as torch.hub checks it
    os.makedirs(os.path.dirname(target), exist_ok=True)
    torch.hub.download_url_to_file(url, target, match.group(1) if match else None, progress=False)
    return target


def _url_in_torch_hub(name: str, url: str, **extra) -> Located:
    import torch.hub

    target = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url.split("?")[0]))
    return Located(name, target if os.path.isfile(target) else None, url, target,
                   lambda: _hub_download(url, target), **extra)


def _locate_torchvision(name: str) -> Located:
    weights = _torchvision_enum(name[len(TORCHVISION_PREFIX):])
    return _url_in_torch_hub(name, weights.url)


def _hf_cache() -> Optional[str]:
    # read at call time (huggingface_hub reads its environment once, at import)
    if os.environ.get("HF_HUB_CACHE"):
        return os.environ["HF_HUB_CACHE"]
    if os.environ.get("HF_HOME"):
        return os.path.join(os.environ["HF_HOME"], "hub")
    return None


def _locate_timm(name: str) -> Located:
    from timm.models import get_pretrained_cfg

    model = name[len(TIMM_PREFIX):]
    try:
        cfg = get_pretrained_cfg(model) if "." in model else None
    except RuntimeError:  # timm: "Invalid pretrained tag (...) for <arch>"
        cfg = None
    if cfg is None:
        raise ValueError(f"{name}: timm has no pretrained weights under that name; give <model>.<tag> "
                         "as timm.list_pretrained() lists them, e.g. timm:resnet50.a1_in1k")
    norm = {"color": "RGB", "scale": 1.0, "mean": [float(v) for v in cfg.mean], "std": [float(v) for v in cfg.std]}
    arch = TIMM_PREFIX + (cfg.architecture or model.split(".")[0])
    if not cfg.hf_hub_id:  # an older config: timm downloads its URL through torch.hub's cache
        return _url_in_torch_hub(name, cfg.url, arch=arch, input_norm=norm)
    import huggingface_hub

    repo, _, revision = cfg.hf_hub_id.partition("@")
    files = (cfg.hf_hub_filename,) if getattr(cfg, "hf_hub_filename", None) else _HF_FILES
    hf_cache = _hf_cache()
    for file in files:
        found = huggingface_hub.try_to_load_from_cache(repo, file, cache_dir=hf_cache, revision=revision or None)
        if isinstance(found, str):
            return Located(name, found, "", found, None, arch, norm)

    def fetch() -> str:
        for i, file in enumerate(files):
            try:
                return huggingface_hub.hf_hub_download(repo, file, revision=revision or None, cache_dir=hf_cache)
            except huggingface_hub.errors.EntryNotFoundError:
                if i == len(files) - 1:
                    raise

    url = f"{huggingface_hub.constants.ENDPOINT}/{repo}/resolve/{revision or 'main'}/{files[0]}"  # $HF_ENDPOINT
    where = f"the Hugging Face cache {hf_cache or huggingface_hub.constants.HF_HUB_CACHE} " \
            f"(hf download {repo} {files[0]})"
    return Located(name, None, url, where, fetch, arch, norm)


def _locate_detectron2(name: str) -> Located:
    rel = name[len(DETECTRON2_PREFIX):].lstrip("/")
    if not rel or ".." in rel.split("/"):
        raise ValueError(f"{name}: expected detectron2://<path under {DETECTRON2_URL}>, "
                         "e.g. detectron2://ImageNetPretrained/MSRA/R-50.pkl")
    url = DETECTRON2_URL + rel
    # detectron2's own download cache (iopath), used read-only when detectron2 was there before us
    iopath = os.environ.get("FVCORE_CACHE") or os.path.expanduser("~/.torch/iopath_cache")
    theirs = os.path.join(iopath, "detectron2", rel)
    target = os.path.join(cache_dir(), "detectron2", rel)
    path = target if os.path.isfile(target) else theirs if os.path.isfile(theirs) else None
    return Located(name, path, url, target, lambda: _hub_download(url, target))


def locate(name: str) -> Located:
    """Where the library keeps the file ``name`` denotes; raises ValueError for an unknown name."""
    if name.startswith(TORCHVISION_PREFIX):
        return _locate_torchvision(name)
    if name.startswith(TIMM_PREFIX):
        return _locate_timm(name)
    if name.startswith(DETECTRON2_PREFIX):
        return _locate_detectron2(name)
    raise ValueError(f"{name}: not a weights name ({', '.join(p + '...' for p in WEIGHTS_PREFIXES)})")


def check_weights_name(name: str) -> None:
    """Raise ValueError (one line, the closest valid names) for a name no library knows; no file is read."""
    locate(name)


def fetch(located: Located) -> str:
    """The local file of ``located``: cached, or downloaded when downloads are allowed; else one line."""
    if located.path:
        return located.path
    todo = f"fetch {located.url} and put it at {located.target}"
    if not downloads_allowed():
        raise DataError(f"{located.name}: not in the cache and downloads are off (RESKIT_OFFLINE / "
                        f"HF_HUB_OFFLINE); {todo}")
    unreachable = _unreachable(located.url)
    if unreachable:
        raise DataError(f"{located.name}: not in the cache and {unreachable} (offline? RESKIT_OFFLINE=1 "
                        f"skips the try); {todo}")
    # The libraries' own retries and warnings (huggingface_hub: 5 retries with back-off, each warning
    # printed by its handler and ours) would bury the one line below: quiet while fetching.
    quiet = logging.getLogger("huggingface_hub")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return located.fetch()
    except Exception as e:  # noqa: BLE001 - no network, proxy, HTTP error, hash mismatch: all one line
        detail = " ".join(str(e).split()) or type(e).__name__  # whole, on one line
        raise DataError(f"{located.name}: download failed ({detail}); {todo}") from None
    finally:
        quiet.setLevel(level)


# One try with a short timeout tells "offline" at once, before a library's retries and back-off.
CONNECT_TIMEOUT_S = 3.0


def _unreachable(url: str) -> Optional[str]:
    """None when a TCP connection to ``url``'s host opens within CONNECT_TIMEOUT_S (through the proxy
    when $HTTPS_PROXY / $HTTP_PROXY is set), else what went wrong, in words."""
    import socket
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return None
    proxy = urllib.request.getproxies().get(parsed.scheme)
    if proxy and not urllib.request.proxy_bypass(parsed.hostname):
        parsed = urllib.parse.urlparse(proxy if "://" in proxy else "http://" + proxy)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        if isinstance(e, socket.timeout):
            reason = f"no answer in {CONNECT_TIMEOUT_S:g} s"
        return f"{host}:{port} cannot be reached ({reason})"
    return None


def library_file(name: str) -> str:
    """The library's own file for ``name`` (cached, or downloaded when allowed), unconverted: what
    ``tools/transfer.py`` starts from, so whole torchvision detectors / segmentation models by name
    convert as whole models."""
    return fetch(locate(name))


def weights_names_help() -> List[str]:
    return [TORCHVISION_PREFIX + "ResNet50_Weights.IMAGENET1K_V2", TIMM_PREFIX + "resnet50.a1_in1k",
            DETECTRON2_PREFIX + "ImageNetPretrained/MSRA/R-50.pkl"]
