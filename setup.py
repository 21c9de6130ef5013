"""ssal_keras: Self-Supervised Autogenous Learning (SSAL) for Keras 3 / TensorFlow."""

from setuptools import find_packages, setup

setup(
    name="ssal_keras",
    version="0.1.0",
    description="Self-Supervised Autogenous Learning (SSAL) branches for Keras classifiers",
    packages=find_packages(include=["ssal_keras", "ssal_keras.*"]),
    python_requires=">=3.10,<3.13",
    # The ranges tested in CI (BUILD_NOTES.md, "Versions"). Keras is pinned to the 3.15
    # line: several 3.x releases broke multi-output losses and metrics
    # (docs/stack_notes.md, section 2).
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<3.16",
        "numpy>=1.26,<3",
        "scipy>=1.11",  # temperature scaling's one-parameter fit (evaluation/calibration.py)
        "absl-py>=2.1",
        # TensorFlow 2.21 no longer pulls it in; tf.summary needs it for the training logs.
        "tensorboard>=2.19",
        "tensorflow-datasets>=4.9.9,<5",
        "keras-cv>=0.9,<0.10",
        "onnx>=1.17",
        "tf2onnx>=1.17,<1.18",
        "onnxruntime>=1.20",
        "pillow>=10",  # image files in the ONNX Runtime client (export/onnx_predict.py)
        "matplotlib>=3.8",  # the PNG figures of python -m ssal_keras.analyze
    ],
    # pytest-xdist: the suite runs one test file per CPU core (BUILD_NOTES.md, "Test suite").
    # jax[cpu]: tests/test_jax_backend.py runs the model code on Keras's JAX backend (CI: 0.10).
    # importlib_resources: TFDS's download_and_prepare, which tests/test_data.py uses to write a
    # small dataset in ArrayRecord files (the full shuffle's TFDS data source).
    extras_require={"test": ["pytest>=8", "pytest-xdist>=3.5", "jax[cpu]>=0.4.30,<0.11",
                             "importlib_resources>=6"]},
    # ssal-NAME is the same command as python -m ssal_keras.NAME (README.md, "Train").
    entry_points={
        "console_scripts": [
            "ssal-train = ssal_keras.train:main",
            "ssal-evaluate = ssal_keras.evaluate:main",
            "ssal-group = ssal_keras.group:main",
            "ssal-analyze = ssal_keras.analyze:main",
            "ssal-export = ssal_keras.export.__main__:main",
            "ssal-demo = ssal_keras.demo:main",
        ],
    },
)
