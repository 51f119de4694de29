"""One module per CLI command group. Each is light: flows (and Prefect) are imported inside the
command functions, so `imtext sql` and `imtext --help` never pay Prefect's start-up."""
