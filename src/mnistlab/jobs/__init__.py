"""Many runs at once: ``runner`` (what is missing, stacked seeds, spread over processes), ``workers`` (the one
spawned pool), ``distributed`` (Ray) and ``search`` (Optuna trials under a parameter budget). They take configs,
never the lab's ledger."""
