"""LoRA adapters as one small typed value, resolved and validated in exactly one place.

An adapter spec is what a user writes: a PEFT directory, ``"bundled:<dataset>"`` (an adapter
that ships inside the package) or, for an OpenAI-compatible server, the adapter's *served name*.
:func:`resolve_adapter` turns it into an :class:`AdapterRef` (like vLLM's ``LoRARequest``): local
engines load ``path``; servers receive ``name``, never a local path::

    ref = resolve_adapter("bundled:ml-100k")       # AdapterRef(name="ml-100k", path=...)
    ref = resolve_adapter("ml100k-lora", remote=True)  # a served name: AdapterRef(path=None)

Local adapters are validated before any model is loaded: ``adapter_config.json`` must be a JSON
object with sane LoRA fields and the weights file must exist (a half-copied adapter fails here,
with one line, not inside PEFT).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from llmrec_gen.errors import ModelNotFoundError

BUNDLED_PREFIX = "bundled:"
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")
FORBIDDEN_MODULES = frozenset({"embed_tokens", "lm_head"})
"""Never adapted: vLLM's LoRA loader rejects adapters that touch the embeddings or the LM head."""


@dataclass(frozen=True)
class AdapterRef:
    """A resolved LoRA adapter.

    Attributes:
        name: a stable name: the served name for servers, the bundled dataset or the directory
            name for local adapters.
        path: the local PEFT directory (``None`` for an adapter that lives only on a server).
        target_modules: the module names the adapter adapts (empty when unknown).
    """

    name: str
    path: Path | None = None
    target_modules: tuple[str, ...] = ()

    def digest(self) -> str | None:
        """SHA-256 (16 hex digits) of the adapter's weights and config; None for served names."""
        if self.path is None:
            return None
        h = hashlib.sha256()
        for file in sorted(self.path.glob("adapter_model.*")) + [self.path / "adapter_config.json"]:
            if file.is_file():
                h.update(file.read_bytes())
        return h.hexdigest()[:16]


def bundled_adapter(dataset: str) -> Path | None:
    """The LoRA adapter shipped inside the package for ``dataset`` (None when none ships)."""
    path = Path(str(resources.files("llmrec_gen.llm.assets"))) / f"adapter-{dataset}"
    return path if (path / "adapter_config.json").exists() else None


def resolve_adapter(spec: str | AdapterRef | None, *, remote: bool = False) -> AdapterRef | None:
    """Resolve an adapter spec (see the module docstring).

    Args:
        spec: ``None``, a PEFT directory, ``"bundled:<dataset>"``, or (``remote=True``) a served
            adapter name; an :class:`AdapterRef` is returned unchanged.
        remote: the adapter is used through an OpenAI-compatible server: a spec that is not a
            local directory is taken as a served name.

    Raises:
        ModelNotFoundError: no such bundled adapter, a missing directory, or a broken adapter
            (unreadable or ill-typed ``adapter_config.json``, missing weights, embedding/LM-head
            modules).
    """
    if spec is None or isinstance(spec, AdapterRef):
        return spec
    spec = str(spec)
    if spec.startswith(BUNDLED_PREFIX):
        dataset = spec[len(BUNDLED_PREFIX) :]
        path = bundled_adapter(dataset)
        if path is None:
            raise ModelNotFoundError(f"no bundled adapter for dataset {dataset!r}")
        return AdapterRef(dataset, path, _check_local(path, spec))
    path = Path(spec).expanduser()
    if path.is_dir():
        return AdapterRef(path.resolve().name, path.resolve(), _check_local(path, spec))
    if remote:
        return AdapterRef(spec)
    raise ModelNotFoundError(f"adapter not found: {spec} (expected a PEFT adapter directory)")


def _check_local(path: Path, spec: str) -> tuple[str, ...]:
    """Validate a local PEFT LoRA directory; return its target modules."""
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        raise ModelNotFoundError(
            f"adapter '{spec}' is not a PEFT adapter directory (no adapter_config.json)"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelNotFoundError(
            f"adapter '{spec}': adapter_config.json is not valid JSON ({type(exc).__name__})"
        ) from None
    if not isinstance(config, dict):
        raise ModelNotFoundError(f"adapter '{spec}': adapter_config.json is not a JSON object")
    for key in ("r", "lora_alpha"):
        value = config.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ModelNotFoundError(
                f"adapter '{spec}': adapter_config.json field '{key}' must be a number, "
                f"got {value!r}"
            )
    if config.get("peft_type", "LORA") != "LORA":
        raise ModelNotFoundError(f"adapter '{spec}': only LoRA adapters are supported")
    targets = config.get("target_modules") or []
    if isinstance(targets, str):
        targets = [targets]
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise ModelNotFoundError(f"adapter '{spec}': target_modules must be a list of names")
    bad = sorted({t for t in targets if t.split(".")[-1] in FORBIDDEN_MODULES})
    if bad or config.get("modules_to_save"):
        raise ModelNotFoundError(
            f"adapter '{spec}' adapts or saves {', '.join(bad) or 'extra modules'}: only "
            "projection layers are supported (vLLM rejects embedding/LM-head adapters)"
        )
    if not any((path / f).is_file() for f in WEIGHT_FILES):
        raise ModelNotFoundError(
            f"adapter '{spec}' has no weights ({' or '.join(WEIGHT_FILES)}): a half-copied "
            "adapter? copy the whole directory again"
        )
    return tuple(targets)


def check_targets(ref: AdapterRef, module_names: set[str]) -> None:
    """Raise unless every target module of ``ref`` exists in the base model.

    Args:
        ref: the adapter.
        module_names: the last component of every module name of the base model.
    """
    missing = sorted(t for t in ref.target_modules if t.split(".")[-1] not in module_names)
    if missing:
        raise ModelNotFoundError(
            f"adapter '{ref.name}' targets module(s) {', '.join(missing)} that the base model "
            "does not have: was it trained for another model?"
        )
