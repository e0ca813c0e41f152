"""The recorded results read back: a study's candidates and the rule that picks its winner."""

from __future__ import annotations

from pathlib import Path

from mnistlab_lab.records import Candidate, RecordedRun, chosen
from mnistlab_lab.studies import Run, Study


def test_smallest_rule_takes_the_smallest_that_held_on_every_seed():
    def candidate(name: str, params: int, *seeds: list[float]) -> Candidate:
        records = [
            RecordedRun(Path(name), {"params": params, "seed": k}, [{"val_acc": v} for v in vals], {})
            for k, vals in enumerate(seeds, 1)
        ]
        return Candidate(name, Run(name, 1, "tuning", f"{name}/s1"), records)

    runs = tuple(Run(name, seed, "tuning", f"{name}/s{seed}") for name in ("big", "small", "tiny") for seed in (1, 2))
    study = Study("s", "t", runs, "", "", rule="smallest")
    big = candidate("big", 6000, [99.5, 99.5, 99.6], [99.4, 99.5, 99.5])
    small = candidate("small", 5000, [99.4, 99.5, 99.4], [99.5, 99.6, 99.5])
    tiny = candidate("tiny", 4000, [99.6, 99.7, 99.7], [99.39, 99.6, 99.6])  # best mean, one epoch below
    assert chosen(study, [big, small, tiny]) is small
    unfinished = Candidate("small", small.declared, small.runs[:1])  # one of its 2 seeds recorded
    assert chosen(study, [big, unfinished, tiny]) is big
    assert chosen(Study("s", "t", runs, "", ""), [big, small, tiny]) is tiny  # the mean rule
    # a margin: small's validation mean (99.48) is below 99.50, big's (99.50) reaches it; at 99.51 none does
    assert chosen(Study("s", "t", runs, "", "", rule="smallest", mean_at_least=99.50), [big, small, tiny]) is big
    assert chosen(Study("s", "t", runs, "", "", rule="smallest", mean_at_least=99.51), [big, small, tiny]) is None
