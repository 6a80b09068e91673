"""Distribution of the zoo: packages `zoo`, `layers`, `training` and the `zoo` command.

`weights_manifest.json` lives at the top of the repository (one file that reviewers and
the tests read) and is copied into the `zoo` package when a wheel is built, so an
installed zoo finds it with `importlib.resources`.
"""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
MANIFEST = "weights_manifest.json"


class BuildWithManifest(build_py):
    """Ship the top-level weights manifest as `zoo/weights_manifest.json`."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "zoo" / MANIFEST
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HERE / MANIFEST, target)


setup(
    name="zoo",
    version="0.1.0",
    description="A Keras 3 / TensorFlow model zoo for vision: classification backbones, "
    "Fast/Faster R-CNN and DeepLab-v3+, exported as SavedModels.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["zoo", "zoo.*", "layers", "layers.*", "training", "training.*"]),
    cmdclass={"build_py": BuildWithManifest},
    install_requires=[
        # TensorFlow 2.21 brings Keras 3; tensorflow-addons is end-of-life (see README).
        "tensorflow>=2.21,<2.22",
        # The upper bound is the newest minor version tests/layers/test_compat.py passed on (3.15.1):
        # the zoo reaches Keras internals only through layers/compat.py; raise it when they pass again.
        "keras>=3.10,<3.16",
        "numpy>=1.26",
        # The contrib build carries ximgproc (selective search); headless needs no GUI libs.
        "opencv-contrib-python-headless>=4.8",
        "h5py>=3.10",
        # VOC segmentation masks are palette PNGs; OpenCV would read them as colours.
        "pillow>=10",
        # `zoo train` writes TensorBoard logs; TensorFlow 2.21 no longer pulls it in.
        "tensorboard>=2.20",
        # zoo.inspect.feature_maps and `zoo inspect` draw figures.
        "matplotlib>=3.8",
    ],
    extras_require={
        # scikit-learn: bench/digits_lenet5.py's real handwritten digits (load_digits, bundled) and its test.
        # onnx/tflite: tests/zoo/test_export_formats.py runs the exports in onnxruntime and LiteRT.
        # pytest-xdist: make test runs on two workers (much of a test's time is single-threaded:
        # imports, tracing, subprocesses of the CLI).
        "dev": ["pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100", "pycocotools>=2.0.7", "nbmake>=1.5", "ipykernel>=6",
                "scikit-learn>=1.3", "tf2onnx>=1.17", "onnx>=1.14", "onnxruntime>=1.14", "ai-edge-litert>=2.3"],
        # zoo export --format onnx (zoo.export_onnx): tf2onnx >= 1.17 runs with NumPy 2; opset 18
        # (the antialiased Resize) needs onnx >= 1.14 and onnxruntime >= 1.14. Tested: 1.17.0, 1.23.2, 1.32.0.
        "onnx": ["tf2onnx>=1.17", "onnx>=1.14", "onnxruntime>=1.14"],
        # Runs .tflite files: LiteRT's interpreter, which replaces the deprecated tf.lite.Interpreter
        # (exporting needs only TensorFlow). Tested: 2.3.0.
        "tflite": ["ai-edge-litert>=2.3"],
        "bench": ["scikit-learn>=1.3"],
        "notebooks": ["nbmake>=1.5", "matplotlib>=3.8", "ipykernel>=6"],
        "coco": ["pycocotools>=2.0.7"],
    },
    entry_points={"console_scripts": ["zoo=zoo.cli:main"]},
)
