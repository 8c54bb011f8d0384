"""RadAssist model serving: TensorFlow Serving's gRPC and REST APIs over a TF Serving model base path."""

import os

# The SavedModels carry tf.Transform graphs built with Keras 2; see components/__init__.py.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
