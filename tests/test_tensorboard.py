"""TensorBoard shows what a run wrote: scalars every epoch and, with profile=tensorboard, a profile
listed by the Profile tab. Checked against a real `tensorboard` server on 127.0.0.1."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import QUICK

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read()
        if response.headers.get("Content-Encoding") == "gzip" or body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        return json.loads(body)


@pytest.fixture
def tensorboard_server():
    servers = []

    def start(logdir) -> str:
        port = free_port()
        binary = os.path.join(os.path.dirname(sys.executable), "tensorboard")
        proc = subprocess.Popen([binary, "--logdir", str(logdir), "--port", str(port), "--host", "127.0.0.1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        servers.append(proc)
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 90
        while time.time() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"tensorboard exited: {proc.stderr.read()[-2000:]}")
            try:
                get_json(base + "/data/plugins_listing")
                return base
            except OSError:
                time.sleep(0.5)
        raise AssertionError("tensorboard did not answer within 90 s")

    yield start
    for proc in servers:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_scalars_and_profile_are_served_by_a_real_tensorboard(train, tmp_path, tensorboard_server):
    run = train(*QUICK, "data.num_examples=4096", "profile=tensorboard", "profile.batches=[2,3]", "export=none")
    logdir = tmp_path / "run" / "tensorboard"
    profiles = list(logdir.rglob("*.xplane.pb"))
    assert profiles, "profile=tensorboard wrote no xplane.pb"
    base = tensorboard_server(logdir)

    plugins = get_json(base + "/data/plugins_listing")
    assert plugins["scalars"]["enabled"]
    assert "profile" in plugins, "tensorboard-plugin-profile is not installed: the Profile tab would 404"

    deadline = time.time() + 60
    tags = {}
    while time.time() < deadline and not ({"train", "validation"} <= set(tags)):
        tags = get_json(base + "/data/plugin/scalars/tags")
        time.sleep(0.5)
    assert "epoch_loss" in tags["train"] and "epoch_loss" in tags["validation"]
    points = get_json(base + "/data/plugin/scalars/scalars?run=train&tag=epoch_loss")
    assert len(points) == run["epochs_completed"]  # one point per epoch

    runs = []
    while time.time() < deadline and not runs:
        runs = get_json(base + "/data/plugin/profile/runs")
        time.sleep(0.5)
    assert any(r.startswith("train") for r in runs), runs
