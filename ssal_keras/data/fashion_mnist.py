"""Fashion-MNIST from the IDX files of Debian's ``dataset-fashion-mnist`` (NumPy only)."""

import gzip
import os

import numpy as np

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = (
    "t-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)
IDX_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def _read_idx(path):
    """Reads an IDX file (LeCun's MNIST format), gzipped or not, as a NumPy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes; re-install the dataset.")
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: header says {dims.tolist()}, {array.size} bytes.")
    return array.reshape(dims)


def load_fashion_mnist(split="train", *, data_dir=None):
    """Loads a split of Fashion-MNIST from its IDX files.

    Args:
        split: str. ``"train"`` (60,000 images) or ``"test"`` (10,000).
        data_dir: str or None. Folder of the four ``*-idx*-ubyte.gz`` files; ``None`` reads
            Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).

    Returns:
        ``(images, labels)``: uint8 ``(N, 28, 28, 1)`` and int64 ``(N,)``.
    """
    if split not in IDX_FILES:
        raise ValueError(f"split must be one of {sorted(IDX_FILES)}; received {split!r}.")
    folder = data_dir or FASHION_MNIST_DIR
    paths = [os.path.join(folder, name) for name in IDX_FILES[split]]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(
            f"Fashion-MNIST not found: {missing[0]} does not exist; install it with "
            "'apt-get install dataset-fashion-mnist' or pass the folder of its IDX files."
        )
    images, labels = (_read_idx(p) for p in paths)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels.")
    return images[..., np.newaxis], labels.astype(np.int64)
