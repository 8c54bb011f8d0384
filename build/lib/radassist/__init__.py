"""RadAssist: an open-source radiologist assistant for lung cancer on chest CT."""

__version__ = "0.1.0"
