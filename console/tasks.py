from celery import Task, shared_task

from console import services


@shared_task(bind=True, ignore_result=True)
def execute_task_run_task(self: Task, run_id: int) -> str:
    """Carry out one operation requested in the console; its outcome is stored on the TaskRun."""
    return services.execute_task_run(run_id=run_id, celery_task_id=self.request.id or "").status
