"""Feature keys and geometry of the segmenter's examples: the one place they are defined.

Raw tf.Example features are NoduleExampleGen's; transformed ones are the segmenter's preprocessing_fn's (the
consensus target and the canonical grey image). The signature and output names are radassist/contract.py's.
"""

IMAGE_KEY = "image"              # encoded PNG bytes of the slice (a 128 x 128 nodule-centred crop in LIDC-IDRI)
READER_MASKS_KEY = "reader_masks"  # encoded PNG bytes [READERS]: each reader's outline (empty: not outlined)
PATIENT_KEY = "patient_id"
NODULE_KEY = "nodule"            # "<patient>_<nodule>": one nodule's neighbouring slices share it
FILENAME_KEY = "filename"        # image path relative to the data root
SHA256_KEY = "sha256"            # of the image file's bytes
CENTER_SLICE_KEY = "is_center_slice"  # int64 1 on the nodule's slice of largest consensus

READERS = 4
CONSENSUS_READERS = 2            # the target: pixels at least this many readers outlined (LIDC's 50 % masks)
CROP_SIZE = 128                  # the crops' side, px (training examples; the segment signature takes any size)

# Transformed features.
GREY_KEY = "grey"                # float32 [H, W, 1] in 0..1: the canonical slice (intensities matched)
MASK_KEY = "mask"                # float32 [H, W, 1] {0, 1}: the consensus
CONSENSUS_AREA_KEY = "consensus_area"  # int64: consensus pixels
SIZE_BIN_KEY = "nodule_size"     # string: the consensus area's bin, TFMA's size slices
SIZE_BINS = ((0, 20, "<20px"), (20, 50, "20-50px"), (50, 150, "50-150px"), (150, None, ">=150px"))

# TFX split names (as the classifier's) and the MANIFEST.csv split each reads.
SPLITS = {"train": "train", "valid": "val", "test": "test"}
