"""Root pytest setup, loaded for tests/ and for the book's notebooks under nbval alike."""

import os

# Before TensorFlow is imported anywhere; nbval's notebook kernels inherit these too, so
# TensorFlow's C++ log lines never reach a stored notebook output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
