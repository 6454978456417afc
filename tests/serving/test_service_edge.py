"""The service's edge, probed over HTTP against the real `bentoml serve` (a small servable project,
started under umask 000): what ids it stores, how it refuses, what it logs, what its OpenAPI
document promises, the modes of the files it writes — and schemathesis with every check."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import httpx
import jsonschema
import pytest

from seqops.config import Paths
from seqops.serving.launch import Service
from tests.serving.conftest import ingested_rows, mini_project, raw_item, schemathesis_all_checks

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return mini_project(tmp_path_factory.mktemp("edge") / "project")


@pytest.fixture(scope="module")
def url(project) -> str:
    before = os.umask(0)  # the workers inherit it: every file they create must still get its explicit mode
    try:
        service = Service(project)
    finally:
        os.umask(before)
    with service:
        yield service.url


@pytest.fixture(scope="module")
def docs(url) -> dict:
    return httpx.get(f"{url}/docs.json", timeout=10).json()


def post(url: str, path: str, body) -> httpx.Response:
    return httpx.post(f"{url}{path}", json=body, timeout=30)


def event(**fields) -> dict:
    return {"user_id": "edge-user", "item_id": raw_item(1), "event_type": "view", **fields}


def request_log(project: Path) -> list[dict]:
    return [
        json.loads(line)
        for f in sorted((Paths(project).logs / "requests").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]


def serve_log(project: Path) -> str:
    return (Paths(project).logs / "bentoml-serve.log").read_text()


@pytest.mark.parametrize("field", ["user_id", "item_id"])
@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\x00b", "a\tb", "a\x85b"], ids=["CR", "LF", "NUL", "TAB", "NEL"])
def test_control_characters_in_ids_are_a_400_naming_the_field(url, field, bad):
    response = post(url, "/events", {"events": [event(**{field: bad})]})
    assert response.status_code == 400, response.text
    assert f"events.0.{field}" in response.json()["error"] and "control character" in response.text


@pytest.mark.parametrize("bad", ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)"])
def test_spreadsheet_formula_ids_are_refused_before_they_are_stored(url, bad):
    response = post(url, "/events", {"events": [event(user_id=bad)]})
    assert response.status_code == 400 and "events.0.user_id" in response.json()["error"], response.text


def test_ids_with_leading_or_trailing_blanks_are_refused(url):
    """What the schema says is what is accepted: no silent strip the OpenAPI document cannot describe."""
    response = post(url, "/recommend", {"user_id": " u00001"})
    assert response.status_code == 400 and "user_id" in response.json()["error"], response.text


def test_landed_events_round_trip_through_ingest(url, project, tmp_path):
    awkward = ["with,comma", 'with "quotes"', "ünïcödé", "it's"]
    for user in awkward:
        response = post(url, "/events", {"events": [event(user_id=user, item_id=raw_item(i)) for i in (1, 2, 3)]})
        assert response.status_code == 200, response.text
    raw = tmp_path / "raw"  # what the open part files hold, read by the real ingest
    raw.mkdir()
    for i, part in enumerate(Paths(project).landing.glob(".serving-*.csv.part")):
        shutil.copy(part, raw / f"landed-{i}.csv")
    rows = ingested_rows(raw, Paths(tmp_path))
    assert {user: 3 for user in awkward}.items() <= rows["user_id"].value_counts().to_dict().items()


BAD_BODIES = [
    ("/recommend", {"user_id": "u00001", "k": 0}, 400),
    ("/recommend", b"{not json", 400),
    ("/recommend", [1], 400),
    ("/next_action", {"user_id": "u00001", "surprise": 1}, 400),
    ("/events", {"events": []}, 400),
    ("/recommend", {"items": ["no-such-item"]}, 422),
    ("/events", {"events": [event(item_id="no-such-item")]}, 422),
    ("/churn", {"items": [raw_item(1), raw_item(2)], "event_types": ["view"]}, 422),
]


def test_client_errors_are_one_line_each_and_in_the_request_log(url, project):
    before = len(serve_log(project))
    for path, body, status in BAD_BODIES:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = httpx.post(f"{url}{path}", content=content, headers={"content-type": "application/json"}, timeout=10)
        assert response.status_code == status, (path, body, response.text)
    new = serve_log(project)[before:]
    assert "Traceback" not in new and "[ERROR]" not in new, new[-3000:]
    logged = [line for line in new.splitlines() if "client error" in line]
    assert len(logged) == len(BAD_BODIES), new[-3000:]
    refused = [r for r in request_log(project) if r["status"] in (400, 422)]
    assert [(r["endpoint"], r["status"]) for r in refused[-len(BAD_BODIES) :]] == [
        (path.strip("/"), status) for path, _, status in BAD_BODIES
    ]
    assert all(r["error"] for r in refused)


def test_a_client_cannot_forge_log_lines(url, project):
    before = len(serve_log(project))
    post(url, "/recommend", {"user_id": "u00001", "x\n2026-01-01 [ERROR] forged": 1})
    new = serve_log(project)[before:]
    assert "client error" in new and not any(line.startswith("2026-01-01 [ERROR] forged") for line in new.splitlines())


def request_schema(docs: dict, path: str) -> dict:
    schema = docs["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return {**schema, "components": docs["components"]}


def response_schema(docs: dict, path: str, status: int, method: str = "post") -> dict:
    schema = docs["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    return {**schema, "components": docs["components"]}


def is_valid(instance, schema: dict) -> bool:
    return jsonschema.Draft7Validator(schema).is_valid(instance)


@pytest.mark.parametrize("path", ["/recommend", "/next_action", "/churn"])
def test_the_documented_request_schema_refuses_what_the_service_refuses(docs, url, path):
    schema = request_schema(docs, path)
    for body in (
        {},
        {"user_id": "u00001", "items": [raw_item(1)]},
        {"user_id": None},
        {"user_id": "u00001", "event_types": ["view"]},
    ):
        assert post(url, path, body).status_code == 400, body
        assert not is_valid(body, schema), body
    for body in (
        {"user_id": "u00001"},
        {"items": [raw_item(1)], "user_id": None},
        {"items": [raw_item(1)], "event_types": ["view"]},
    ):
        assert is_valid(body, schema), body


def test_error_answers_match_the_documented_error_schema(docs, url):
    answers = {
        400: post(url, "/recommend", {"user_id": "u00001", "k": 0}),
        404: post(url, "/churn", {"user_id": "u00001"}),
        422: post(url, "/recommend", {"items": ["no-such-item"]}),
    }
    for status, response in answers.items():
        assert response.status_code == status, response.text
        assert is_valid(response.json(), response_schema(docs, "/recommend", status)), (status, response.text)
        assert isinstance(response.json()["detail"], list)


def test_every_answered_method_is_documented(docs, url):
    assert post(url, "/metadata", {}).status_code == 200  # kept for old clients...
    assert docs["paths"]["/metadata"]["post"]["deprecated"] is True  # ...and documented as such
    assert httpx.put(f"{url}/metadata", timeout=10).status_code == 405


def test_the_document_speaks_for_seqops_with_an_example_for_every_endpoint(docs, url):
    info = docs["info"]
    assert info["title"] == "seqops recommender" and info["version"] not in ("None", "", None)
    assert "BentoML" not in info["description"] and "contact" not in info
    for path in ("/recommend", "/next_action", "/churn", "/events"):
        operation = docs["paths"][path]["post"]
        request = operation["requestBody"]["content"]["application/json"]["example"]
        assert operation["responses"]["200"]["content"]["application/json"]["example"]
        assert post(url, path, request).status_code in (
            200,
            404,
            422,
        )  # a real request (ids or heads may be unknown here)


def test_files_the_service_writes_are_0644_under_umask_000(url, project):
    assert post(url, "/events", {"events": [event()]}).status_code == 200
    assert post(url, "/recommend", {"user_id": "u00001"}).status_code == 200
    paths = Paths(project)
    written = [*paths.landing.glob(".serving-*.csv.part"), *(paths.logs / "requests").glob("*.jsonl")]
    assert written and {f.name: oct(stat.S_IMODE(f.stat().st_mode)) for f in written} == {
        f.name: "0o644" for f in written
    }


def test_schemathesis_with_every_check_finds_nothing(url, project):
    done = schemathesis_all_checks(url, Paths(project).reports / "schemathesis")
    assert done.returncode == 0, done.stdout[-8000:] + done.stderr[-2000:]
