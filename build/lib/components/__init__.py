"""RadAssist's TFX components and the model code they share (Keras 2: entry points set TF_USE_LEGACY_KERAS=1
before TensorFlow is imported; radassist/cli.py, the Dockerfiles, the Makefile, tests/conftest.py)."""
