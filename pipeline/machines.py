"""metrics/machine.json: the machines whose kernels made each stage's outputs (the stage's own
process, and every Dask worker that trained for it), as actgrad.kernels.fingerprint() describes
them. A stage records itself when it ran; `make check-outputs` compares bits only where every
machine is the committed one. No host names or times: the file is committed and compared.
"""

import fcntl
import hashlib
import json
import os
from pathlib import Path

MACHINES = Path("metrics/machine.json")


def machine_id(fingerprint):
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:12]


def read(path=MACHINES):
    """{"machines": {id: fingerprint}, "stages": {stage: [id]}}, empty where there is none."""
    path = Path(path)
    found = json.loads(path.read_text()) if path.is_file() else {}
    return {"machines": found.get("machines", {}), "stages": found.get("stages", {})}


def record(stage, fingerprints, path=MACHINES):
    """Make `fingerprints` the machines of `stage`."""
    update(path, lambda stages: stages | {stage: fingerprints})


def prune(pipeline_stages, path=MACHINES):
    """Drop the stages that are no longer the pipeline's (make repro does, after a run)."""
    update(path, lambda stages: {s: f for s, f in stages.items() if s in pipeline_stages})


def update(path, change):
    """Rewrite the file with change({stage: [fingerprint]}), under a lock on its folder: stages
    in lanes end at once."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        found = read(path)
        stages = {s: [found["machines"][i] for i in ids] for s, ids in found["stages"].items()}
        stages = change(stages)
        ids = {s: {machine_id(f): f for f in fps} for s, fps in sorted(stages.items())}
        data = {
            "machines": dict(
                sorted({i: f for fps in ids.values() for i, f in fps.items()}.items())
            ),
            "stages": {s: sorted(fps) for s, fps in ids.items()},
        }
        if data == found:
            return
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    finally:
        os.close(folder)
