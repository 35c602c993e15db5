"""`sdc-runtime --model DIR`: serve a local Transformers model over the OpenAI protocol."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path

import uvicorn

from sdc_runtime.engine import Engine, ModelDirError
from sdc_runtime.server import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="sdc-runtime", description=__doc__)
    parser.add_argument("--model", type=Path, required=True, help="local model directory (config.json, safetensors)")
    parser.add_argument("--served-model-name", default=None, help="the name clients use (default: the directory)")
    parser.add_argument("--host", default=os.environ.get("SDC_RUNTIME_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("SDC_RUNTIME_PORT", "8000")))
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--max-batch", type=int, default=16, help="most sequences decoded together")
    parser.add_argument(
        "--quantization", choices=["int4", "int8"], default=None, help="load in 4 or 8 bits (bitsandbytes, GPU)"
    )
    args = parser.parse_args(argv)
    # The generation thread holds the GIL between torch kernels; at the default 5 ms switch
    # interval the event loop waits that long for every streamed token.
    sys.setswitchinterval(0.0005)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        engine = Engine(
            args.model,
            device=None if args.device == "auto" else args.device,
            max_batch=args.max_batch,
            quantization=args.quantization,
        )
    except ModelDirError as err:
        print(f"sdc-runtime: {err}", file=sys.stderr)
        sys.exit(2)
    name = args.served_model_name or args.model.resolve().name

    def load() -> None:
        try:
            engine.load()
        except ModelDirError as err:
            print(f"sdc-runtime: {err}", file=sys.stderr)
            os._exit(2)  # the server cannot serve without a model: fail the pod, do not hang

    threading.Thread(target=load, name="sdc-load", daemon=True).start()
    uvicorn.run(create_app(engine, name), host=args.host, port=args.port, log_level="info", access_log=False)
