"""`sdc-runtime --model DIR`: serve a local Transformers model over the OpenAI protocol."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from importlib import metadata
from pathlib import Path

from sdc_runtime.loading import DEVICE_MAPS, LoadOptions


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value and value.isdigit() else default


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sdc-runtime", description=__doc__)
    p.add_argument("--model", type=Path, required=True, help="local model directory (config.json, safetensors)")
    p.add_argument("--served-model-name", default=None, help="the name clients use (default: the directory)")
    p.add_argument("--host", default=os.environ.get("SDC_RUNTIME_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=_env_int("SDC_RUNTIME_PORT", 8000))
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--dtype",
        choices=["auto", "float16", "bfloat16", "float32"],
        default="auto",
        help="weights' precision; auto: bfloat16 on a GPU that has it, else float16; float32 on CPU",
    )
    p.add_argument(
        "--device-map",
        choices=DEVICE_MAPS,
        default=None,
        help="accelerate's placement over the visible devices (default: auto on a GPU, none on CPU)",
    )
    p.add_argument(
        "--quantization",
        choices=["none", "4bit", "8bit"],
        default="none",
        help="bitsandbytes 4/8-bit weights (CUDA only; needs the runtime-quant extra)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the model repository's own Python code (the operator passes it only when the LocalLLM asks)",
    )
    p.add_argument(
        "--max-batch",
        type=int,
        default=_env_int("SDC_RUNTIME_MAX_BATCH", 32),
        help="most sequences decoded together (SDC_RUNTIME_MAX_BATCH)",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=_env_int("SDC_RUNTIME_MAX_QUEUE", 256),
        help="requests that may wait for a row; beyond that a 503 with Retry-After (SDC_RUNTIME_MAX_QUEUE)",
    )
    p.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="serve a shorter context than the model's own (LocalLLM engine.maxModelLen, like vLLM's flag)",
    )
    p.add_argument(
        "--chat-template",
        default=None,
        help="a Jinja chat template, inline or a file, replacing the model's (like vLLM's flag): for models "
        "trained on a prompt format their tokenizer does not ship (KoAlpaca, KULLM)",
    )
    p.add_argument(
        "--prefix-cache-tokens",
        type=int,
        default=_env_int("SDC_RUNTIME_PREFIX_CACHE_TOKENS", 4096),
        help="prompt-prefix KV kept across requests, in tokens (blocks of 16, LRU); 0 turns the prefix cache off "
        "(SDC_RUNTIME_PREFIX_CACHE_TOKENS)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=_env_int("SDC_MAX_BODY_BYTES", 4 * 2**20),
        help="largest request body; larger ones get a 413 unread (SDC_MAX_BODY_BYTES)",
    )
    return p


def _default_alloc_conf() -> None:
    """Expandable segments unless the caller chose: less fragmentation as KV caches grow and shrink.

    Set before torch loads. torch 2.9 renamed PYTORCH_CUDA_ALLOC_CONF to PYTORCH_ALLOC_CONF (the
    image sets the new name); an explicit setting of either wins.
    """
    if "PYTORCH_ALLOC_CONF" in os.environ or "PYTORCH_CUDA_ALLOC_CONF" in os.environ:
        return
    try:
        major, minor = (int(p) for p in metadata.version("torch").split(".")[:2])
    except (metadata.PackageNotFoundError, ValueError):
        return
    name = "PYTORCH_ALLOC_CONF" if (major, minor) >= (2, 9) else "PYTORCH_CUDA_ALLOC_CONF"
    os.environ[name] = "expandable_segments:True"


def _template(value: str | None) -> str | None:
    """`--chat-template`: a file's text when it names a file, else the template itself (vLLM's rule)."""
    if not value:
        return None
    if "{" not in value and Path(value).is_file():
        return Path(value).read_text()
    return value


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    _default_alloc_conf()
    # The generation thread holds the GIL between torch kernels; at the default 5 ms switch
    # interval the event loop waits that long for every streamed token.
    sys.setswitchinterval(0.0005)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    import uvicorn

    from sdc_runtime.engine import Engine, ModelDirError
    from sdc_runtime.server import create_app

    options = LoadOptions(args.device, args.dtype, args.device_map, args.quantization, args.trust_remote_code)
    name = args.served_model_name or args.model.resolve().name
    try:
        engine = Engine(
            args.model,
            options=options,
            max_batch=max(1, args.max_batch),
            max_queue=max(0, args.max_queue),
            max_model_len=args.max_model_len if args.max_model_len and args.max_model_len > 0 else None,
            chat_template=_template(args.chat_template),
            prefix_cache_tokens=max(0, args.prefix_cache_tokens),
            served_model_name=name,
        )
    except ModelDirError as err:
        print(f"sdc-runtime: {err}", file=sys.stderr)
        sys.exit(2)

    def load() -> None:
        try:
            engine.load()
        except ModelDirError as err:
            print(f"sdc-runtime: {err}", file=sys.stderr)
            os._exit(2)  # the server cannot serve without a model: fail the pod, do not hang

    threading.Thread(target=load, name="sdc-load", daemon=True).start()
    app = create_app(engine, name, max_body_bytes=args.max_body_bytes)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)
