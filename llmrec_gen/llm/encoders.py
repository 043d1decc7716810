"""Item vectors from language models, computed once per catalogue and cached on disk.

An item's text (by default the catalogue's ``text`` column, ``"Title (Year) | Genre, Genre"``)
goes through a language model and comes out as one vector per item::

    from llmrec_gen.llm.encoders import EncoderSpec, item_vectors
    vecs = item_vectors(train.catalog, EncoderSpec(model="llm", pooling="mean"))  # (n, 576)
    vecs = item_vectors(train.catalog, EncoderSpec(model="minilm"))                # (n, 384)
    vecs = item_vectors(train.catalog, EncoderSpec(model="/path/to/any-hf-model"))

Encoders (``EncoderSpec.model``):

- ``"llm"`` (alias ``"default"``): the default decoder LLM (SmolLM2-135M-Instruct); the vector
  is the mean over the text's tokens (``pooling="mean"``) or the last token's hidden state
  (``pooling="last"``) of hidden layer ``layer`` (default: the last).
- ``"minilm"``: the packaged all-MiniLM-L6-v2 sentence encoder (its own mean pooling, unit rows).
- a local directory: a sentence-transformers model (``modules.json``) is used as such; any other
  Hugging Face model (``config.json``; decoder or encoder) is run with ``AutoModel`` and pooled
  as for ``"llm"``.

Texts are sorted by length and batched, run without gradients, in bf16 when the CPU has native
bf16 (``avx512_bf16`` / AMX, detected at run time) or on CUDA, else in fp32 (``dtype="auto"``).
Vectors are float32 and cached under ``<cache_root>/item-vectors/`` keyed by a digest of the
model (its file names, sizes and modification times), the pooling, layer, dtype, maximum length
and every item text, so a second fit of any method on the same catalogue reads the file instead
of running the model. Measured: ML-100k's 1,664 item texts took 374 s with SmolLM2 in bf16 on
2 cores shared with other jobs (load ~11); MiniLM takes well under a minute. Mean and last-token
pooling are separate cache entries (each one forward pass over the catalogue).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import Field

from llmrec_gen.config import StrictModel
from llmrec_gen.errors import DataError, ModelNotFoundError

log = logging.getLogger(__name__)

LLM_ALIASES = frozenset({"llm", "default", "smollm2-135m", "smollm2-135m-instruct"})
"""Names of the default decoder LLM as an encoder."""
MINILM_ALIASES = frozenset({"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"})
"""Names of the packaged MiniLM sentence encoder."""
CACHE_VERSION = 1  # bump when the way vectors are computed changes


class EncoderSpec(StrictModel):
    """Which language model turns item text into vectors, and how (module docstring)."""

    model: str = Field("llm", min_length=1)  # "llm" (default decoder), "minilm" or a model dir
    pooling: Literal["mean", "last"] = "mean"  # HF models: token mean or last token (chosen: mean)
    layer: int = -1  # hidden layer read (-1 = last); middle layers suit some decoders
    text_fields: list[str] = Field(default_factory=lambda: ["text"], min_length=1)  # columns
    max_length: int = Field(64, ge=4)  # tokens kept per text; MovieLens texts are ~10-30
    batch_size: int = Field(32, ge=1)  # texts per forward pass; 16-64 on CPU
    dtype: Literal["auto", "float32", "bfloat16"] = "auto"  # auto: bf16 only with native support
    num_threads: int = Field(2, ge=1)  # torch CPU threads while encoding (run option)
    device: str = "cpu"  # torch device (run option)


@dataclass(frozen=True)
class ResolvedEncoder:
    """An encoder located on disk.

    Attributes:
        kind: ``"sentence-transformers"`` or ``"hf"`` (pooled hidden states).
        path: the model directory.
        label: a short name for file names and logs.
    """

    kind: Literal["sentence-transformers", "hf"]
    path: Path
    label: str


def resolve_encoder(name: str) -> ResolvedEncoder:
    """Locate the encoder named by ``EncoderSpec.model``.

    Raises:
        ModelNotFoundError: the packaged model is not installed, or ``name`` is neither an alias
            nor a directory holding a model (one line naming it).
    """
    from llmrec_gen.embeddings import resolve_encoder_dir
    from llmrec_gen.llm.models import check_model_dir, resolve_model

    key = name.strip().lower()
    if key in MINILM_ALIASES:
        return ResolvedEncoder("sentence-transformers", resolve_encoder_dir("default"), "minilm")
    if key in LLM_ALIASES:
        return ResolvedEncoder("hf", resolve_model("default"), "llm")
    path = Path(name).expanduser()
    if path.is_dir() and (path / "modules.json").is_file():
        return ResolvedEncoder("sentence-transformers", path.resolve(), _slug(path.name))
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelNotFoundError(
                f"encoder '{name}' is not a model directory (no config.json or modules.json); "
                "use 'llm', 'minilm' or a Hugging Face model directory"
            )
        check_model_dir(path, name)
        return ResolvedEncoder("hf", path.resolve(), _slug(path.name))
    try:
        return ResolvedEncoder("hf", resolve_model(name), _slug(name))
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"encoder '{name}': {exc}") from None


def _slug(name: str) -> str:
    keep = "".join(c if c.isalnum() or c in "-_." else "-" for c in name.lower())
    return keep.strip("-.")[:40] or "model"


def item_texts(catalog: pd.DataFrame, fields: Sequence[str]) -> list[str]:
    """The text of every catalogue item, from ``fields`` joined by ``" | "``.

    ``text`` is used as is; ``genres`` has its ``|`` separators written as ``", "``; ``year`` is
    written as an integer; empty values are skipped.

    Raises:
        DataError: a field is not a catalogue column (the message lists the columns).
    """
    missing = [f for f in fields if f not in catalog.columns]
    if missing:
        raise DataError(
            f"text_fields: {', '.join(map(repr, missing))} not in the catalogue "
            f"(columns: {', '.join(map(str, catalog.columns))})"
        )
    columns = []
    for f in fields:
        col = catalog[f]
        if f == "year":
            col = pd.to_numeric(col, errors="coerce").map(
                lambda y: "" if pd.isna(y) else str(int(y))
            )
        col = col.fillna("").astype(str)
        if f == "genres":
            col = col.str.replace("|", ", ", regex=False)
        columns.append(col.tolist())
    return [" | ".join(v for v in vals if v.strip()) for vals in zip(*columns, strict=True)]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (``avx512_bf16`` or AMX), read from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def compute_dtype(spec: EncoderSpec) -> str:
    """``"bfloat16"`` or ``"float32"``: ``auto`` picks bf16 on CUDA or a native-bf16 CPU."""
    if spec.dtype != "auto":
        return spec.dtype
    if spec.device.startswith("cuda"):
        return "bfloat16"
    return "bfloat16" if cpu_has_native_bf16() else "float32"


def model_fingerprint(path: Path) -> str:
    """A digest of a model directory's files (names, sizes, modification times; not contents)."""
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def cache_key(resolved: ResolvedEncoder, spec: EncoderSpec, texts: Sequence[str]) -> str:
    """The digest that names an item-vector cache file (module docstring)."""
    text_digest = hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()
    meta = {
        "version": CACHE_VERSION,
        "kind": resolved.kind,
        "model": str(resolved.path),
        "fingerprint": model_fingerprint(resolved.path),
        "pooling": spec.pooling if resolved.kind == "hf" else "sentence-transformers",
        "layer": spec.layer if resolved.kind == "hf" else None,
        "max_length": spec.max_length,
        "dtype": compute_dtype(spec) if resolved.kind == "hf" else "float32",
        "texts": text_digest,
        "n": len(texts),
    }
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:24]


def cache_path(resolved: ResolvedEncoder, spec: EncoderSpec, texts: Sequence[str]) -> Path:
    """Where the vectors of ``texts`` under ``spec`` are (or will be) cached."""
    from llmrec_gen.llm.models import cache_root

    key = cache_key(resolved, spec, texts)
    return cache_root() / "item-vectors" / f"{resolved.label}-{key}.npy"


def item_vectors(
    catalog: pd.DataFrame, spec: EncoderSpec | None = None, *, progress: bool | None = None
) -> np.ndarray:
    """One float32 vector per catalogue row (in catalogue order), cached on disk.

    Args:
        catalog: the catalogue (``TrainData.catalog``).
        spec: encoder and pooling; defaults to :class:`EncoderSpec` (default LLM, mean pooling).
        progress: show a progress bar (``None``: only on a terminal).

    Raises:
        DataError: a text field is missing from the catalogue.
        ModelNotFoundError: the encoder cannot be found.
    """
    spec = spec or EncoderSpec()
    texts = item_texts(catalog, spec.text_fields)
    return encode_texts(texts, spec, progress=progress)


def encode_texts(
    texts: Sequence[str], spec: EncoderSpec, *, progress: bool | None = None
) -> np.ndarray:
    """:func:`item_vectors` for a list of texts (cached the same way)."""
    resolved = resolve_encoder(spec.model)
    path = cache_path(resolved, spec, texts)
    if path.is_file():
        vecs = np.load(path)
        if vecs.shape[0] == len(texts):
            log.info("item vectors: read %s", path)
            return vecs
    start = time.perf_counter()
    vecs = _run_encoder(resolved, spec, list(texts), progress)
    _save(path, vecs)
    log.info(
        "item vectors: %d texts with %s (%s) in %.1fs -> %s",
        len(texts), resolved.label, compute_dtype(spec) if resolved.kind == "hf" else "float32",
        time.perf_counter() - start, path,
    )  # fmt: skip
    return vecs


def _save(path: Path, vecs: np.ndarray) -> None:
    from llmrec_gen.io import atomic_write_bytes

    buf = io.BytesIO()
    np.save(buf, vecs)
    atomic_write_bytes(path, buf.getvalue())


def _run_encoder(
    resolved: ResolvedEncoder, spec: EncoderSpec, texts: list[str], progress: bool | None
) -> np.ndarray:
    from llmrec_gen.recommenders.sequential import torch_threads

    with torch_threads(spec.num_threads):
        if resolved.kind == "sentence-transformers":
            from llmrec_gen.embeddings import encode

            show = bool(progress) if progress is not None else False
            return encode(texts, spec.batch_size, show, name=str(resolved.path), device=spec.device)
        model, tokenizer = load_hf_encoder(resolved.path, spec)
        return pooled_hidden_states(model, tokenizer, texts, spec, progress=progress)


def load_hf_encoder(path: Path, spec: EncoderSpec) -> tuple[Any, Any]:
    """A Hugging Face base model (no head) and its tokenizer, in eval mode on ``spec.device``."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from llmrec_gen.llm.models import quiet_transformers

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModel.from_pretrained(path, dtype=getattr(torch, compute_dtype(spec)))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    return model.to(spec.device).eval(), tokenizer


def pooled_hidden_states(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    spec: EncoderSpec,
    *,
    progress: bool | None = None,
    grad: bool = False,
) -> Any:
    """Pooled hidden states of ``texts`` (module docstring): numpy, or a torch tensor with grad.

    Texts are sorted by token length and batched, so little compute goes into padding; the result
    is in the order of ``texts``.

    Args:
        model: a Hugging Face base model.
        tokenizer: its tokenizer (right padding).
        texts: the texts.
        spec: pooling, layer, maximum length, batch size, device.
        progress: progress bar (``None``: only on a terminal).
        grad: keep the graph and return a float32 torch tensor (for fine-tuning).
    """
    import torch
    from tqdm.auto import tqdm

    encoded = tokenizer(list(texts), truncation=True, max_length=spec.max_length)
    lengths = [len(ids) for ids in encoded["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    chunks = [order[s : s + spec.batch_size] for s in range(0, len(order), spec.batch_size)]
    out: list[Any] = [None] * len(chunks)
    context = torch.enable_grad() if grad else torch.inference_mode()
    with context:
        disable = None if progress is None else not progress  # None: off unless a terminal
        for n, idx in enumerate(tqdm(chunks, desc="item vectors", unit="batch", disable=disable)):
            batch = tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=spec.max_length,
                return_tensors="pt",
            ).to(spec.device)
            hidden = model(**batch, output_hidden_states=True).hidden_states[spec.layer].float()
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            if spec.pooling == "mean":
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            else:
                last = batch["attention_mask"].sum(1) - 1
                pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
            out[n] = pooled
    stacked = torch.cat(out) if out else torch.zeros(0, 1)
    inverse = torch.as_tensor(np.argsort(order, kind="stable"), device=stacked.device)
    result = stacked[inverse]
    if grad:
        return result
    return np.ascontiguousarray(result.cpu().numpy(), dtype=np.float32)


def standardize(vecs: np.ndarray, center: bool = True) -> np.ndarray:
    """Rows centred on the catalogue mean (optional) and scaled to unit L2 norm (float32).

    Decoder hidden states share a large common component; removing it makes cosine similarity
    between items meaningful.
    """
    x = np.asarray(vecs, dtype=np.float64)
    if center and len(x):
        x = x - x.mean(axis=0, keepdims=True)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(norms, 1e-12), dtype=np.float32)
