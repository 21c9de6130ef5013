"""Fashion-MNIST from the IDX files of Debian's ``dataset-fashion-mnist`` (NumPy only).

Every file is read whole and checked at load: a cut or damaged gzip stream, an IDX header
whose dimensions do not match the data that follows, images that are not 28x28, labels outside
0..9 or counts that differ between the images and the labels are one ``ValueError`` naming the
file (and the fix: re-install the package, or replace the file).
"""

import gzip
import os
import zlib

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
_REINSTALL = ("re-install dataset-fashion-mnist ('apt-get install --reinstall "
              "dataset-fashion-mnist') or replace the file")


def _read_idx(path):
    """Reads an IDX file (LeCun's MNIST format), gzipped or not, as a NumPy array.

    Raises:
        ValueError: naming ``path``, if it is truncated, damaged or not an IDX file.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:  # stays what it is: the caller names the package to install
        raise
    except (EOFError, zlib.error, OSError) as error:  # gzip: cut stream, bad CRC, not gzip
        raise ValueError(f"truncated or damaged IDX file {path} ({error}); {_REINSTALL}.") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes; {_REINSTALL}.")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"truncated or damaged IDX file {path}: its header is cut short; "
                         f"{_REINSTALL}.")
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"truncated or damaged IDX file {path}: its header says "
                         f"{dims.tolist()} ({int(np.prod(dims)):,} bytes of data) but "
                         f"{array.size:,} bytes follow; {_REINSTALL}.")
    return array.reshape(dims)


def load_fashion_mnist(split="train", *, data_dir=None):
    """Loads a split of Fashion-MNIST from its IDX files (checked: module docstring).

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
    _check_contents(paths, images, labels)
    if len(images) != len(labels):
        raise ValueError(f"{folder}: {len(images)} images but {len(labels)} labels.")
    return images[..., np.newaxis], labels.astype(np.int64)


def _check_contents(paths, images, labels):
    """Refuses IDX files of the wrong shape or labels outside 0..9, naming the file."""
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{paths[0]} holds images of shape {images.shape[1:]}, not 28x28; "
                         f"{_REINSTALL}.")
    if labels.ndim != 1:
        raise ValueError(f"{paths[1]} holds an array of shape {labels.shape}, not one label "
                         f"per image; {_REINSTALL}.")
    if len(labels) and labels.max() >= len(FASHION_MNIST_CLASSES):
        index = int(np.argmax(labels >= len(FASHION_MNIST_CLASSES)))
        raise ValueError(f"{paths[1]}: label {index} is {labels[index]}, outside 0..9; "
                         f"{_REINSTALL}.")
