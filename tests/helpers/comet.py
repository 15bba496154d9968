"""Reading comet_ml offline archives back (messages.json: one JSON message per line)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path


def messages(archive: Path) -> list[dict]:
    with zipfile.ZipFile(archive) as z:
        return [json.loads(line) for line in z.read("messages.json").decode().splitlines() if line.strip()]


def experiment_info(archive: Path) -> dict:
    with zipfile.ZipFile(archive) as z:
        return json.loads(z.read("experiment.json"))


def parameters(archive: Path) -> dict:
    out = {}
    for m in messages(archive):
        if m["type"] == "parameter_msg":
            param = m["payload"].get("param") or m["payload"]["params"]   # "params": list values
            out[param["paramName"]] = param["paramValue"]
    return out


def metrics(archive: Path) -> list[tuple[str, float, int]]:
    return [(m["payload"]["metric"]["metricName"], m["payload"]["metric"]["metricValue"],
             m["payload"]["metric"]["step"]) for m in messages(archive) if m["type"] == "metric_msg"]


def others(archive: Path) -> dict:
    return {m["payload"]["key"]: m["payload"]["value"] for m in messages(archive) if m["type"] == "log_other"}
