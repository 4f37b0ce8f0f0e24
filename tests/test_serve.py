"""mode=serve: a real server process (KServe's model server) answering TF Serving's REST API with a
real HTTP client; versions appear, disappear and are refused while it runs; bad input gets TF
Serving's errors; /metrics counts requests, batches, classes and drift; SIGTERM lets in-flight
requests finish. One server process is shared by the module."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import QUICK

pytestmark = pytest.mark.slow

SECRET = 987654.25  # a request value that must never reach the server's log


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def publish(source: Path, target: Path) -> None:
    """Copy a version dir the way scaleflow's exporter publishes one: staged, then renamed."""
    staging = target.parent / f".{target.name}.staging"
    shutil.copytree(source, staging)
    os.rename(staging, target)


@pytest.fixture(scope="module")
def exported(tf, tmp_path_factory):
    """A trained model exported as version 1 of model `clf`, and its in-process predictions."""
    from scaleflow.cli import compose
    from scaleflow.export.saved_model import serving_function
    from scaleflow.training.train import run

    base = tmp_path_factory.mktemp("serve")
    run(compose([*QUICK, f"export.dir={base / 'models'}", "export.name=clf"]), str(base / "run"))
    model_dir = base / "models" / "clf"
    meta = json.loads((model_dir / "1" / "scaleflow_export.json").read_text())["metadata"]
    x = np.random.default_rng(0).normal(size=(5, meta["input_shape"][0])).astype(np.float32)
    return {"base": base, "model_dir": model_dir, "x": x, "expected": serving_function(str(model_dir / "1"))(x),
            "meta": meta}


class Server:
    def __init__(self, process, port, log_path):
        self.process, self.port, self.log_path = process, port, log_path
        self.url = f"http://127.0.0.1:{port}"

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")


@pytest.fixture(scope="module")
def server(exported):
    import httpx

    base, model_dir = exported["base"], exported["model_dir"]
    shutil.copytree(model_dir / "1", base / "v1-pristine")
    port = free_port()
    log_path = base / "server.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "scaleflow", "mode=serve", f"serve.model_dir={model_dir}", f"serve.port={port}",
             "serve.versions=[1]", "serve.poll_s=0.2", "serve.drift_window=20", "serve.max_body_bytes=20000",
             f"hydra.run.dir={base / 'serve-run'}"],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    server = Server(process, port, log_path)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, server.log()[-3000:]
        try:
            if httpx.get(f"{server.url}/v2/health/ready", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    else:
        process.kill()
        pytest.fail("server not ready in 180 s:\n" + server.log()[-3000:])
    yield server
    if process.poll() is None:
        process.kill()
        process.wait(30)


def get(server, path):
    import httpx

    return httpx.get(server.url + path, timeout=30)


def post(server, path, body):
    import httpx

    content = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(server.url + path, content=content, headers={"Content-Type": "application/json"}, timeout=30)


def wait_for(check, what: str, timeout: float = 120.0):  # loading a version takes long on a busy machine
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def versions(server) -> dict:
    return {row["version"]: row for row in get(server, "/v1/models/clf").json()["model_version_status"]}


# --------------------------------------------------------------------------------------- API
def test_tf_serving_rest_api_status_metadata_and_predict(server, exported):
    x, expected = exported["x"], exported["expected"]
    assert get(server, "/v2/health/live").status_code == 200 and get(server, "/v2/health/ready").status_code == 200
    status = get(server, "/v1/models/clf").json()
    assert status == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                                "status": {"error_code": "OK", "error_message": ""}}]}
    assert get(server, "/v1/models/clf/versions/1").json() == status
    meta = get(server, "/v1/models/clf/metadata").json()
    assert meta["model_spec"] == {"name": "clf", "signature_name": "", "version": "1"}
    signature = meta["metadata"]["signature_def"]["signature_def"]["serving_default"]
    (name, tensor), = signature["inputs"].items()
    assert tensor["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in tensor["tensor_shape"]["dim"]] == ["-1", str(x.shape[1])]

    assert {"scores", "class_id", "class_name"} <= set(signature["outputs"])
    assert signature["outputs"]["class_name"]["dtype"] == "DT_STRING"

    # Several named outputs: a dict per row (row format), a list per output (columnar), as TF Serving.
    rows = post(server, "/v1/models/clf:predict", {"instances": x.tolist()})
    assert rows.status_code == 200
    predictions = rows.json()["predictions"]
    np.testing.assert_allclose([p["scores"] for p in predictions], expected, atol=1e-5)
    classes = exported["meta"].get("class_names") or [str(i) for i in range(expected.shape[1])]
    assert [p["class_name"] for p in predictions] == [classes[i] for i in expected.argmax(1)]
    named = post(server, "/v1/models/clf/versions/1:predict", {"signature_name": "serving_default",
                                                               "instances": [{name: r} for r in x.tolist()]})
    assert named.json() == rows.json()
    columns = post(server, "/v1/models/clf:predict", {"inputs": {name: x.tolist()}}).json()["outputs"]
    np.testing.assert_allclose(columns["scores"], expected, atol=1e-5)
    assert columns["class_name"] == [p["class_name"] for p in predictions]
    # KServe's v2 open inference protocol on the same model.
    v2 = post(server, "/v2/models/clf/infer", {"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                                           "data": x.flatten().tolist()}]})
    assert v2.status_code == 200, v2.text
    scores = next(o for o in v2.json()["outputs"] if o["name"] == "scores")
    np.testing.assert_allclose(np.reshape(scores["data"], expected.shape), expected, atol=1e-5)


def test_bad_input_gets_tf_serving_errors_and_the_server_keeps_serving(server, exported):
    width = exported["x"].shape[1]
    cases = [
        ("/v1/models/clf:predict", b'{"instances": [[1, 2', 400, "JSON Parse error"),
        ("/v1/models/clf:predict", [1, 2], 400, "must be a JSON object"),
        ("/v1/models/clf:predict", {"rows": [[SECRET] * width]}, 400, "Missing 'inputs' or 'instances' key"),
        ("/v1/models/clf:predict", {"instances": [[SECRET] * (width + 1)]}, 400, f"expected shape [batch, {width}]"),
        ("/v1/models/clf:predict", {"instances": [[SECRET], [SECRET, SECRET]]}, 400, "different lengths"),
        ("/v1/models/clf:predict", {"instances": [["abc"] * width]}, 400, "expected numbers"),
        ("/v1/models/clf:predict", {"instances": []}, 400, "non-empty"),
        ("/v1/models/clf:predict", {"instances": [[SECRET] * width], "signature_name": "nope"}, 400, "signature"),
        ("/v1/models/nope:predict", {"instances": [[0.0] * width]}, 404,
         "Servable not found for request: Latest(nope)"),
        ("/v1/models/clf/versions/9:predict", {"instances": [[0.0] * width]}, 404, "Specific(clf, 9)"),
        ("/v1/models/clf/versions/x:predict", {"instances": [[0.0] * width]}, 400, "version must be"),
        ("/v1/models/clf/labels/nope:predict", {"instances": [[0.0] * width]}, 404, "label 'nope'"),
        ("/v1/models/clf:predict", {"instances": [[SECRET] * width] * 200}, 413, "serve.max_body_bytes=20000"),
    ]
    for path, body, status, message in cases:
        response = post(server, path, body)
        assert response.status_code == status, (path, body if len(str(body)) < 200 else "...", response.text)
        assert set(response.json()) == {"error"} and message in response.json()["error"], response.text
    assert get(server, "/v1/models/nope").status_code == 404
    # A chunked body (no Content-Length) over the limit is cut off too.
    import httpx

    chunked = httpx.post(server.url + "/v1/models/clf:predict", headers={"Content-Type": "application/json"},
                         content=iter([b'{"instances": [', b"[0.5]," * 5000, b"[0.5]]}"]), timeout=30)
    assert chunked.status_code == 413 and "error" in chunked.json()
    ok = post(server, "/v1/models/clf:predict", {"instances": exported["x"].tolist()})
    assert ok.status_code == 200
    assert str(SECRET) not in server.log() and "987654" not in server.log()


# ---------------------------------------------------------------------------------- versions
def test_versions_appear_are_refused_pinned_labelled_and_removed_without_restart(server, exported):
    model_dir, pristine = exported["model_dir"], exported["base"] / "v1-pristine"
    publish(pristine, model_dir / "3")
    assert wait_for(lambda: versions(server).get("3", {}).get("state") == "AVAILABLE", "version 3 to load")
    assert get(server, "/v1/models/clf/metadata").json()["model_spec"]["version"] == "3"  # latest by default
    assert versions(server)["1"]["state"] == "AVAILABLE"  # pinned by serve.versions=[1]

    # Half-written (no integrity file) and tampered versions are never served, and the server says why.
    (model_dir / "5").mkdir()
    (model_dir / "5" / "saved_model.pb").write_bytes(b"partial")
    tampered = model_dir / ".4.staging"
    shutil.copytree(pristine, tampered)
    (tampered / "variables" / "variables.index").write_bytes(b"tampered")
    os.rename(tampered, model_dir / "4")
    refused = wait_for(lambda: (lambda v: v if {"4", "5"} <= set(v) else None)(versions(server)), "refusals")
    assert refused["5"]["state"] == "END"
    assert "no readable scaleflow_export.json" in refused["5"]["status"]["error_message"]
    assert "changed file variables/variables.index" in refused["4"]["status"]["error_message"]
    assert get(server, "/v1/models/clf/metadata").json()["model_spec"]["version"] == "3"
    assert post(server, "/v1/models/clf/versions/4:predict", {"instances": exported["x"].tolist()}).status_code == 404
    log = server.log()
    assert re.search(r"refusing version 4 of model clf .*changed file variables/variables.index", log)
    assert "refusing version 5 of model clf" in log
    shutil.rmtree(model_dir / "4")
    shutil.rmtree(model_dir / "5")

    # Labels (written by promotion / mode=deploy) pin versions and route requests.
    from scaleflow.deploy.labels import move

    move(str(model_dir), {"stable": 1, "canary": 3}, action="set", reason="test")
    wait_for(lambda: get(server, "/v1/models/clf/labels/canary/metadata").status_code == 200, "labels")
    assert get(server, "/v1/models/clf/labels/stable/metadata").json()["model_spec"]["version"] == "1"
    assert get(server, "/v1/models/clf/labels/canary").json()["model_version_status"][0]["version"] == "3"
    labelled = post(server, "/v1/models/clf/labels/stable:predict", {"instances": exported["x"].tolist()})
    np.testing.assert_allclose([p["scores"] for p in labelled.json()["predictions"]], exported["expected"], atol=1e-5)
    move(str(model_dir), {"canary": None}, action="set", reason="test")

    # Removing a version unloads it; the latest is the highest remaining one.
    shutil.rmtree(model_dir / "3")
    wait_for(lambda: "3" not in versions(server), "version 3 to unload")
    assert get(server, "/v1/models/clf/metadata").json()["model_spec"]["version"] == "1"
    assert post(server, "/v1/models/clf/versions/3:predict", {"instances": exported["x"].tolist()}).status_code == 404
    assert "unloaded clf:1@" not in server.log()
    assert re.search(r"unloaded clf:3@\w+: its directory was removed", server.log())


# ----------------------------------------------------------------------------------- metrics
def test_metrics_count_requests_batches_classes_and_drift_per_model_identity(server, exported):
    x = exported["x"]
    checksum = json.loads((exported["model_dir"] / "1" / "scaleflow_export.json").read_text())["checksum"][7:19]
    for _ in range(3):  # windows of 20 rows far outside the training range: drift, logged once each
        far = (x[:1] * 0 + 50.0).tolist() * 20
        assert post(server, "/v1/models/clf/versions/1:predict", {"instances": far}).status_code == 200
    text = get(server, "/metrics").text
    identity = f'checksum="{checksum}",'
    requests = r'scaleflow_serve_requests_total\{checksum="%s",code="%d",model="clf",version="1"\} (\S+)'
    ok = re.search(requests % (checksum, 200), text)
    assert ok and float(ok.group(1)) >= 3, text[:3000]
    assert re.search(requests % (checksum, 400), text)
    assert re.search(r'scaleflow_serve_requests_total\{checksum="",code="404",model="nope",version=""\}', text)
    assert "scaleflow_serve_request_latency_seconds_bucket{" + identity in text
    assert "scaleflow_serve_batch_size_bucket{" + identity in text
    assert "scaleflow_serve_predicted_class_total{" + identity in text
    psi = r'scaleflow_serve_feature_drift_psi\{%sfeature="[^"]+",model="clf",version="1"\} (\S+)'
    drift = [float(v) for v in re.findall(psi % identity, text)]
    assert len(drift) == x.shape[1] and max(drift) > 0.2
    drifted = float(re.search(r'scaleflow_serve_drift_windows_total\{%sdrifted="true",model="clf",version="1"\} (\S+)'
                              % identity, text).group(1))
    assert drifted >= 2 and server.log().count("input drift on clf:1@") == drifted
    # mode=models shows it: the server's report beside the versions.
    report = json.loads((exported["model_dir"] / "serving.json").read_text())["versions"]["1"]
    assert report["drift_reported"] is True and report["drifted_windows"] == drifted


# ---------------------------------------------------------------------------------- shutdown
def test_sigterm_finishes_the_request_in_flight_then_exits_0(server, exported):
    body = json.dumps({"instances": exported["x"].tolist()}).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(b"POST /v1/models/clf:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        time.sleep(0.5)  # the server has the request's head; its body is still coming
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        conn.sendall(body[10:])
        response = b""
        while b"\r\n\r\n" not in response or len(response.split(b"\r\n\r\n", 1)[1]) < 10:
            chunk = conn.recv(65536)
            if not chunk:
                break
            response += chunk
    assert response.startswith(b"HTTP/1.1 200"), response[:300]
    assert b'"predictions"' in response
    assert server.process.wait(60) == 0, server.log()[-2000:]
    assert "server stopped" in server.log()


# ---------------------------------------------------------------------------------- no export
PROBE = """
import sys
from scaleflow.cli import main
try:
    main(sys.argv[1:])
    code = 0
except SystemExit as e:
    code = e.code
print("TENSORFLOW_IMPORTED=%s" % ("tensorflow" in sys.modules), file=sys.stderr)
sys.exit(code)
"""


def test_a_dir_without_a_verified_export_is_a_config_error_before_tensorflow(tmp_path):
    models = tmp_path / "models" / "clf"
    (models / "1").mkdir(parents=True)
    (models / "1" / "saved_model.pb").write_bytes(b"half-written")
    for args, message in (([f"serve.model_dir={models}"], "version 1: no readable scaleflow_export.json"),
                          ([f"serve.run={tmp_path}"], "run.json")):
        result = subprocess.run([sys.executable, "-c", PROBE, "mode=serve", *args, f"hydra.run.dir={tmp_path / 'r'}"],
                                cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr[-2000:]
        assert "TENSORFLOW_IMPORTED=False" in result.stderr and "Traceback" not in result.stderr
        assert message in result.stderr and str(tmp_path) in result.stderr


def test_model_dir_checks_name_the_path_and_each_refused_version(tmp_path):
    from scaleflow.errors import ConfigError
    from scaleflow.modes.serve import check_model_dir

    with pytest.raises(ConfigError, match="Nothing is there"):
        check_model_dir("serve.model_dir", str(tmp_path / "missing"))
    (tmp_path / "2").mkdir()
    with pytest.raises(ConfigError, match=r"version 2: no readable scaleflow_export.json") as error:
        check_model_dir("serve.model_dir", str(tmp_path))
    assert str(tmp_path) in str(error.value)
