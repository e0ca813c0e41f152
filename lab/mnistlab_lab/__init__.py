"""This lab's notebook, not the library: ``studies`` (the ledger: every declared run, each study's rule, each
model's role in our studies), ``records`` (recorded runs and searches read back), ``compare`` and ``report``
(REPORT.md and the README's table, generated from ``results/``)."""
