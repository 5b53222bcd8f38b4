"""HTTP hygiene: CORS on every response, OPTIONS, HEAD, byte ranges, ETag/304, gzip rules."""

from __future__ import annotations

import gzip

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from neurolake.server import http as hh
from neurolake.server.errors import install as install_errors

BODY = bytes(range(256)) * 40  # 10240 bytes, compressible


@pytest.fixture(scope="module")
def client():
    app = FastAPI()
    install_errors(app)

    @app.api_route("/f", methods=["GET", "HEAD"])
    def f(request: Request):
        return hh.bytes_response(request, BODY, "application/octet-stream")

    @app.api_route("/jpg", methods=["GET", "HEAD"])
    def jpg(request: Request):
        return hh.bytes_response(request, BODY, "image/jpeg")

    @app.get("/boom")
    def boom():
        raise ZeroDivisionError("a bug")

    hh.install(app)
    return TestClient(app, raise_server_exceptions=False)


def test_cors_on_404_and_options(client):
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.headers["access-control-allow-origin"] == "*"
    assert "Content-Range" in r.headers["access-control-expose-headers"]
    assert r.headers["accept-ranges"] == "bytes"
    r = client.options("/f", headers={"Origin": "http://x", "Access-Control-Request-Method": "GET",
                                      "Access-Control-Request-Headers": "range"})
    assert r.status_code == 204 and r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-headers"] == "range"


def test_unhandled_error_is_500_json_with_cors(client):
    """A bug in a route answers 500 with the JSON error body and CORS headers (a browser viewer then
    sees the error, not a CORS failure); the traceback is logged, not sent."""
    r = client.get("/boom", headers={"Origin": "http://viewer.example"})
    assert r.status_code == 500
    assert r.json() == {"error": "internal", "message": "internal error: ZeroDivisionError", "detail": {}}
    assert r.headers["access-control-allow-origin"] == "*"
    assert "a bug" not in r.text


def test_whole_body_gzip_and_head(client):
    r = client.get("/f", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.content == BODY and r.headers["content-encoding"] == "gzip"
    r = client.get("/f", headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in r.headers and r.content == BODY
    r = client.get("/f", headers={"Accept-Encoding": "deflate"})
    assert "content-encoding" not in r.headers
    r = client.head("/f", headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(BODY)
    assert "content-encoding" not in r.headers and r.content == b""
    r = client.get("/jpg", headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in r.headers


@pytest.mark.parametrize("rng,first,last", [("bytes=10-19", 10, 19), ("bytes=10240-", None, None),
                                            ("bytes=10000-", 10000, 10239), ("bytes=-16", 10224, 10239),
                                            ("bytes=-99999", 0, 10239), ("bytes=5-99999", 5, 10239)])
def test_ranges(client, rng, first, last):
    r = client.get("/f", headers={"Range": rng, "Accept-Encoding": "gzip"})
    if first is None:
        assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{len(BODY)}"
        return
    assert r.status_code == 206
    assert "content-encoding" not in r.headers
    assert r.headers["content-range"] == f"bytes {first}-{last}/{len(BODY)}"
    assert r.content == BODY[first:last + 1]
    h = client.head("/f", headers={"Range": rng})
    assert h.status_code == 206 and int(h.headers["content-length"]) == last - first + 1


def test_etag_304_and_if_range(client):
    r = client.get("/f")
    etag = r.headers["etag"]
    assert client.get("/f", headers={"If-None-Match": etag}).status_code == 304
    gz = client.get("/f", headers={"Accept-Encoding": "gzip"}).headers["etag"]
    assert client.get("/f", headers={"If-None-Match": gz}).status_code == 304
    assert client.get("/f", headers={"If-None-Match": '"other"'}).status_code == 200
    r = client.get("/f", headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert r.status_code == 200 and r.content == BODY
    r = client.get("/f", headers={"Range": "bytes=0-9", "If-Range": etag})
    assert r.status_code == 206


def test_parse_byte_range_ignores_multi_and_invalid():
    assert hh.parse_byte_range("bytes=0-1,5-6", 10) is None
    assert hh.parse_byte_range("items=0-1", 10) is None
    assert hh.parse_byte_range("bytes=5-2", 10) is None
    with pytest.raises(hh.RangeNotSatisfiable):
        hh.parse_byte_range("bytes=-0", 10)
    assert gzip.decompress(gzip.compress(b"x")) == b"x"
