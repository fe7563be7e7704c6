"""Dedupe decisions and the ledger: exact, persistent, and exclusive to one process."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from exporter.errors import StateError, StateLockedError
from exporter.graph import event_key, key_events
from exporter.intake import arrival_lags, select_new
from exporter.ledger import Ledger
from tests.strategies import json_events, json_values

ids = st.uuids().map(str)


@given(st.lists(st.lists(ids, max_size=30), max_size=6))
def test_each_id_is_selected_once_across_pages_and_polls(pages: list[list[str]]) -> None:
    delivered: set[bytes] = set()
    selected: list[str] = []
    for page in pages:
        seen_this_poll: set[bytes] = set()
        keyed = key_events([{"id": i, "createdDateTime": None} for i in page], "createdDateTime")
        fresh = select_new(keyed, delivered, seen_this_poll)
        delivered.update(item.key for item in fresh)
        selected.extend(item.event["id"] for item in fresh)
    assert sorted(selected) == sorted({i for page in pages for i in page})


def test_event_keys() -> None:
    guid = str(uuid.uuid4())
    assert event_key({"id": guid}) == (uuid.UUID(guid).bytes, True)
    assert event_key({"id": guid.upper()})[0] == uuid.UUID(guid).bytes
    audit_key, has_id = event_key({"id": "Directory_ABC_123"})
    assert has_id and len(audit_key) == 16
    no_id = {"activityDateTime": "2026-01-01T00:00:00Z", "x": [1, 2]}
    key, has_id = event_key(no_id)
    assert not has_id
    assert key == event_key(dict(reversed(list(no_id.items()))))[0]
    assert key != event_key({**no_id, "x": [2, 1]})[0]
    assert event_key({"id": "a\ud800"})[0] != event_key({"id": "a\udfff"})[0]


def test_keys_stay_those_earlier_versions_wrote_into_the_ledger() -> None:
    """The ledger outlives upgrades: a key computed differently would re-send its event."""
    keys = {
        "guid": event_key({"id": "4a1b2c3d-0000-4000-8000-00000000ABCD"}),
        "text id": event_key({"id": "Directory_4TOS1_71428519"}),
        "no id": event_key({"activityDateTime": "2026-01-01T00:00:00Z", "x": [1, 2], "n": "Zoë"}),
        "number id": event_key({"id": 7, "v": 1}),
    }
    assert {name: (key.hex(), has_id) for name, (key, has_id) in keys.items()} == {
        "guid": ("4a1b2c3d00004000800000000000abcd", True),
        "text id": ("30e3eedf7b5d4206191d8e30e33fce3b", True),
        "no id": ("71cdbd6b7f9f249b31479ee868da681f", False),
        "number id": ("45096f1986e271dcd87b01ce6454d976", False),
    }


@given(json_events, json_values, st.sampled_from([None, "lastUpdatedDateTime"]))
@example({"id": "a\ud800"}, None, None)  # JSON's "\ud800": a lone surrogate, as json.loads gives it
@example({"x": "\udfff"}, None, None)
@example({"id": "r1"}, "\ud800", "lastUpdatedDateTime")
def test_any_event_the_api_can_send_gets_a_key(
    event: dict[str, object], version: object, update_field: str | None
) -> None:
    """A key that raised would fail every poll whose window holds the event, for good."""
    if update_field is not None:
        event = {**event, update_field: version}
    key, _ = event_key(event, update_field)
    assert len(key) == 16


guid_like = st.one_of(
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.text(alphabet="0123456789abcdefABCDEF-_{} ", min_size=32, max_size=38),
)


@given(guid_like)
def test_keys_of_guid_ids_do_not_depend_on_the_fast_path(event_id: str) -> None:
    """Keys written by earlier versions (uuid.UUID for every GUID) must still match."""
    try:
        expected = uuid.UUID(event_id).bytes
    except ValueError:
        return
    assert event_key({"id": event_id}) == (expected, True)


def test_arrival_lags_only_for_events_the_previous_window_could_have_seen() -> None:
    keyed = key_events(
        [
            {"id": "a", "createdDateTime": "2026-01-01T00:00:50Z"},
            {"id": "b", "createdDateTime": "2026-01-01T00:00:10Z"},
            {"id": "c", "createdDateTime": "not a time"},
        ],
        "createdDateTime",
    )
    start = keyed[1].event_time + 20  # the previous window began after "b"
    now = keyed[0].event_time + 30
    assert arrival_lags(keyed, now, start) == [30.0]
    assert arrival_lags(keyed, now, None) == []


def test_ledger_remembers_across_restarts_and_evicts_by_event_time(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    ledger = Ledger(path)
    old, new = event_key({"id": "old"})[0], event_key({"id": "new"})[0]
    ledger.record("signins", [(old, 100.0), (new, 200.0)], recorded_at=250.0)
    ledger.set_checkpoints("signins", {"last_complete": 250.0})
    ledger.close()

    ledger = Ledger(path)
    assert ledger.delivered("signins", [(old, 100.0), (new, 200.0)]) == {old, new}
    assert ledger.delivered("directoryAudits", [(old, 100.0), (new, 200.0)]) == set()
    assert ledger.delivered("signins", [(old, 100.5)]) == set(), "the key goes with its time"
    assert ledger.checkpoint("signins", "last_complete") == 250.0
    assert ledger.evict("signins", 150.0) == 1
    assert ledger.delivered("signins", [(old, 100.0), (new, 200.0)]) == {new}
    assert ledger.count("signins") == 1
    ledger.close()


def test_undated_events_are_remembered_by_key_and_evicted_by_when_recorded(
    tmp_path: Path,
) -> None:
    ledger = Ledger(tmp_path / "state.db")
    key = event_key({"x": 1})[0]
    ledger.record("signins", [(key, None)], recorded_at=500.0)
    assert ledger.delivered("signins", [(key, None)]) == {key}
    assert ledger.evict("signins", 400.0) == 0
    assert ledger.evict("signins", 600.0) == 1
    assert ledger.delivered("signins", [(key, None)]) == set()
    ledger.close()


@settings(deadline=None, max_examples=60)
@given(
    st.lists(st.tuples(st.uuids(), st.floats(min_value=0, max_value=1e6)), max_size=300),
    st.lists(st.floats(min_value=0, max_value=1e6), max_size=50),
)
def test_range_lookups_agree_with_exact_membership(
    tmp_path_factory: pytest.TempPathFactory,
    stored: list[tuple[uuid.UUID, float]],
    outliers: list[float],
) -> None:
    ledger = Ledger(tmp_path_factory.mktemp("ledger") / "state.db")
    entries = [(u.bytes, when) for u, when in stored]
    ledger.record("signins", entries, recorded_at=0.0)
    probes = entries + [(uuid.uuid4().bytes, when) for when in outliers]
    probes += [(key, when + 1.0) for key, when in entries[:20]]
    assert ledger.delivered("signins", probes) == {key for key, _ in entries}
    ledger.close()


def test_a_second_process_is_refused(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state.db")
    with pytest.raises(StateLockedError, match="in use by another siem-exporter"):
        Ledger(tmp_path / "state.db")
    ledger.close()
    Ledger(tmp_path / "state.db").close()


def test_a_corrupt_state_file_is_a_clear_error_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    garbage = b"this is not a database" * 100
    path.write_bytes(garbage)
    with pytest.raises(StateError, match="unreadable"):
        Ledger(path)
    assert path.read_bytes() == garbage


def test_a_page_spanning_a_crowded_stretch_still_finds_every_delivered_event(
    tmp_path: Path,
) -> None:
    """The range scan reads a few rows per looked-up key at most; a page whose span of time
    holds far more deliveries (a sparse page over a busy stretch) probes each key instead."""
    ledger = Ledger(tmp_path / "state.db")
    crowded = [(uuid.UUID(int=n + 1).bytes, 1000.0 + n / 1000) for n in range(2000)]
    ledger.record("signins", crowded, recorded_at=0.0)
    page = [crowded[0], crowded[-1], (uuid.uuid4().bytes, 1000.5)]
    assert ledger.delivered("signins", page) == {crowded[0][0], crowded[-1][0]}
    ledger.close()


def same_id(a: str, b: str) -> bool:
    """Graph's GUIDs are one id in any spelling uuid accepts; any other id is its exact text."""
    try:
        return uuid.UUID(a) == uuid.UUID(b)
    except ValueError:
        return a == b


@given(st.text(min_size=1), st.text(), st.text(), st.booleans())
@example("Directory_4TOS1_", "71428519", "71428520", False)  # ids alike but for the end
@example("Directory_4tos1_", "", "", True)
def test_distinct_ids_never_share_a_key(base: str, one: str, other: str, recase: bool) -> None:
    first, second = base + one, (base + other).upper() if recase else base + other
    assert (event_key({"id": first})[0] == event_key({"id": second})[0]) == same_id(first, second)


def test_commits_are_synced_so_a_power_loss_repeats_at_most_the_page_in_flight(
    tmp_path: Path,
) -> None:
    """Under WAL, synchronous=NORMAL may roll back the last commits after a power loss; FULL
    (2) syncs each one. A power cut cannot be staged here, so the setting itself is checked."""
    ledger = Ledger(tmp_path / "state.db")
    assert ledger._db.execute("PRAGMA synchronous").fetchone()[0] == 2
    ledger.close()


def test_a_ledger_with_a_broken_b_tree_is_refused_at_start_and_left_untouched(
    tmp_path: Path,
) -> None:
    """A file that still opens but whose pages are damaged could answer "never delivered"
    for events that were: the start-up check refuses it before anything is written."""
    path = tmp_path / "state.db"
    ledger = Ledger(path)
    ledger.record("signins", [(uuid.UUID(int=n + 1).bytes, float(n)) for n in range(5000)], 0.0)
    ledger.close()
    damaged = bytearray(path.read_bytes())
    page = 4096  # SQLite's default page size; page 21 is one of the table's leaves
    damaged[20 * page + 200 : 20 * page + 264] = b"\xff" * 64  # its cell pointers
    path.write_bytes(damaged)
    with pytest.raises(StateError, match=r"unreadable .*integrity check failed"):
        Ledger(path)
    assert path.read_bytes() == damaged


def test_a_ledger_of_another_layout_is_refused_rather_than_misread(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Ledger(path).close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=1")  # what an older exporter would have written
    db.close()
    before = path.read_bytes()
    with pytest.raises(StateError, match="layout version 1"):
        Ledger(path)
    assert path.read_bytes() == before
