"""Sizes, file names, formats and the paper's hyper-parameters, in one place.

Training, evaluation, export, the service and the tests all read these, so the
preprocessing and the files between them cannot drift. The paper's figures are from
Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks" (NIPS 2012).
"""

from __future__ import annotations

# Input pipeline (paper, section 2): rescale the shorter side to 256, take the central
# 256x256 patch; train on random crops of it, test on ten crops.
IMAGE_SIZE = 256
PAPER_CROP = 227  # 227 makes conv1 (11x11, stride 4, no padding) give 55x55
TORCHVISION_CROP = 224  # torchvision's layout pads conv1 by 2: (224 + 4 - 11) // 4 + 1 = 55
NUM_CROPS = 10  # four corners + centre, and their horizontal reflections
FC7_DIM = 4096  # the embedding: fc7's activations after ReLU

# Local response normalization (paper, section 3.3): k, n, alpha, beta.
LRN_K = 2.0
LRN_SIZE = 5
LRN_ALPHA = 1e-4
LRN_BETA = 0.75

# Optimisation (paper, section 5).
BATCH_SIZE = 128
LEARNING_RATE = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
LR_FACTOR = 0.1  # "divide the learning rate by 10 when the validation error rate stopped improving"
EPOCHS = 90
DROPOUT = 0.5

# PCA colour augmentation (paper, section 4.1): alpha ~ N(0, 0.1) per image and eigenvector.
PCA_ALPHA_STD = 0.1

# torchvision's published AlexNet weights (IMAGENET1K_V1) expect this normalization,
# in [0, 1] units: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Files written next to each other in a training run directory.
CHECKPOINT_LAST = "checkpoint.pt"
CHECKPOINT_BEST = "best.pt"
METRICS_FILE = "metrics.jsonl"

# What the service accepts and training reads (Pillow's format names; a browser or a camera
# sends these, anything else - SVG, PDF, PSD, ICO, ... - is refused) and the file suffix the
# gallery stores each one under. The file names the folder readers look for are Pillow's
# suffixes of these formats (core.imaging.IMAGE_SUFFIXES).
FORMAT_SUFFIX = {"JPEG": ".jpg", "MPO": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif",
                 "BMP": ".bmp", "TIFF": ".tiff"}  # fmt: skip
ACCEPTED_FORMATS = frozenset(FORMAT_SUFFIX)

# The model store: model_store/<name>/<version>/ (docs/contract.md, "Exported model").
STORE_DIR = "model_store"
MANIFEST_FILE = "manifest.json"
MODEL_FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}
# pictures of a model for people: conv1's kernels (the paper's Figure 3), the training curves
PICTURE_FILES = {"filters": "filters.png", "curves": "curves.png"}
INPUT_NAME, OUTPUT_NAMES = "images", ("probs", "fc7")

# The embedded gallery folder: SQLite rows, the folder lock, the image files.
GALLERY_DB_FILE, GALLERY_LOCK_FILE, GALLERY_IMAGES_DIR = "gallery.sqlite3", "gallery.lock", "images"
# Up to this many gallery items the search is exact; above, a compressed index (PCA + IVF +
# 8-bit codes) with exact re-ranking (exact costs ~5 ms per 1k items and query).
GALLERY_EXACT_MAX = 5_000
