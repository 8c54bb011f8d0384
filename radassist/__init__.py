"""RadAssist: an open-source radiologist assistant for lung cancer on chest CT."""

import os

# See components/__init__.py: Keras 2 must be chosen before TensorFlow is imported.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

__version__ = "0.1.0"
