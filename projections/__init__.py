"""Read models: projections of the event log into PostgreSQL tables, one module per view."""

from projections.ai_usage import AiUsageView
from projections.audit_log import AuditLogView
from projections.batch_index import BatchIndexView
from projections.learned_actions import LearnedActionsView
from projections.schedule_index import ScheduleIndexView
from projections.session_index import SessionIndexView
from projections.session_progress import SessionProgressView
from projections.step_history import StepHistoryView
from projections.view import View
from projections.webhook_outbox import WebhookOutboxView
from projections.workflow_analytics import WorkflowAnalyticsView
from projections.workflow_registry import WorkflowRegistryView

ALL_VIEWS: tuple[View, ...] = (
    SessionProgressView(),
    StepHistoryView(),
    SessionIndexView(),
    AuditLogView(),
    BatchIndexView(),
    AiUsageView(),
    ScheduleIndexView(),
    WebhookOutboxView(),
    WorkflowRegistryView(),
    WorkflowAnalyticsView(),
    LearnedActionsView(),
)
