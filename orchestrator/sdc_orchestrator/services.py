"""The orchestrator's long-lived parts, made once per app: registry, router, upstream, stores, limits.

`create_app` builds one `Services` and keeps it on `app.state.sdc`; routes reach it through a typed
dependency (api/deps.py), never as a module global, so two apps in one process (the tests) stay apart.
"""

from __future__ import annotations

import asyncio

import aiohttp

from sdc_orchestrator.backends import EndpointRegistry
from sdc_orchestrator.feedback import FeedbackStore
from sdc_orchestrator.gateway import DEFAULT_TENANT, KeyRing, Limits
from sdc_orchestrator.limits import InputLimits
from sdc_orchestrator.pipeline import Pipeline
from sdc_orchestrator.rag.retriever import Retriever
from sdc_orchestrator.rag.store import DirectoryStore
from sdc_orchestrator.router import Router
from sdc_orchestrator.scaling.client import ScaleClient
from sdc_orchestrator.scaling.waker import Waker
from sdc_orchestrator.settings import OrchestratorSettings
from sdc_orchestrator.shadow import Shadow
from sdc_orchestrator.upstream import Upstream


class Services:
    def __init__(self, settings: OrchestratorSettings) -> None:
        self.settings = settings
        self.registry = EndpointRegistry(settings)
        self.router = Router(cooldown_s=settings.sdc_cooldown_s)
        self.upstream = Upstream(settings, self.registry, self.router)
        self.upstream.waker = Waker(
            self.registry,
            ScaleClient(settings.sdc_scale_api_url, settings.sdc_scale_token_file, settings.sdc_scale_ca_file)
            if settings.sdc_scale_api_url
            else None,
            max_held=settings.sdc_hold_max_per_model,
            max_wait_s=settings.sdc_hold_max_wait_s,
        )
        self.retriever = Retriever(DirectoryStore(settings.sdc_data_dir), self.embed)
        # One index per tenant (gateway.py): the `default` tenant keeps the data directory it always had.
        self.retrievers: dict[str, Retriever] = {DEFAULT_TENANT: self.retriever}
        self._retriever_lock = asyncio.Lock()
        self.keys = KeyRing(settings.sdc_api_keys_file)
        self.limits = Limits(settings.sdc_rate_limit_rpm, settings.sdc_max_concurrent_per_key)
        self.input_limits = InputLimits(
            max_tokens=settings.sdc_max_tokens,
            max_n=settings.sdc_max_n,
            max_messages=settings.sdc_max_messages,
            max_prompt_chars=settings.sdc_max_prompt_chars,
            max_metadata_bytes=settings.sdc_max_metadata_bytes,
        )
        self.ingest_slots = asyncio.Semaphore(settings.sdc_max_concurrent_ingests)
        feedback_file = settings.sdc_feedback_file or settings.sdc_data_dir / "feedback.jsonl"
        self.feedback = FeedbackStore(settings.sdc_feedback_max_responses, feedback_file)
        self.shadow = Shadow(
            settings.sdc_shadow_provider,
            self.registry,
            lambda: self.upstream.http,
            self.upstream.model_of,
            concurrency=settings.sdc_shadow_concurrency,
            timeout_s=settings.sdc_shadow_timeout_s,
            max_pairs=settings.sdc_shadow_max_pairs,
            send=self.upstream.fitted_chat,
            keep_texts=settings.sdc_shadow_keep_texts,
            text_chars=settings.sdc_shadow_text_chars,
        )
        self.pipeline = Pipeline(settings, self.registry, self.upstream, self.feedback, self.shadow)

    async def retriever_for(self, tenant: str) -> Retriever:
        """The tenant's documents, loaded on first use (in a thread: it reads the tenant's store)."""
        if tenant not in self.retrievers:
            async with self._retriever_lock:
                if tenant not in self.retrievers:
                    root = self.settings.sdc_data_dir / "tenants" / tenant
                    self.retrievers[tenant] = await asyncio.to_thread(Retriever, DirectoryStore(root), self.embed)
        return self.retrievers[tenant]

    async def embed(self, texts: list[str]) -> list[list[float]] | None:
        if self.settings.sdc_embedding_base_url:
            base, model = self.settings.sdc_embedding_base_url.rstrip("/"), self.settings.sdc_embedding_model
        elif targets := self.registry.all("embedding"):
            base, model = targets[0].base_url, targets[0].model
        else:
            return None
        try:
            async with self.upstream.http.post(f"{base}/embeddings", json={"model": model, "input": texts}) as resp:
                resp.raise_for_status()
                data = await resp.json(content_type=None)
            return [item["embedding"] for item in sorted(data["data"], key=lambda d: d["index"])]
        except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
            return None  # dense retrieval is an improvement, never a reason to fail

    async def close(self) -> None:
        await self.router.replicas.scraper.close()
        await self.shadow.close()
        await self.upstream.close()
        if self.upstream.waker is not None:
            await self.upstream.waker.close()
