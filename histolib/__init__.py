"""histolib: attention models in computational pathology.

A thin, tested package behind the histolib book: data loaders for the real formats
(PatchCamelyon ``.h5``, TFDS, image folders, the Kaggle ``.tif`` + CSV layout), the
attention layers of the two reproduced projects, model builders, distribution-strategy
helpers, training, evaluation, saliency and slide heatmaps.

TensorFlow is not a hard dependency of the wheel (it comes through the ``cpu`` or ``gpu``
extra), so importing histolib checks for it first and says how to install it. Importing histolib
imports `histolib.layers` (and with it Keras), which registers every histolib layer: after
``import histolib``, ``keras.saving.load_model`` loads a saved histolib model. The C++ notices
TensorFlow writes to stderr while it is imported are held to ``TF_CPP_MIN_LOG_LEVEL`` (default 1
here: its warnings and errors show, its INFO notices, such as oneDNN's, do not).
"""

import logging as _logging
import os as _os
import sys as _sys
from importlib import util as _util
from pathlib import Path as _Path

__version__ = "0.1.0"


def _backend_missing() -> str | None:
    """A one-line direction when ``KERAS_BACKEND`` names a backend that is not installed."""
    backend = _os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend == "jax" and _util.find_spec("jax") is None:
        return ("KERAS_BACKEND=jax, but JAX is not installed: install it with `pip install 'histolib[jax]'` "
                "(or unset KERAS_BACKEND to use TensorFlow)")
    return None


if _backend_missing():  # the command says it in one line; an import in Python raises
    if _Path(_sys.argv[0]).name == "histolib" or _sys.orig_argv[1:3] == ["-m", "histolib"]:
        print(f"histolib: error: {_backend_missing()}", file=_sys.stderr)
        raise SystemExit(2)
    raise ImportError(_backend_missing())

if _util.find_spec("tensorflow") is None:  # pragma: no cover - exercised in a bare venv
    raise ImportError(
        "histolib needs TensorFlow 2.16 or newer, and none is installed. Install it with "
        "`pip install 'histolib[cpu]'` (tensorflow-cpu on x86-64, tensorflow elsewhere) or "
        "`pip install 'histolib[gpu]'` (tensorflow[and-cuda]); on Colab TensorFlow is already there."
    )

from histolib._tf_notices import RetracingFilter, tensorflow_notices_filtered  # noqa: E402

with tensorflow_notices_filtered():  # TensorFlow's import-time INFO notices, held to TF_CPP_MIN_LOG_LEVEL
    from histolib import layers  # noqa: E402  registers histolib's Keras layers, so load_model finds them

_logging.getLogger("tensorflow").addFilter(RetracingFilter())

__all__ = ["__version__", "layers"]
