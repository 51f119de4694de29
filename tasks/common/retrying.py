"""How imtext's idempotent tasks retry: a transient failure (network, a busy catalog, a lost worker)
runs the task again after a delay; a user error (bad input, a closed gate) never does.

A task is idempotent here when running it again cannot duplicate a row: its writes are MERGEs or
anti-joins, and harvests resume from `harvest_state`. Use as `@task(..., **RETRY)`.
"""

from __future__ import annotations

from tasks.common.errors import InputError

# Errors that a second try cannot fix: the message names what the user has to change.
USER_ERRORS: tuple[type[BaseException], ...] = (InputError, FileNotFoundError, NotADirectoryError)
TASK_RETRIES = 2
TASK_RETRY_DELAYS_S = [10.0, 60.0]


def retry_unless_user_error(task, task_run, state) -> bool:
    """`retry_condition_fn` of the idempotent tasks: retry any failure except a user error."""
    try:
        state.result(raise_on_failure=True)
    except USER_ERRORS:
        return False
    except BaseException:  # noqa: BLE001 - any other failure is worth another try
        return True
    return True


RETRY = {
    "retries": TASK_RETRIES,
    "retry_delay_seconds": TASK_RETRY_DELAYS_S,
    "retry_jitter_factor": 0.2,
    "retry_condition_fn": retry_unless_user_error,
}
