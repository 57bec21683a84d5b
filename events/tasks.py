from django_tasks import task

from events import execution, workers


@task()
def run_execution(execution_id: int) -> str:
    """Look at execution N now. Safe to deliver twice: the claim lets one run win."""
    status = execution.run(execution_id)
    if status != "skipped":
        workers.executions_run += 1
    return status


@task()
def run_bulk_operation(operation_id: int) -> str:
    """Work through a bulk operation. Safe to deliver twice: only one run claims it."""
    from events import bulk

    return bulk.run(operation_id)
