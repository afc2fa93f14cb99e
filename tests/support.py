"""Helpers shared by several test modules (test modules never import each other): seeding the
source tables, reading task states, one step-by-step pipeline run, tiny models and corpora."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import numpy as np

from conftest import synthetic_corpus
from tasks import db
from tasks.airflow_env import manual_run_interval
from tasks.candidates.bert import BertConfig
from tasks.importer import CsvOptions, Record, import_records
from tasks.pipeline import (
    RunOptions,
    evaluate_step,
    extract_step,
    predict_step,
    promote_step,
    train_step,
    validate_step,
)

TINY_BERT = {"bert_max_train_rows": 48, "bert_max_length": 24, "bert_epochs": 1}


def seed(settings, days: int, per_day: int, end: datetime, bad_texts_on_last_day: float = 0.0):
    """An easy 3-class corpus labelled over `days` days before `end`, plus documents.

    Blank texts are written straight into the table, as an upstream system writing to the
    source table would (the CSV importer would have quarantined them before GX saw them).
    """
    corpus = synthetic_corpus(days * per_day, seed=3)
    header = ["id", "text", "label", "labelled_at"]
    labelled, blank = [], []
    for i, (text, label) in enumerate(corpus):
        day = i // per_day
        ts = end - timedelta(days=days - day) + timedelta(minutes=i % per_day)
        if day == days - 1 and (i % per_day) < bad_texts_on_last_day * per_day:
            blank.append((i + 1, "   ", label, ts))
            continue
        labelled.append(Record(i + 2, dict(zip(header, [str(i + 1), text, label, ts.isoformat()], strict=True))))
    docs = [
        Record(i + 2, {"id": str(i + 1), "text": text,
                       "created_at": (end - timedelta(hours=30 - i % 48)).isoformat()})
        for i, (text, _) in enumerate(synthetic_corpus(60, seed=4))
    ]
    with db.connect(settings) as conn:
        import_records(conn, settings, "labelled", header, iter(labelled), CsvOptions(),
                       source="seed")
        import_records(conn, settings, "documents", ["id", "text", "created_at"], iter(docs),
                       CsvOptions(), source="seed")
        with conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO textclf.labelled_texts (id, text, label, labelled_at) "
                            "VALUES (%s, %s, %s, %s)", blank)


def ti_states(dag_run) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def run_date(settings, day: datetime, run_id: str, *, min_delta=None, max_train_rows=None) -> dict:
    """One run of the pipeline for logical date ``day`` (TF-IDF only), step by step."""
    start, end = manual_run_interval(day.date())
    validation = validate_step(settings, run_id, day, extract_step(settings, run_id, start, end))
    options = RunOptions(candidates=("tfidf",), max_train_rows=max_train_rows)
    candidate = train_step(settings, "tfidf", run_id, day, validation, options)
    evaluation = evaluate_step(settings, run_id, validation, [candidate], options)
    promotion = promote_step(settings, run_id, validation, evaluation, min_delta=min_delta)
    prediction = predict_step(settings, run_id, day, validation)
    return {"validation": validation, "evaluation": evaluation, "promotion": promotion,
            "prediction": prediction, "candidate": candidate}


class KeywordModel:
    """Puts `confidence` on the first of its labels that appears as a word in the text."""

    kind = "keyword"

    def __init__(self, labels, confidence=0.8):
        self.labels = list(labels)
        self.confidence = confidence

    def predict_proba(self, texts):
        n_labels = len(self.labels)
        out = np.full((len(texts), n_labels), 1.0 / n_labels)
        for row, text in enumerate(texts):
            words = text.split()
            for column, label in enumerate(self.labels):
                if label in words:
                    out[row] = (1.0 - self.confidence) / (n_labels - 1)
                    out[row, column] = self.confidence
                    break
        return out


FILLER = "the of and to in is was for on with as at by from this that which".split()


TOPICS = {
    "sport": "football goal match team striker league referee stadium",
    "finance": "stock market bank shares investor dividend bond inflation",
    "cooking": "recipe oven garlic bake simmer flour butter skillet",
    "space": "rocket orbit planet astronaut galaxy telescope comet nasa",
    "music": "guitar melody concert drummer album chorus violin lyrics",
    "medicine": "doctor patient surgery vaccine clinic nurse diagnosis tablet",
    "weather": "rain storm forecast thunder humidity snow breeze drought",
    "law": "court judge lawyer verdict trial appeal jury statute",
    "farming": "tractor harvest wheat barn cattle soil orchard plough",
    "computing": "software compiler server database laptop keyboard algorithm python",
    "travel": "airport passport hotel luggage tourist flight ferry itinerary",
    "ocean": "whale coral reef tide dolphin seaweed lagoon shark",
}


def make_corpus(topics: list[str], rows: int, seed: int, lines: int = 1) -> tuple[list[str], list[str]]:
    """Each text: `lines` lines of filler words with two of its topic's words mixed in."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(rows):
        topic = rng.choice(topics)
        text_lines = []
        for _ in range(lines):
            words = rng.choices(FILLER, k=4) + rng.sample(TOPICS[topic].split(), k=2)
            rng.shuffle(words)
            text_lines.append(" ".join(words))
        texts.append("\n".join(text_lines))
        labels.append(topic)
    return texts, labels


def tiny_config(checkpoint: str, **overrides) -> BertConfig:
    settings = dict(checkpoint=checkpoint, max_length=32, batch_size=16, eval_steps=5, save_steps=10)
    return BertConfig(**(settings | overrides))


def in_transaction(settings, function, *args, **kwargs):
    """Call a registry function that takes a cursor, in a transaction of its own (as a CLI
    command or a pipeline step does)."""
    with db.transaction(settings) as cur:
        return function(cur, *args, **kwargs)


class SlackWebhook:
    """A Slack incoming webhook on loopback that keeps every message posted to it, and the
    environment that makes textclf's notifiers post there (`slack_alerts` connection)."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0/B0/XYZ"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def env(self) -> dict[str, str]:
        import json

        return {"AIRFLOW_CONN_SLACK_ALERTS": json.dumps({"conn_type": "slackwebhook", "password": self.url}),
                "TEXTCLF_FAILURE_SLACK_CONN": "slack_alerts"}

    @property
    def texts(self) -> list[str]:
        return [message["text"] for message in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
