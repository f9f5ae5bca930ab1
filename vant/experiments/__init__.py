"""Many runs: grid specs and presets, the results table, executors, the grid runner, reports, cost."""
