"""What a new session must pass before anything of it is recorded: its tenant's policy, its
step definitions module, and every secret its steps will use.

Every way of creating a session goes through `admitted`: the API's sessions, batches, replays
and forks, and `stepline run`, `replay` and `fork`. A session refused here has not acted on
its target and is not in the log; one admitted will not stop at its fifth step for a secret
its tenant never stored, after the first four have acted.
"""

from __future__ import annotations

from uuid import UUID

from domain.errors import DomainError, WebhookSecretMissing
from engine.executors import SECRETS
from engine.loop.definitions import Definitions
from engine.loop.limits import admitted as within_policy
from engine.loop.replay import lineage_history, recorded_steps
from engine.loop.task_loop import TaskLoop
from engine.secrets import TOTP, SecretKindMismatch
from engine.store.app import SessionRequest, Stepline
from engine.tenancy.egress import EgressPolicy
from engine.webhooks import check_webhook_reachable
from engine.workflows.plan import PlannedStep, plan, secrets_used, used


class SecretMissing(DomainError):
    """The workflow uses secrets its tenant has not stored."""

    code = "SECRET_MISSING"

    def __init__(
        self, tenant: str, missing: dict[str, list[int]], seeds: frozenset[str] = frozenset()
    ) -> None:
        named = "; ".join(
            f"{{{{{'totp' if name in seeds else 'secrets'}.{name}}}}} "
            f"(step{'s' if len(steps) > 1 else ''} "
            f"{', '.join(map(str, steps))})"
            for name, steps in missing.items()
        )
        super().__init__(
            f"tenant {tenant} has not stored the secrets this workflow uses: {named}; no "
            "session was created",
            tenant=tenant,
            missing=missing,
        )


def admitted(loop: TaskLoop, request: SessionRequest, tenant: str) -> SessionRequest:
    """`request` as its tenant may create it (every limit filled in), or the first reason it
    may not: PolicyRefused, InvalidWorkflow (a definitions module that does not load),
    SecretMissing, SecretKindMismatch (a seed used as a value, or a value as a seed), or for its
    webhook WebhookRefused (a host the tenant may not reach) and
    WebhookSecretMissing."""
    request = within_policy(request, loop.settings, loop.policy_of(tenant))
    planned = plan(definitions_of(loop, request), request.steps)  # once: matching costs
    missing = missing_secrets(loop, request, planned, tenant)
    if missing:
        raise SecretMissing(tenant, missing, frozenset(used(planned, TOTP)))
    check_kinds(loop, planned, tenant)
    check_webhook(loop, request, tenant)
    return request


def check_webhook(loop: TaskLoop, request: SessionRequest, tenant: str) -> None:
    """A webhook must go where the tenant may connect, signed with a secret it has."""
    webhook = request.config.get("webhook")
    if not webhook:
        return
    check_webhook_reachable(EgressPolicy.of(loop.policy_of(tenant).egress_allow), webhook["url"])
    if loop.secret_store is not None and not loop.secret_store.has_webhook_secret(tenant):
        raise WebhookSecretMissing(
            f"tenant {tenant} has no webhook secret to sign the webhook with; no session was "
            "created"
        )


def definitions_of(loop: TaskLoop, request: SessionRequest) -> Definitions:
    """The definitions the session's steps will be matched with; InvalidWorkflow if its
    module does not load."""
    return loop.definitions.for_module(request.config.get("definitions"))


def missing_secrets(
    loop: TaskLoop, request: SessionRequest, planned: list[PlannedStep], tenant: str
) -> dict[str, list[int]]:
    """Each secret the session will use that its tenant does not have, and the steps using it.
    The tenant's secrets are looked up only for a session that uses some, and then afresh: a
    secret stored a moment ago is there."""
    needed = secrets_needed(loop.app, request, planned)
    if not needed:
        return {}
    stored = loop.secret_names(tenant)
    return {name: steps for name, steps in sorted(needed.items()) if name not in stored}


def check_kinds(loop: TaskLoop, planned: list[PlannedStep], tenant: str) -> None:
    """SecretKindMismatch for a stored seed written `{{secrets.NAME}}` or a stored value
    written `{{totp.NAME}}`: the step using it would fail, after the steps before had acted."""
    as_codes, as_values = used(planned, TOTP), used(planned, SECRETS)
    if not as_codes and not as_values:
        return
    seeds = loop.seed_names(tenant)
    for name in sorted(as_codes):
        if name not in seeds:
            raise SecretKindMismatch(name, seed=False)
    for name in sorted(as_values):
        if name in seeds:
            raise SecretKindMismatch(name, seed=True)


def secrets_needed(
    app: Stepline, request: SessionRequest, planned: list[PlannedStep]
) -> dict[str, list[int]]:
    """The secrets the steps still to run will use (`planned`: the request's steps), and the
    steps using each: those in the step texts and expects, those in the commands their
    definitions build, and, for a replay, those in the commands its source recorded."""
    to_run = planned[len(request.carried_over) :]
    needed = secrets_used([*to_run, *_replayed(app, request)])
    return {name: sorted(set(steps)) for name, steps in needed.items()}


def _replayed(app: Stepline, request: SessionRequest) -> list[PlannedStep]:
    """A replay's source's recorded commands, as the steps they will be replayed in."""
    if request.replay_of is None:
        return []
    source = UUID(request.replay_of["session_id"])
    steps = recorded_steps(lineage_history(app, source))
    return [
        PlannedStep(index, request.steps[index], tuple(a.command for a in recorded.actions))
        for index, recorded in steps.items()
        if index < len(request.steps)
    ]
