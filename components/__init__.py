"""RadAssist's TFX components and the model code they share."""

import os

# TFT and TFMA need Keras 2 (tf-keras). This must happen before TensorFlow is first imported, so it lives at
# the top of the package every pipeline, trainer and benchmark module imports; an explicit setting wins.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
