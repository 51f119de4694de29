"""One training on several GPUs (or CPU processes) as one flow run: the transformer step starts torchrun.

`imtext train --processes N` (N > 1) keeps the flow a single process. Its transformer step writes the
run's training data and spec into a folder, starts

    python -m torch.distributed.run --standalone --nproc_per_node N -m tasks.model.launch FOLDER

and waits. Every rank trains its share of each batch of every fold (DistributedDataParallel: NCCL on
GPUs, gloo on CPUs); the first rank saves the models and writes their rows and curves back into the
folder, and the flow registers them once. torchrun keeps each rank's output under `FOLDER/torchrun/`;
a failed launch raises with the end of the newest logs.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

JOB_FILE = "job.pkl"
RESULT_FILE = "result.pkl"


def launch_command(folder: Path, processes: int) -> list[str]:
    """The torchrun command line of a launch (one process per GPU, or per CPU worker without GPUs)."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "--log-dir",
        str(folder / "torchrun"),
        "--redirects",
        "3",  # each rank's stdout and stderr into its own file under --log-dir
        "-m",
        "tasks.model.launch",
        str(folder),
    ]


def launch_transformers(data, spec, processes: int, folder: Path, timeout_s: float | None = None):
    """Train every fold's transformer under torchrun; (rows, curves by fold name) from the first rank."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RESULT_FILE).unlink(missing_ok=True)
    with open(folder / JOB_FILE, "wb") as fh:
        pickle.dump({"data": data, "spec": spec}, fh)
    env = dict(os.environ)
    # The ranks import this checkout's modules, wherever the flow was started from.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    with open(folder / "launch.log", "wb") as log:
        done = subprocess.run(
            launch_command(folder, processes),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=timeout_s,
            check=False,
        )
    if done.returncode != 0 or not (folder / RESULT_FILE).exists():
        raise RuntimeError(
            f"the training launch of {processes} processes failed (exit {done.returncode}):\n"
            + _log_tail(folder)
        )
    with open(folder / RESULT_FILE, "rb") as fh:
        return pickle.load(fh)


def _log_tail(folder: Path, chars: int = 3000) -> str:
    logs = sorted(folder.rglob("*.log"), key=lambda p: p.stat().st_mtime)
    return "\n".join(
        f"--- {p.relative_to(folder)}\n{p.read_text(errors='replace')[-chars:]}" for p in logs[-3:]
    )


def main(folder: Path) -> None:
    """One rank: every fold's transformer, in the same order as a single-process run."""
    from tasks.model.devices import DistInfo
    from tasks.model.fits import fit_transformer_fold
    from tasks.model.steps import fold_name, fold_order

    with open(folder / JOB_FILE, "rb") as fh:
        job = pickle.load(fh)
    data, spec = job["data"], job["spec"]
    dist = DistInfo.detect()
    rows, curves = [], {}
    for fold in fold_order(spec.folds):
        row, result = fit_transformer_fold(data, fold, spec, dist=dist)
        rows.append(row)
        curves[fold_name(fold)] = result
    if dist.is_main:
        partial = folder / (RESULT_FILE + ".part")
        with open(partial, "wb") as fh:
            pickle.dump((rows, curves), fh)
        os.replace(partial, folder / RESULT_FILE)
    dist.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
