"""The demo's verdict on Office 365 records: owed from the first listable blob holding them,
counted by Id, so a record missing or delivered twice fails the demo."""

from __future__ import annotations

import math
from collections import Counter

from exporter.demo import management_truth, summarise

STARTED, FROZEN = 1000.0, 1100.0


def blob(listable_at: float, exists: bool = True) -> dict[str, object]:
    return {
        "content_id": "c",
        "content_created": listable_at - 1,
        "listable_at": listable_at,
        "expires": 1e12,
        "exists": exists,
    }


RECORDS = [
    {"Id": "a", "creation_time": 1010.0, "blobs": [blob(1020.0), blob(1030.0)]},  # in two blobs
    {"Id": "b", "creation_time": 1040.0, "blobs": [blob(1200.0), blob(1050.0)]},  # later one first
    {"Id": "c", "creation_time": 1060.0, "blobs": [blob(1150.0)]},  # listable after the freeze
    {"Id": "d", "creation_time": 1070.0, "blobs": [blob(1080.0, exists=False)]},  # never kept
]


def test_a_record_is_owed_from_its_first_listable_blob_until_the_freeze() -> None:
    truth = {r["id"]: r["available_at"] for r in management_truth(RECORDS, FROZEN)}
    assert truth == {"a": 1020.0, "b": 1050.0, "c": math.inf, "d": math.inf}


def verdict(received: Counter[str]) -> tuple[int, int, int, int]:
    truth = {"o365-exchange": management_truth(RECORDS, FROZEN)}
    summary = summarise(truth, {"o365-exchange": received}, STARTED, FROZEN, 900.0)
    assert summary.ok == (summary.missing == summary.duplicates == 0)
    return summary.per_source["o365-exchange"]


def test_every_record_once_is_ok() -> None:
    assert verdict(Counter({"a": 1, "b": 1})) == (2, 2, 0, 0)


def test_a_missing_or_duplicated_record_fails_the_demo() -> None:
    assert verdict(Counter({"a": 1})) == (2, 1, 1, 0)
    assert verdict(Counter({"a": 2, "b": 1})) == (2, 2, 0, 1)
