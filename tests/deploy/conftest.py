"""Every deploy test runs offline: caches point into tmp_path, downloads are forbidden and any attempt
fails at once (the tests pre-seed the caches with generated files under the libraries' own names)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks"))


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """Empty caches under tmp_path and no network: returns the TORCH_HOME directory."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("RESKIT_OFFLINE", "1")
    monkeypatch.setenv("RESKIT_CACHE", str(tmp_path / "reskit_cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("FVCORE_CACHE", str(tmp_path / "iopath"))

    def no_network(*args, **kwargs):
        raise AssertionError(f"a test tried to download {args[:1]}")

    import huggingface_hub
    import torch.hub

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    return home
