"""The nightly follow-up batch: runner, scoring, write-back, alerts, scheduler, Celery."""
