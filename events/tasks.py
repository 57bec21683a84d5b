from django_tasks import task

from events import execution


@task()
def run_execution(execution_id: int) -> str:
    """Look at execution N now. Safe to deliver twice: the claim lets one run win."""
    return execution.run(execution_id)
