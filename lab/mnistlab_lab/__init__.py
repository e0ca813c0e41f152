"""This repository's lab, not the library (the mnistlab wheel does not ship it): ``models`` (the models our studies
tried, registered through mnistlab's entry point), ``studies`` (the ledger: every declared run, each study's rule,
each model's role in our studies), ``records`` (recorded runs and searches read back), ``report`` (REPORT.md and the
README's table, generated from ``results/``) and ``commands`` (``mnistlab report``, ``mnistlab reproduce``)."""

RESULTS_DIR = "results"  # the lab's record: results/<model>/seed<k>, results/tuning/..., results/search/...
