"""Run a trained run's `fewshot_study` stage (again, or for the first time after `train`) with
other settings, in a new folder:

    python scripts/fewshot_probe.py RUN_DIR OUT_DIR [key=value ...]

e.g. `study.shots=[200] study.draws=1 study.steps=[200]` asks what each arm reaches from 200
pairs (a ceiling; scripts/fewshot_ceiling.sh). The trained model is copied, never retrained; values are YAML; Comet is
off. Prints the stage's summary (JSON).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from hypersal import yamlio
from hypersal.config import schema

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    run, out, overrides = Path(argv[0]), Path(argv[1]), argv[2:]
    state_file = run / "state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    stage = "fewshot_study"
    if "train" not in state.get("stages_done", []) or not (run / "models").is_dir():
        print(f"hypersal: error: {run} is not a run whose train stage is done (its model saved)", file=sys.stderr)
        return 2
    cfg = yamlio.load(run / "config.yaml")
    cfg["pipeline"] = [s for s in cfg.get("pipeline", ["train"]) if s != stage] + [stage]   # a run trained only, too
    defaults = yamlio.load(schema.DEFAULTS_FILE)
    cfg.setdefault("comet", {})["mode"] = "disabled"
    for item in overrides:
        key, sep, value = item.partition("=")
        section, _, name = key.rpartition(".")
        if not sep or name not in (defaults.get(section) or {}):
            print(f"hypersal: error: {item}: expects SECTION.KEY=VALUE with a key of {schema.DEFAULTS_FILE}",
                  file=sys.stderr)
            return 2
        cfg.setdefault(section, {})[name] = yamlio.loads(value)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copytree(run / "models", out / "models")
    yamlio.dump(cfg, out / "config.yaml")
    before = [s for s in state["stages_done"] if s != stage]
    (out / "state.json").write_text(json.dumps({"state": "running", "stages_done": before, "results": {}}))
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(out / "config.yaml")])
    if proc.returncode:
        return proc.returncode
    print(json.dumps(json.loads((out / "results.json").read_text())[stage]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
