"""Documents: add (indexed for retrieval, per tenant) and delete."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from sdc_orchestrator import metrics
from sdc_orchestrator.api.deps import ServicesDep, TenantDep
from sdc_orchestrator.api.errors import error
from sdc_orchestrator.api_models import DocumentIn
from sdc_orchestrator.failures import NoRouteError
from sdc_orchestrator.limits import InputError, check_metadata
from sdc_orchestrator.pipeline import until_disconnected

router = APIRouter()


def check_documents(body: DocumentIn | list[DocumentIn], services: ServicesDep) -> list[DocumentIn]:
    settings = services.settings
    docs = body if isinstance(body, list) else [body]
    if not docs:
        raise InputError("no documents: send one object or a non-empty list")
    if len(docs) > settings.sdc_max_documents_per_request:
        raise InputError(f"{len(docs)} documents; at most {settings.sdc_max_documents_per_request} per request")
    for i, doc in enumerate(docs):
        where = f"documents[{i}]" if isinstance(body, list) else "document"
        if len(doc.text) > settings.sdc_max_document_chars:
            raise InputError(
                f"{where}.text: {len(doc.text)} characters; the limit is {settings.sdc_max_document_chars}", 413
            )
        check_metadata(doc.metadata, services.input_limits, f"{where}.metadata")
    return docs


@router.post("/api/v1/documents")
async def add_documents(
    body: DocumentIn | list[DocumentIn], request: Request, services: ServicesDep, tenant: TenantDep
) -> JSONResponse:
    docs = check_documents(body, services)
    settings = services.settings
    retriever = await services.retriever_for(tenant)

    async def ingest() -> list[Any]:
        # One indexing at a time (Kiwi is CPU-bound): the rest wait here, not in threads.
        async with services.ingest_slots:
            return [await retriever.upsert(d.id, d.text, d.metadata) for d in docs]

    # Cancelled when the client leaves or the time bound passes: the documents not yet stored are not stored.
    try:
        async with asyncio.timeout(settings.sdc_ingest_timeout_s):
            stored = await until_disconnected(ingest(), request.is_disconnected)
    except NoRouteError:
        metrics.INGESTS.labels("cancelled").inc()
        raise
    except TimeoutError:
        metrics.INGESTS.labels("timeout").inc()
        raise InputError(
            f"indexing took longer than {settings.sdc_ingest_timeout_s:g} s (SDC_INGEST_TIMEOUT_S); "
            "send smaller documents",
            413,
        ) from None
    metrics.INGESTS.labels("ok").inc()
    return JSONResponse({"documents": [{"id": d.id, "passages": len(d.passages)} for d in stored]})


@router.delete("/api/v1/documents/{doc_id:path}")
async def delete_document(doc_id: str, services: ServicesDep, tenant: TenantDep) -> JSONResponse:
    if await (await services.retriever_for(tenant)).delete(doc_id):
        return JSONResponse({"deleted": doc_id})
    return error(404, f"no document with id '{doc_id[:512]}'")
