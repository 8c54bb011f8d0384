"""Nodule segmentation: the second model (radassist-seg), its lesion measurements and its training recipe."""
