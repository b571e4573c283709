"""Background jobs with progress, and the history of every sync with Shopify or a supplier feed."""

from __future__ import annotations

import uuid
from typing import Any

from .._peewee import peewee as pw
from ..errors import ValidationError
from .base import BaseModel, require_choice, require_text
from .fields import JSONField, UTCDateTimeField, utcnow
from .users import User

JOB_STATUSES = ("pending", "running", "completed", "failed", "cancelled")
FINISHED = ("completed", "failed", "cancelled")
DIRECTIONS = ("import", "export")
SYNC_RUN_STATUSES = ("running", "completed", "failed", "cancelled")


class Job(BaseModel):
    job_id = pw.UUIDField(unique=True, default=uuid.uuid4)
    job_type = pw.CharField(max_length=50)
    status = pw.CharField(max_length=20, default="pending")
    progress = pw.IntegerField(default=0)
    current_step = pw.CharField(max_length=255, null=True)
    total_items = pw.IntegerField(null=True)
    processed_items = pw.IntegerField(default=0)
    parameters = JSONField(null=True)
    result = JSONField(null=True)
    error_message = pw.TextField(null=True)
    user = pw.ForeignKeyField(User, null=True, backref="jobs", on_delete="SET NULL")
    started_at = UTCDateTimeField(null=True)
    completed_at = UTCDateTimeField(null=True)

    repr_fields = ("id", "job_type", "status", "progress")

    class Meta:
        table_name = "jobs"
        indexes = ((("status", "created_at"), False),)

    def validate(self) -> None:
        self.job_type = require_text("job_type", self.job_type, 50)
        require_choice("status", self.status, JOB_STATUSES)
        if not isinstance(self.progress, int) or not 0 <= self.progress <= 100:
            raise ValidationError("progress", f"must be a whole number from 0 to 100, got {self.progress!r}")
        for name in ("total_items", "processed_items"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValidationError(name, "must not be negative")
        self.current_step = require_text("current_step", self.current_step, 255, allow_empty=True)

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    def _require_open(self, action: str) -> None:
        if self.is_finished:
            raise ValidationError("status", f"cannot {action} a {self.status} job")

    def start(self, total_items: int | None = None, step: str | None = None) -> Job:
        self._require_open("start")
        self.status, self.started_at = "running", utcnow()
        self.total_items, self.current_step = total_items, step
        self.save()
        return self

    def report_progress(
        self, processed_items: int | None = None, step: str | None = None, progress: int | None = None
    ) -> Job:
        """Record progress; ``progress`` follows processed/total unless given."""
        self._require_open("report progress on")
        if processed_items is not None:
            self.processed_items = processed_items
            if progress is None and self.total_items:
                progress = min(100, processed_items * 100 // self.total_items)
        if progress is not None:
            self.progress = progress
        if step is not None:
            self.current_step = step
        if self.status == "pending":
            self.status, self.started_at = "running", utcnow()
        self.save()
        return self

    def complete(self, result: Any = None) -> Job:
        self._require_open("complete")
        self.status, self.progress, self.completed_at = "completed", 100, utcnow()
        if self.total_items is not None:
            self.processed_items = max(self.processed_items or 0, self.total_items)
        self.result = result
        self.save()
        return self

    def fail(self, message: str, *, cancelled: bool = False) -> Job:
        self._require_open("fail")
        self.status = "cancelled" if cancelled else "failed"
        self.error_message, self.completed_at = str(message), utcnow()
        self.save()
        return self

    def cancel(self, reason: str = "cancelled") -> Job:
        return self.fail(reason, cancelled=True)


class SyncHistory(BaseModel):
    sync_type = pw.CharField(max_length=50)
    direction = pw.CharField(max_length=10)
    source = pw.CharField(max_length=1024, null=True)
    target = pw.CharField(max_length=1024, null=True)
    status = pw.CharField(max_length=20, default="running")
    started_at = UTCDateTimeField(default=utcnow)
    completed_at = UTCDateTimeField(null=True)
    processed_count = pw.IntegerField(default=0)
    created_count = pw.IntegerField(default=0)
    updated_count = pw.IntegerField(default=0)
    failed_count = pw.IntegerField(default=0)
    error_details = JSONField(null=True)
    job = pw.ForeignKeyField(Job, null=True, backref="syncs", on_delete="SET NULL")
    user = pw.ForeignKeyField(User, null=True, backref="syncs", on_delete="SET NULL")

    repr_fields = ("id", "sync_type", "direction", "status")

    class Meta:
        table_name = "sync_history"
        indexes = ((("sync_type", "started_at"), False),)

    def validate(self) -> None:
        self.sync_type = require_text("sync_type", self.sync_type, 50)
        require_choice("direction", self.direction, DIRECTIONS)
        require_choice("status", self.status, SYNC_RUN_STATUSES)
        for name in ("processed_count", "created_count", "updated_count", "failed_count"):
            if (getattr(self, name) or 0) < 0:
                raise ValidationError(name, "must not be negative")
