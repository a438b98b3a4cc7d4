"""expertseg annotate: checks before it listens; a port in use or a model without prompts is one
line and exit 2; the server serves its page and API only, behind the token."""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

from experts.annotation.server import make_server, page_url
from experts.annotation.service import AnnotationService
from experts.bundle import save_bundle
from pipelines.cli import cli
from toymodels import toy_interactive_model


@pytest.fixture
def model_dir(tmp_path):
    return str(save_bundle(tmp_path / "inter" / "model", toy_interactive_model()))


def test_a_port_in_use_is_one_line_and_exit_2(model_dir, toy_dataset):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["annotate", "--model", model_dir, "--data", str(toy_dataset), "--expert", "drme", "--port", str(port)])
    assert result.exit_code == 2 and "already in use" in result.output and "--port" in result.output
    assert not (toy_dataset / "annotations").exists()




def test_the_server_serves_the_page_and_the_api_behind_the_token_and_nothing_else(toy_dataset):
    service = AnnotationService(toy_interactive_model(), toy_dataset, "drme")
    server = make_server(service, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = page_url(server, service.token)
        assert url.startswith("http://127.0.0.1:")
        base = url.split("/?")[0]
        assert b"<canvas" in urllib.request.urlopen(url, timeout=10).read()
        status = json.loads(urllib.request.urlopen(f"{base}/api/status?token={service.token}", timeout=10).read())
        assert status["expert"] == "drme" and status["classes"] == ["core", "rim"]
        for path in ("/api/status", "/../dataset.json", "/static/../../service.py", "/etc/passwd", "/dataset.json"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(base + path, timeout=10)
            assert err.value.code in (403, 404)
    finally:
        server.shutdown()
        server.server_close()


def test_a_model_without_prompts_is_one_line_and_exit_2(tmp_path, toy_dataset):
    plain = toy_interactive_model()
    from experts.annotation.learning import automatic_bundle

    folder = save_bundle(tmp_path / "plain" / "model", automatic_bundle(plain))
    result = CliRunner().invoke(cli, ["annotate", "--model", str(folder), "--data", str(toy_dataset), "--expert", "drme"])
    assert result.exit_code == 2 and "takes no prompts" in result.output
