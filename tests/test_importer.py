"""CSV import against real PostgreSQL: every data row is loaded or quarantined, never lost."""

from __future__ import annotations

import pytest

from conftest import fetch
from tasks.config import ConfigError, SourceTable, load_settings
from tasks.importer import CsvOptions, ImportError_, import_csv

BROKEN_CSV = (
    b"id,text,label,labelled_at\n"
    b"1,fine text,positive,2026-11-01T10:00:00+00:00\n"              # line 2: ok
    b"2,,negative,2026-11-01T10:00:00+00:00\n"                        # line 3: empty text
    b"3,   ,negative,2026-11-01T10:00:00+00:00\n"                     # line 4: blank text
    b"4,bad time,neutral,yesterday-ish\n"                             # line 5: timestamp
    b"5,caf\xe9 latin-1 byte,positive,2026-11-01T10:00:00+00:00\n"    # line 6: not utf-8
    b"6,\"a quoted\nmulti-line text\",neutral,2026-11-01T11:00:00\n"  # lines 7-8: ok
    b"7,xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx,positive,\n"     # line 9: too long
    b"1,same id again,positive,2026-11-01T12:00:00+00:00\n"           # line 10: duplicate id
    b"8,no label,,2026-11-01T12:00:00+00:00\n"                        # line 11: no label
    b"nine,bad id,positive,2026-11-01T12:00:00+00:00\n"               # line 12: id not int
    b"10,too,many,fields,here\n"                                      # line 13: field count
    b"11,no timestamp means now,negative,\n"                          # line 14: ok
)
DATA_ROWS = 12


def write(tmp_path, content: bytes, name="labelled.csv"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_every_data_row_is_loaded_or_quarantined_with_line_and_reason(settings, pg, tmp_path):
    path = write(tmp_path, BROKEN_CSV)
    report = import_csv(settings, "labelled", path, CsvOptions(max_text_length=40))

    assert report.data_rows == DATA_ROWS
    assert report.loaded + report.quarantined == DATA_ROWS
    assert report.loaded == 3
    loaded = fetch(pg, "SELECT id, text FROM textclf.labelled_texts ORDER BY id")
    assert [row[0] for row in loaded] == [1, 6, 11]
    assert loaded[1][1] == "a quoted\nmulti-line text"

    quarantined = dict(fetch(
        pg,
        "SELECT source_row::int, reason FROM textclf.quarantine WHERE source = %s",
        (str(path.resolve()),),
    ))
    assert sorted(quarantined) == [3, 4, 5, 6, 9, 10, 11, 12, 13]
    assert quarantined[3] == quarantined[4] == "missing or empty text"
    assert "unparseable timestamp 'yesterday-ish'" in quarantined[5]
    assert "undecodable bytes in field 'text'" in quarantined[6]
    assert "over the maximum of 40" in quarantined[9]
    assert "duplicate id 1" in quarantined[10] and "line 2" in quarantined[10]
    assert quarantined[11] == "missing label"
    assert "'nine' is not an integer" in quarantined[12]
    assert "expected 4 fields (the header's), found 5" in quarantined[13]
    # The raw content of a rejected row is kept, undecodable bytes escaped.
    (raw,) = fetch(pg, "SELECT raw FROM textclf.quarantine WHERE source_row = '6'")[0]
    assert raw["text"] == "caf\\xe9 latin-1 byte"


def test_reimporting_the_same_file_changes_nothing(settings, pg, tmp_path):
    path = write(tmp_path, BROKEN_CSV)
    import_csv(settings, "labelled", path, CsvOptions(max_text_length=40))
    before = fetch(pg, "SELECT * FROM textclf.labelled_texts ORDER BY id")
    again = import_csv(settings, "labelled", path, CsvOptions(max_text_length=40))

    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 3)
    # Including row 11, stamped "now" on first load only: its timestamp did not move.
    after = fetch(pg, "SELECT * FROM textclf.labelled_texts ORDER BY id")
    assert after == before
    assert fetch(pg, "SELECT count(*) FROM textclf.quarantine")[0][0] == 9


def test_changed_rows_are_updated_on_reimport(settings, pg, tmp_path):
    first = write(tmp_path, b"id,text,label,labelled_at\n1,hello,positive,2026-11-01\n", "a.csv")
    second = write(tmp_path, b"id,text,label,labelled_at\n1,hello,negative,2026-11-01\n", "b.csv")
    import_csv(settings, "labelled", first)
    report = import_csv(settings, "labelled", second)
    assert (report.inserted, report.updated) == (0, 1)
    assert fetch(pg, "SELECT label FROM textclf.labelled_texts")[0][0] == "negative"


def test_documents_import_with_custom_columns_and_encoding(settings, pg, tmp_path):
    path = write(
        tmp_path,
        "doc;body;when\n1;caf\xe9 au lait;01/11/2026 10:30\n2;second;\n".encode("latin-1"),
        "docs.csv",
    )
    options = CsvOptions(id_column="doc", text_column="body", timestamp_column="when",
                         encoding="latin-1", delimiter=";", timestamp_format="%d/%m/%Y %H:%M")
    report = import_csv(settings, "documents", path, options)
    assert (report.data_rows, report.loaded, report.quarantined) == (2, 2, 0)
    rows = fetch(pg, "SELECT id, text, to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI')"
                     " FROM textclf.documents ORDER BY id")
    assert rows[0] == (1, "café au lait", "2026-11-01 10:30")


def test_missing_required_column_is_a_clear_error(settings, tmp_path):
    path = write(tmp_path, b"id,body\n1,hello\n")
    with pytest.raises(ImportError_, match=r"required column\(s\) \['text', 'label'\]"):
        import_csv(settings, "labelled", path)


def test_import_streams_in_chunks_for_large_files(settings, pg, tmp_path, monkeypatch):
    import tasks.importer as importer

    monkeypatch.setattr(importer, "COPY_CHUNK_ROWS", 100)
    lines = [b"id,text,label"] + [f"{i},text number {i},l{i % 3}".encode() for i in range(1, 1001)]
    path = write(tmp_path, b"\n".join(lines) + b"\n")
    report = import_csv(settings, "labelled", path)
    assert report.inserted == 1000
    assert fetch(pg, "SELECT count(*) FROM textclf.labelled_texts")[0][0] == 1000


def test_identifiers_from_config_are_validated():
    with pytest.raises(ConfigError, match="source.table"):
        SourceTable("textclf", "texts; DROP TABLE x")
    with pytest.raises(ConfigError, match="source.text_column"):
        SourceTable("textclf", "texts", text_column='body"')


def test_config_file_points_at_a_users_own_table(tmp_path, monkeypatch):
    config = tmp_path / "textclf.toml"
    config.write_text(
        '[labelled_source]\nschema = "crm"\ntable = "tickets"\ntext_column = "body"\n'
        'label_column = "category"\ntimestamp_column = "closed_at"\n'
    )
    monkeypatch.setenv("TEXTCLF_CONFIG", str(config))
    settings = load_settings()
    assert settings.labelled_source.qualified_name == "crm.tickets"
    assert settings.labelled_source.label_column == "category"
    config.write_text('[labelled_source]\ntable = "bad-name"\n')
    with pytest.raises(ConfigError, match="bad-name"):
        load_settings()


def test_label_weights_are_loaded_and_bad_ones_quarantined(settings, pg, tmp_path):
    path = write(tmp_path, b"id,text,label,confidence\n1,a,x,0.75\n2,b,y,\n3,c,x,high\n4,d,y,-1\n")
    report = import_csv(settings, "labelled", path, CsvOptions(weight_column="confidence"))
    assert (report.loaded, report.quarantined) == (2, 2)
    assert fetch(pg, "SELECT id, weight FROM textclf.labelled_texts ORDER BY id") == [
        (1, 0.75), (2, None)]
    reasons = [r[0] for r in fetch(pg, "SELECT reason FROM textclf.quarantine ORDER BY source_row")]
    assert reasons == ["weight 'high' is not a number >= 0", "weight '-1' is not a number >= 0"]
    with pytest.raises(ImportError_, match="weight-column needs labelled texts"):
        import_csv(settings, "documents", path, CsvOptions(weight_column="confidence"))
