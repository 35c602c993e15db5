"""A load generator in its own process: N concurrent clients for S seconds, JSON results on stdout.

aiohttp rather than httpx: the generator must not be the bottleneck, and its
cost is the same for every target, so ratios between targets hold.
Run: `python benchmarks/load.py --url URL --concurrency N --seconds S [--stream]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


async def main(
    url: str, concurrency: int, seconds: float, stream: bool, model: str, api_key: str | None = None
) -> dict[str, object]:
    body = {"model": model, "messages": [{"role": "user", "content": "안녕하세요"}], "stream": stream, "max_tokens": 16}
    latencies: list[float] = []
    ttfts: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    stop_at = time.perf_counter() + seconds

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            try:
                async with session.post(url, json=body, headers=headers) as resp:
                    if resp.status != 200:
                        errors += 1
                        await resp.read()
                        continue
                    if stream:
                        first = None
                        async for line in resp.content:
                            if first is None and line.startswith(b"data: {"):
                                first = time.perf_counter() - started
                            if line.strip() == b"data: [DONE]":
                                break
                        ttfts.append(first if first is not None else float("nan"))
                    else:
                        await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency * 2, force_close=False)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        begin = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - begin
    return {"requests": len(latencies), "errors": errors, "seconds": elapsed, "latencies": latencies, "ttfts": ttfts}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("--model", default="fake")
    parser.add_argument("--api-key", default=None, help="sent as Authorization: Bearer KEY")
    args = parser.parse_args()
    result = asyncio.run(main(args.url, args.concurrency, args.seconds, args.stream, args.model, args.api_key))
    print(json.dumps(result))
