"""MT-Bench answers in FastChat's schema, and the judge client against a local OpenAI-compatible server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fusechat.errors import FusechatError
from fusechat.evaluate import datasets
from fusechat.evaluate.base import Loaded
from fusechat.evaluate.mtbench import (
    JudgeConfig,
    answer_questions,
    judge_answers,
    parse_rating,
    write_model_answers,
)
from fusechat.teacher.scoring import model_parts


def test_bundled_data():
    questions = datasets.mtbench_questions()
    assert len(questions) == 80 and all(len(q["turns"]) == 2 for q in questions)
    refs = datasets.mtbench_references()
    assert {q["question_id"] for q in questions if q["category"] in ("math", "reasoning", "coding")} <= set(refs)
    prompts = datasets.judge_prompts()
    assert {"single-v1", "single-math-v1", "single-v1-multi-turn", "single-math-v1-multi-turn"} <= set(prompts)


def test_answer_file_schema(tiny, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny["llama"]).eval()
    tok = AutoTokenizer.from_pretrained(tiny["llama"])
    backbone, head = model_parts(model)
    loaded = Loaded("tiny", model, tok, backbone, head, torch.device("cpu"), 512)
    questions = datasets.mtbench_questions()[:3]
    result = answer_questions(loaded, questions, max_new_tokens=8, batch_size=2, progress=False)
    path = write_model_answers(result.items, "tiny", tmp_path / "tiny.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [q["question_id"] for q in questions]
    for r in rows:
        assert set(r) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
        assert r["model_id"] == "tiny" and isinstance(r["tstamp"], float) and isinstance(r["answer_id"], str)
        assert len(r["choices"]) == 1 and r["choices"][0]["index"] == 0
        assert len(r["choices"][0]["turns"]) == 2 and all(isinstance(t, str) for t in r["choices"][0]["turns"])


@pytest.mark.parametrize(
    "reply, rating",
    [
        ("Good. Rating: [[7]]", 7.0),
        ("[[8.5]]", 8.5),
        ("Rating: [6]", 6.0),
        ("no rating", -1.0),
        ("[[3]] then [[9]]", 9.0),
    ],
)
def test_parse_rating(reply, rating):
    assert parse_rating(reply) == rating


class _Judge(BaseHTTPRequestHandler):
    requests: list[dict] = []
    status = 200

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if type(self).status != 200:
            self.send_response(type(self).status)
            self.end_headers()
            return
        turn = 2 if "to the second" in body["messages"][0]["content"] else 1
        reply = {"choices": [{"message": {"role": "assistant", "content": f"Fine. Rating: [[{4 + turn}]]"}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture()
def judge_server():
    _Judge.requests, _Judge.status = [], 200
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()
    server.server_close()


def test_judge_client_against_local_server(judge_server, monkeypatch):
    monkeypatch.setenv("FUSECHAT_JUDGE_API_KEY", "sk-test")
    config = JudgeConfig.from_env(judge_server, "judge-x")
    questions = datasets.mtbench_questions()
    writing = next(q for q in questions if q["category"] == "writing")
    math = next(q for q in questions if q["category"] == "math")
    items = [
        {"question_id": q["question_id"], "category": q["category"], "turns": ["first answer", "second answer"]}
        for q in (writing, math)
    ]
    refs = datasets.mtbench_references()
    judgments, mean, se = judge_answers(config, items, questions, datasets.judge_prompts(), refs)
    assert [j["score"] for j in judgments] == [5.0, 6.0, 5.0, 6.0]
    assert mean == 5.5 and se > 0
    sent = _Judge.requests
    assert len(sent) == 4 and all(r["path"] == "/v1/chat/completions" for r in sent)
    assert all(r["auth"] == "Bearer sk-test" and r["body"]["model"] == "judge-x" for r in sent)
    assert all(r["body"]["temperature"] == 0 for r in sent)
    first_writing, second_writing, first_math, second_math = (r["body"]["messages"][1]["content"] for r in sent)
    assert writing["turns"][0] in first_writing and "first answer" in first_writing
    assert writing["turns"][1] in second_writing and "second answer" in second_writing
    assert refs[math["question_id"]][0] in first_math  # reference-guided prompt for math
    assert refs[math["question_id"]][1] in second_math


def test_judge_errors(judge_server, monkeypatch):
    monkeypatch.delenv("FUSECHAT_JUDGE_BASE_URL", raising=False)
    monkeypatch.delenv("FUSECHAT_JUDGE_MODEL", raising=False)
    assert JudgeConfig.from_env() is None
    with pytest.raises(FusechatError, match="judge-model"):
        JudgeConfig.from_env(judge_server, None)
    _Judge.status = 401
    config = JudgeConfig(judge_server, "judge-x", retries=2)
    items = [{"question_id": 81, "category": "writing", "turns": ["a", "b"]}]
    with pytest.raises(FusechatError, match="HTTP 401"):
        judge_answers(config, items, datasets.mtbench_questions(), datasets.judge_prompts(), {})
    assert len(_Judge.requests) == 1  # a 401 is not retried
