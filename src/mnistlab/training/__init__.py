"""The training loop: ``engine`` (``fit``, ``fit_group``: a run or a stacked group epoch by epoch into its run
folders), ``step`` (the step's parts: device, optimizer, the one loss, one epoch, evaluation, teachers),
``graphstep`` (the same step as one captured CUDA graph) and ``events`` (TensorBoard)."""
