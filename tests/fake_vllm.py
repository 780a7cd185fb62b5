"""A stand-in for `python -m vllm.entrypoints.openai.api_server` in `teachloop serve` tests:
the same command line, a fake OpenAI-compatible server behind it (tests/fake_openai.py).

Environment: FAKE_VLLM_FAIL=1, or FAKE_VLLM_FAIL_ON_FLAG=<flag> with that flag on its command
line, exits at startup with an error in the log, as a server out of memory does;
FAKE_VLLM_DELAY_S delays becoming healthy; FAKE_VLLM_CHILD=<dir> starts a child process first,
like vLLM's engine core, to show that stopping reaches it too (its pid goes to <dir>/<port>.child).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from fake_openai import FakeOpenAIServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    args, _vllm_flags = parser.parse_known_args()
    print(f"fake vLLM: model {args.model} as {args.served_model_name}", flush=True)
    flag = os.environ.get("FAKE_VLLM_FAIL_ON_FLAG")
    if os.environ.get("FAKE_VLLM_FAIL") or (flag and flag in _vllm_flags):
        print("RuntimeError: not enough memory for the KV cache", flush=True)
        sys.exit(3)
    if os.environ.get("FAKE_VLLM_CHILD"):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        Path(os.environ["FAKE_VLLM_CHILD"], f"{args.port}.child").write_text(str(child.pid))
    time.sleep(float(os.environ.get("FAKE_VLLM_DELAY_S", "0")))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with FakeOpenAIServer(lambda body: "42", model=args.served_model_name, port=args.port):
        print("Application startup complete.", flush=True)
        stop.wait()


if __name__ == "__main__":
    main()
