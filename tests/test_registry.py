"""Registry: checksummed artifacts, champion history that never overlaps, reader role."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from conftest import fetch, register_tiny
from support import in_transaction
from tasks import registry


def test_register_and_load_round_trip(settings, tiny_tfidf_dir):
    version = register_tiny(settings, tiny_tfidf_dir)
    model = in_transaction(settings, registry.load_model, settings, version)
    proba = model.predict_proba(["love this wonderful great thing", "awful terrible hate"])
    assert model.labels == ["negative", "neutral", "positive"]
    assert proba[0].argmax() == 2 and proba[1].argmax() == 0
    assert (settings.models_dir / str(version) / "model.safetensors").is_file()
    # The same training key registers the same version.
    assert register_tiny(settings, tiny_tfidf_dir) == version
    assert in_transaction(settings, registry.find_trained, settings, "k1") == version


def test_checksum_mismatch_refuses_to_load(settings, tiny_tfidf_dir):
    version = register_tiny(settings, tiny_tfidf_dir)
    meta = settings.models_dir / str(version) / "textclf.json"
    meta.write_text(meta.read_text().replace("negative", "NEGATIVE"))
    with pytest.raises(registry.ChecksumMismatch, match=f"model version {version}.*refusing"):
        in_transaction(settings, registry.load_model, settings, version)
    # Reusing it for the same training job is refused too: a changed artifact is an incident,
    # not a reason to train again quietly over it.
    with pytest.raises(registry.ChecksumMismatch):
        in_transaction(settings, registry.find_trained, settings, "k1")


def test_artifacts_can_live_under_any_fsspec_uri(settings, tiny_tfidf_dir):
    remote = settings.__class__(**{**settings.__dict__, "artifact_root": "memory://textclf-models"})
    version = register_tiny(remote, tiny_tfidf_dir)
    with registry.db.connect(remote) as conn, conn.cursor() as cur:
        assert registry.db.model_version(cur, version)["artifact_uri"].startswith("memory://")
    model = in_transaction(remote, registry.load_model, remote, version)
    assert model.predict_proba(["great love"]).shape == (1, 3)


def test_unknown_kind_and_version_are_clear_errors(settings, tiny_tfidf_dir):
    with pytest.raises(registry.RegistryError, match="unknown model kind 'xgb'"):
        in_transaction(settings, registry.register_model, settings, kind="xgb", staged_dir=tiny_tfidf_dir, labels=[], params={}, metrics={},
            data_fingerprint=None, run_id=None, logical_date=None, train_seconds=None,
            peak_memory_bytes=None, training_key="x",
        )
    with pytest.raises(registry.RegistryError, match="model version 999 does not exist"):
        in_transaction(settings, registry.load_model, settings, 999)


def _reset(url):
    conn = psycopg2.connect(url)
    with conn, conn.cursor() as cur:
        cur.execute("TRUNCATE textclf.champion_history, textclf.promotion_decisions")
    conn.close()


@hsettings(max_examples=15, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions=st.lists(st.one_of(st.integers(1, 3), st.just("rollback")), min_size=1,
                        max_size=8))
def test_champion_history_never_overlaps_and_covers_now(settings, tiny_tfidf_dir, actions):
    _reset(settings.database_url)
    versions = [register_tiny(settings, tiny_tfidf_dir, key=f"k{i}") for i in range(1, 4)]
    expected = None
    for action in actions:
        if action == "rollback":
            try:
                expected = in_transaction(settings, registry.rollback, settings, actor="test")
            except registry.RegistryError:
                pass
        else:
            version = versions[action - 1]
            in_transaction(settings, registry.set_champion, settings, version, reason="test", actor="test")
            expected = version
    history = in_transaction(settings, registry.champion_history)
    if expected is None:  # only rollbacks, which have nothing to roll back to
        assert history == [] and in_transaction(settings, registry.current_champion) is None
        return
    periods = [(h["valid_from"], h["valid_to"] or datetime.max.replace(tzinfo=UTC))
               for h in history]
    for (_, end), (start, _) in itertools.pairwise(periods):
        assert end <= start
    assert sum(h["valid_to"] is None for h in history) == 1
    assert in_transaction(settings, registry.current_champion) == expected == history[-1]["model_version"]
    first = history[0]
    assert in_transaction(settings, registry.current_champion, first["valid_from"]) == first["model_version"]
    assert in_transaction(settings, registry.current_champion, first["valid_from"] - timedelta(seconds=1)) is None


def test_every_promotion_records_a_decision_with_its_actor(settings, pg, tiny_tfidf_dir):
    v1 = register_tiny(settings, tiny_tfidf_dir, key="a")
    v2 = register_tiny(settings, tiny_tfidf_dir, key="b")
    assert in_transaction(settings, registry.set_champion, settings, v1, reason="first", actor="alice")
    assert not in_transaction(settings, registry.set_champion, settings, v1, reason="again", actor="alice")
    in_transaction(settings, registry.set_champion, settings, v2, reason="better", actor="bob")
    assert in_transaction(settings, registry.rollback, settings, actor="carol") == v1
    rows = fetch(pg, "SELECT decision, champion_before, champion_after, actor "
                     "FROM textclf.promotion_decisions ORDER BY id")
    assert rows == [("manual", None, v1, "alice"), ("manual", v1, v1, "alice"),
                    ("manual", v1, v2, "bob"), ("rollback", v2, v1, "carol")]
    assert [h["actor"] for h in in_transaction(settings, registry.champion_history)] == ["alice", "bob", "carol"]


def test_reader_role_can_select_predictions_but_not_write(pg):
    with pg.cursor() as cur:
        cur.execute("SET ROLE textclf_reader")
        try:
            cur.execute("SELECT count(*) FROM textclf.latest_predictions")
            cur.execute("SELECT count(*) FROM textclf.predictions")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("DELETE FROM textclf.predictions")
        finally:
            pg.rollback() if not pg.autocommit else None
            cur.execute("RESET ROLE")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("SET ROLE textclf_reader; SELECT * FROM textclf.model_versions")
        cur.execute("RESET ROLE")
