"""The real ComfyUI HTTP server in a subprocess (`main.py --cpu --listen 127.0.0.1`), and a client.

Used by the tests; loopback only. The server's log goes to a file the caller can read.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HostServer:
    def __init__(
        self,
        tree: Path,
        workdir: Path,
        model_paths: dict[str, Path] | None = None,
        front_end_root: Path | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.tree = Path(tree)
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "server.log"
        self.model_paths = model_paths or {}
        self.front_end_root = front_end_root
        self.extra_args = extra_args or []
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        for name in ("input", "output", "temp"):
            (self.workdir / name).mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--input-directory", str(self.workdir / "input"),
            "--output-directory", str(self.workdir / "output"),
            "--temp-directory", str(self.workdir / "temp"),
            "--disable-auto-launch",
        ]
        if self.model_paths:
            config = self.workdir / "extra_model_paths.yaml"
            lines = ["ipx2p_tests:"] + [f"  {kind}: {path}" for kind, path in self.model_paths.items()]
            config.write_text("\n".join(lines) + "\n")
            cmd += ["--extra-model-paths-config", str(config)]
        if self.front_end_root is not None:
            cmd += ["--front-end-root", str(self.front_end_root)]
        return cmd + self.extra_args

    def start(self, timeout: float = 120.0) -> HostServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(self.command(), cwd=self.tree, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with code {self.process.returncode} while starting:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.url}/system_stats", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"ComfyUI did not answer on {self.url} within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- client ----------------------------------------------------------------------------
    def get_json(self, path: str) -> Any:
        response = requests.get(f"{self.url}{path}", timeout=60)
        response.raise_for_status()
        return response.json()

    def upload_image(self, path: Path) -> str:
        with path.open("rb") as handle:
            response = requests.post(
                f"{self.url}/upload/image", files={"image": (path.name, handle, "image/png")},
                data={"overwrite": "true"}, timeout=60,
            )
        response.raise_for_status()
        info = response.json()
        return f"{info['subfolder']}/{info['name']}" if info.get("subfolder") else str(info["name"])

    def queue(self, prompt: dict[str, Any]) -> dict[str, Any]:
        """POST /prompt; returns the server's JSON (prompt_id, or error and node_errors)."""
        response = requests.post(f"{self.url}/prompt", json={"prompt": prompt, "client_id": "ipx2p-tests"}, timeout=60)
        body: dict[str, Any] = response.json()
        body["http_status"] = response.status_code
        return body

    def wait_history(self, prompt_id: str, timeout: float = 600.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get_json(f"/history/{prompt_id}")
            entry = history.get(prompt_id)
            if entry and entry.get("status", {}).get("completed") is not None and (
                entry["status"].get("completed") or entry["status"].get("status_str") == "error"
            ):
                return dict(entry)
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running the prompt:\n{self.log_tail()}")
            time.sleep(0.5)
        raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout:.0f} s:\n{self.log_tail()}\n{json.dumps(history)[:2000]}")

    def view(self, image: dict[str, str]) -> bytes:
        response = requests.get(
            f"{self.url}/view",
            params={"filename": image["filename"], "subfolder": image.get("subfolder", ""), "type": image.get("type", "output")},
            timeout=60,
        )
        response.raise_for_status()
        return response.content

    def __enter__(self) -> HostServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
