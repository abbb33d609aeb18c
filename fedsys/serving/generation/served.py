"""Which language models a worker serves: model ids to (engine, adapter), one engine per base.

A version is either an adapter over a shared base (served side by side with its siblings from
one copy of the base) or a whole model (merged weights: an engine of its own). ``name`` means
the active version, ``name@N`` version N while it stays loaded. Publishing a new version loads
it first and moves the active pointer after, so no request ever finds nothing to run; older
versions stay loaded (up to ``keep_versions``) and are unloaded only when no sequence uses them,
so a stream always finishes on the version it started with. A version's compressed variants
(int8 weight-only, low-rank: whole models) each run in an engine of their own, picked per
request, and leave with their version.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedsys.errors import UnknownModel
from fedsys.serving.generation.limits import GenerationLimits

if TYPE_CHECKING:  # the engine imports transformers: loaded with the first language model
    from fedsys.serving.generation.engine import GenerationEngine
    from fedsys.serving.generation.loading import CausalLM

MODEL_ID = re.compile(r"(?P<name>[A-Za-z0-9._-]+)(?:@(?P<version>[0-9]+))?")


@dataclass(frozen=True, eq=False)
class ServedLM:
    """One served version of a language model."""

    name: str
    version: int
    engine: GenerationEngine
    adapter: str | None  # the adapter's name inside the engine; None: the engine's own weights
    created: int = field(default_factory=lambda: int(time.time()))
    variant: str = "fp32"  # or a compressed variant of the version (its own engine)
    weights_sha256: str | None = None  # a variant's weight file, to notice a replaced one

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


class LanguageModels:
    """Model ids of this worker's language models, and the engines behind them."""

    def __init__(self, limits: GenerationLimits, *, keep_versions: int = 4) -> None:
        self.limits = limits
        self.keep_versions = keep_versions
        self._engines: dict[str, GenerationEngine] = {}  # base key -> engine
        self._versions: dict[str, dict[int, ServedLM]] = {}
        self._variants: dict[tuple[str, int], dict[str, ServedLM]] = {}
        self._active: dict[str, int] = {}

    # lookup ------------------------------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self._active)

    def served(self, name: str) -> list[ServedLM]:
        return [self._versions[name][v] for v in sorted(self._versions.get(name, {}))]

    def active(self, name: str) -> ServedLM | None:
        version = self._active.get(name)
        return None if version is None else self._versions[name][version]

    def variants_of(self, name: str, version: int) -> list[str]:
        """The forms ``name`` v``version`` is served in: fp32 and its loaded variants."""
        if version not in self._versions.get(name, {}):
            return []
        return ["fp32", *sorted(self._variants.get((name, version), {}))]

    def resolve(self, model_id: str, variant: str | None = None) -> ServedLM:
        """``name`` (the active version) or ``name@N``, in ``variant`` (None or ``fp32``: the
        version's own weights); UnknownModel names what is served."""
        served = self._resolve(model_id)
        if variant is None or variant == served.variant:
            return served
        found = self._variants.get((served.name, served.version), {}).get(variant)
        if found is None:
            raise UnknownModel(
                f"{served.id} has no variant {variant!r}; served: "
                f"{self.variants_of(served.name, served.version)}"
            )
        return found

    def _resolve(self, model_id: str) -> ServedLM:
        match = MODEL_ID.fullmatch(model_id)
        served = None
        if match is not None:
            name, version = match["name"], match["version"]
            if version is None:
                served = self.active(name)
            else:
                served = self._versions.get(name, {}).get(int(version))
        if served is None:
            ids = [s.id for n in self.names() for s in self.served(n)]
            raise UnknownModel(
                f"model {model_id!r} is not a served language model; served: "
                f"{self.names() + ids} (use NAME for the active version or NAME@VERSION)"
            )
        return served

    # loading -----------------------------------------------------------------------------

    def find_engine(self, key: str) -> GenerationEngine | None:
        return self._engines.get(key)

    def engine_for(self, key: str, lm: CausalLM) -> GenerationEngine:
        """The engine of base ``key``, started on first use with ``lm``."""
        engine = self._engines.get(key)
        if engine is None:
            from fedsys.serving.generation.engine import GenerationEngine

            engine = GenerationEngine(lm, self.limits, name=key[:16]).start()
            self._engines[key] = engine
        return engine

    async def add(
        self,
        name: str,
        version: int,
        engine: GenerationEngine,
        *,
        adapter: tuple[dict[str, Any], dict[str, Any]] | Path | None = None,
        activate: bool = True,
    ) -> ServedLM:
        """Serve ``name@version``: an adapter (peft config and tensors, or a peft directory)
        loaded into ``engine``, or the engine's own weights; then make it the active version
        unless told otherwise. The old active version stays loaded for its running streams."""
        adapter_name = None
        if adapter is not None:
            adapter_name = f"{name}@{version}"
            if isinstance(adapter, Path):
                await engine.load_adapter(adapter_name, adapter)
            else:
                await engine.load_adapter_tensors(adapter_name, *adapter)
        served = ServedLM(name, version, engine, adapter_name)
        self._versions.setdefault(name, {})[version] = served
        if activate:
            self._active[name] = version
        await self._evict(name)
        return served

    def add_variant(
        self, name: str, version: int, variant: str, engine: GenerationEngine, sha256: str
    ) -> ServedLM:
        """Serve ``variant`` of the loaded version ``name`` v``version`` from ``engine``
        (started here); a variant it replaces stops once no sequence uses it."""
        served = ServedLM(
            name, version, engine.start(), None, variant=variant, weights_sha256=sha256
        )
        forms = self._variants.setdefault((name, version), {})
        old = forms.get(variant)
        forms[variant] = served
        if old is not None and not old.engine.in_use(None):
            old.engine.stop()
        return served

    def has_variant(self, name: str, version: int, variant: str, sha256: str) -> bool:
        """Whether this exact variant file already serves ``name`` v``version``."""
        found = self._variants.get((name, version), {}).get(variant)
        return found is not None and found.weights_sha256 == sha256

    def is_served(self, name: str, version: int) -> bool:
        return version in self._versions.get(name, {})

    async def _evict(self, name: str) -> None:
        """Unload the oldest versions beyond ``keep_versions`` that no sequence is using."""
        versions = self._versions.get(name, {})
        active = self._active.get(name)
        for version in sorted(versions)[: max(0, len(versions) - self.keep_versions)]:
            served = versions[version]
            forms = self._variants.get((name, version), {}).values()
            if version == active or served.engine.in_use(served.adapter):
                continue
            if any(form.engine.in_use(None) for form in forms):
                continue
            del versions[version]
            for form in self._variants.pop((name, version), {}).values():
                await asyncio.to_thread(self._drop_engine, form.engine)
            if served.adapter is not None:
                await served.engine.unload_adapter(served.adapter)
            elif not any(
                s.engine is served.engine for v in self._versions.values() for s in v.values()
            ):
                await asyncio.to_thread(self._drop_engine, served.engine)

    def _drop_engine(self, engine: GenerationEngine) -> None:
        for key, candidate in list(self._engines.items()):
            if candidate is engine:
                del self._engines[key]
        engine.stop()

    def stop(self) -> None:
        """Stop every engine; nothing is served until versions are added again."""
        for engine in self._engines.values():
            engine.stop()
        self._engines.clear()
        self._versions.clear()
        self._variants.clear()
        self._active.clear()
