"""Where the official weights come from when the user names no local copy."""

from __future__ import annotations

from pathlib import Path

from ex4d.errors import InputError

#: The official base model, in the diffusers layout, and the EX-4D adapter (spec header).
WAN_REPO = "Wan-AI/Wan2.1-I2V-14B-480P-Diffusers"
EX4D_REPO, EX4D_FILE = "yihouxiang/EX-4D", "ex4d.ckpt"


def _hint(what: str, command: str, flag: str) -> str:
    return f"{what} is not available locally and could not be downloaded; run `{command}` and pass {flag}"


def resolve_wan_dir(wan_dir: str | Path | None) -> Path:
    """``wan_dir`` if given, else the Hugging Face copy of :data:`WAN_REPO` (cache first, then download).

    Raises:
        InputError: no local copy and no download possible; the message says what to download.
    """
    if wan_dir is not None:
        return Path(wan_dir)
    try:
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(WAN_REPO, local_files_only=True))
        except Exception:  # not cached: try the network (fails fast offline)
            return Path(snapshot_download(WAN_REPO))
    except Exception:
        raise InputError(_hint(f"the base model {WAN_REPO}", f"huggingface-cli download {WAN_REPO} --local-dir D",
                               "--wan-dir D")) from None


def resolve_ex4d_ckpt(ckpt: str | Path | None) -> Path:
    """``ckpt`` if given, else ``ex4d.ckpt`` of :data:`EX4D_REPO` from the Hugging Face cache or the network.

    Raises:
        InputError: as :func:`resolve_wan_dir`.
    """
    if ckpt is not None:
        return Path(ckpt)
    try:
        from huggingface_hub import hf_hub_download

        try:
            return Path(hf_hub_download(EX4D_REPO, EX4D_FILE, local_files_only=True))
        except Exception:
            return Path(hf_hub_download(EX4D_REPO, EX4D_FILE))
    except Exception:
        raise InputError(_hint(f"the EX-4D adapter {EX4D_REPO}/{EX4D_FILE}",
                               f"huggingface-cli download {EX4D_REPO} {EX4D_FILE} --local-dir D",
                               "--ex4d-ckpt D/ex4d.ckpt")) from None
