"""How long a search's trials took, from the start and end times Optuna stores with each trial.

    python benchmarks/trial_times.py results/search/record-3500.db [--from-trial N] [--to-trial M]

Prints, per state (finished, pruned, stopped by a deadline), the count and the range of wall seconds,
by batch size. The device is not stored in a trial: the study's commands (printed first) say where it ran.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import optuna


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("store", type=Path, help="a study's SQLite file")
    parser.add_argument("--from-trial", type=int, default=0, help="only trials numbered from this one")
    parser.add_argument("--to-trial", type=int, default=None, help="and up to this one (included)")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{args.store}"
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        print(f"study {study.study_name}; made by:")
        for command in study.user_attrs.get("commands", []):
            print(f"  {command}")
        seconds: dict[tuple[str, int], list[float]] = defaultdict(list)
        last = len(study.trials) if args.to_trial is None else args.to_trial + 1
        for t in study.trials[args.from_trial : last]:
            if t.user_attrs.get("over_budget") or t.datetime_complete is None:
                continue
            state = "stopped" if t.user_attrs.get("stopped") else t.state.name.lower()
            batch = t.params.get("batch_size", 64)
            seconds[(state, batch)].append((t.datetime_complete - t.datetime_start).total_seconds())
        for (state, batch), values in sorted(seconds.items()):
            print(f"  {state:9} batch {batch:3}: {len(values):3} trials, {min(values):5.0f}-{max(values):5.0f} s")


if __name__ == "__main__":
    main()
