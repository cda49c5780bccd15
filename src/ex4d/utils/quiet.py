"""Quiet by default: a command prints its progress bars, its result and ex4d's own one-line notes, not the import
chatter of the libraries under it (torchao failing to load kernels this machine cannot run, torch deprecation
notices, diffusers/transformers info) — unless ``--verbose`` or ``--debug``.

One switch, :func:`quiet_third_party`, called once by ``ex4d.cli.main`` before any heavy import; the CLI shows no
Python warning but ex4d's own notes (``InputWarning``) unless verbose.
"""

from __future__ import annotations

import logging
import os

#: Loggers of the libraries ex4d imports; below ERROR they only say how the library set itself up.
THIRD_PARTY_LOGGERS = ("torch", "torchao", "diffusers", "transformers", "huggingface_hub", "accelerate", "peft",
                       "warp", "gradio", "httpx", "urllib3", "PIL", "matplotlib", "numexpr", "tensorboard", "jax")

#: Verbosity switches the libraries read when they set up their own logging (they reset their loggers' levels;
#: torch's is read again when torch._dynamo loads, as torchao makes it).
_VERBOSITY_ENV = {"TORCH_LOGS": "-all", "TRANSFORMERS_VERBOSITY": "error", "DIFFUSERS_VERBOSITY": "error",
                  "HF_HUB_VERBOSITY": "error", "TF_CPP_MIN_LOG_LEVEL": "3"}


def quiet_third_party() -> None:
    """Raise the third-party loggers to ERROR (their own variables too, for libraries not imported yet).

    A variable the user set keeps its value; real errors (ERROR and above) still show.
    """
    for name, value in _VERBOSITY_ENV.items():
        os.environ.setdefault(name, value)
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)

