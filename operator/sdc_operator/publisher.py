"""The publisher: the endpoints ConfigMap (`publish.endpoints_document`) written when its content changes.

Writes are coalesced (`State.publish_soon` triggers a debounced `flush`); the
document is built from the LocalLLMs as the index shows them, each with the
status this process last wrote (the watch may not show it yet), and its pods.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from sdc_operator import kube, metrics
from sdc_operator.backoff import retry_delay
from sdc_operator.publish import ENDPOINTS_KEY, audience, endpoints_configmap, endpoints_document
from sdc_operator.state import State


async def flush(state: State, _: Hashable = None) -> None:
    """The debounced write (`State.flush_publish`)."""
    index = state.indexes.get("llm_index")
    if index is None:
        return
    settings = state.settings
    llms = []
    for k, store in index.items():
        for item in store:
            if item["metadata"].get("deletionTimestamp"):
                continue
            llms.append({**item, "status": state.last_status.get(k, item.get("status"))})
    document = endpoints_document(
        llms,
        audience(settings.endpoints_namespace, settings.publish_namespaces, settings.publish_pool),
        state.indexes.get("pod_index"),  # each LocalLLM's pods as the watch shows them: one entry per ready pod
    )
    if not state.published_known:
        data = await kube.read_configmap_data(settings.endpoints_namespace, settings.endpoints_configmap)
        state.published, state.published_known = (data or {}).get(ENDPOINTS_KEY), True
    if state.published == document:
        return
    try:
        await kube.apply(endpoints_configmap(settings.endpoints_configmap, settings.endpoints_namespace, document))
    except kube.ApiError as err:
        metrics.ERRORS.labels("publish").inc()
        asyncio.get_running_loop().call_later(retry_delay(err.status), state.publish_soon)
        raise
    state.published = document
