"""A real Label Studio server on 127.0.0.1 for a test: its SQLite database a copy of the one
``scripts/setup.sh --test`` migrated once (a minute of Django migrations, then seconds to start),
its reviewer user and legacy token made at start, nothing sent anywhere else (no version check, no
analytics, no Sentry)."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from .helpers import ROOT, free_port, wait_for

VENV = Path(os.environ.get("VIDEO_MINER_LABEL_STUDIO_VENV", ROOT / ".venv-ls"))
START_S = 180


@dataclass(frozen=True)
class Server:
    url: str
    #: The reviewer's legacy token (label-studio-sdk and ``video-miner import`` take it).
    token: str
    python: Path


@contextmanager
def label_studio(folder: Path) -> Iterator[Server]:
    exe, template = VENV / "bin" / "label-studio", VENV / "template"
    if not exe.exists() or not (template / "label_studio.sqlite3").exists():
        pytest.skip(f"{VENV} is missing: `bash scripts/setup.sh --test` installs Label Studio and migrates "
                    "its database")
    data = folder / "label-studio"
    shutil.copytree(template, data)
    port, token = free_port(), secrets.token_hex(20)
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data), "DJANGO_DB": "sqlite",
           "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "LATEST_VERSION_CHECK": "false",
           "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "", "FRONTEND_SENTRY_DSN": ""}
    log = (folder / "label-studio.log").open("wb")
    proc = subprocess.Popen([str(exe), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port),
                             "--data-dir", str(data), "--username", "reviewer@example.com",
                             "--password", secrets.token_hex(12), "--user-token", token],
                            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url, proc, folder / "label-studio.log")
        yield Server(url, token, VENV / "bin" / "python")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _wait_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until /health answers (a server's start has no event to wait on but its port answering);
    the server process's exit ends the wait, and either failure shows its log."""
    try:
        wait_for(lambda: _healthy(url), f"Label Studio at {url}", START_S, alive=lambda: proc.poll() is None)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {log.read_text()[-3000:]}") from None


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False
