from django.db import models


class Delivery(models.Model):
    """One stored webhook: the columns an event needs, unique per (source, event id)."""

    source = models.CharField(max_length=100)
    event_id = models.CharField(max_length=255)
    type = models.CharField(max_length=255)
    payload = models.JSONField()
    received_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "event_id"], name="baseline_unique_delivery")
        ]

    def __str__(self):
        return f"{self.source}/{self.event_id}"
