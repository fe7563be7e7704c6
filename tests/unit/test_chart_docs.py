"""docs/kubernetes.md names every value of the chart's verify CronJob, with its default."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_every_verify_value_is_documented_with_its_default() -> None:
    values = yaml.safe_load((ROOT / "helm/siem-exporter/values.yaml").read_text(encoding="utf-8"))
    docs = (ROOT / "docs/kubernetes.md").read_text(encoding="utf-8")
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in docs.splitlines()
        if line.startswith("| `verify.")
    }
    documented = {
        name.strip(" `"): default for names, default in rows.items() for name in names.split(",")
    }
    assert set(documented) == {f"verify.{key}" for key in values["verify"]}
    for key, default in values["verify"].items():
        if isinstance(default, bool):
            shown = "true" if default else "false"
        elif isinstance(default, int | str):
            shown = str(default) if default != "" else '""'
        else:
            continue  # lists and the resources mapping: described in words
        assert shown in documented[f"verify.{key}"], key
