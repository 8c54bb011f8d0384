"""Class names, image geometry and feature keys of training: the one place they are defined.

The signature, input and output names the served model shares with its consumers are radassist/contract.py's.
"""

# Model output order. Index i of every probability vector is CLASS_NAMES[i].
CLASS_NAMES = ("adenocarcinoma", "large.cell.carcinoma", "squamous.cell.carcinoma", "normal")
CLASS_DISPLAY_NAMES = ("Adenocarcinoma", "Large cell carcinoma", "Squamous cell carcinoma", "Normal")
NUM_CLASSES = len(CLASS_NAMES)
NEGATIVE_CLASSES = ("normal",)  # no cancer: the rest are the cancers the worklist ranks by

# VGG16's native input; Grad-CAM on the default feature layer, block4_conv3, has IMAGE_SIZE // 8 = 28 cells a side.
IMAGE_SIZE = 224
# Caffe-style VGG preprocessing: BGR channel means subtracted from 0..255 pixels, no scaling.
VGG_MEAN_BGR = (103.939, 116.779, 123.68)

# Raw tf.Example features written by CtExampleGen.
IMAGE_KEY = "image"            # encoded PNG/JPEG bytes
LABEL_KEY = "label"            # int64 class id (index into CLASS_NAMES)
SHA256_KEY = "sha256"          # hex digest of the original file bytes
FILENAME_KEY = "filename"      # path relative to the data root, e.g. "test/normal/7.png"
WIDTH_KEY = "width"
HEIGHT_KEY = "height"
# Added by LeakageAudit: 1 when the example (exactly or nearly) repeats an image of an earlier split.
LEAKED_KEY = "leaked"

# Transformed features: the canonical (deskewed, framed on the lungs, intensity-matched), VGG-preprocessed image, the
# square [y0, x0, y1, x1] in input pixels it was sampled from and the angle in degrees that square is turned about
# its centre (both also model outputs: where the heat map lies on the input). Transform also outputs the input
# statistics of components.imaging.INPUT_STATS.
PIXELS_KEY = "pixels"
CROP_BOX_KEY = "crop_box"
CROP_ANGLE_KEY = "crop_angle"

SPLITS = ("train", "valid", "test")


def class_from_folder(folder_name: str) -> str | None:
    """Maps a class folder name, short (``normal``) or Kaggle-long (``adenocarcinoma_left.lower...``), to a class.

    Returns None for folders that name no known class.
    """
    short = folder_name.split("_", 1)[0].strip().lower()
    return short if short in CLASS_NAMES else None
