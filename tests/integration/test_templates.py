"""Templates from the command line and in the engine: `use:` of a file beside the workflow run
by `stepline run`, expanded into ordinary steps with their origin and run against the example
app; cycles, unknown templates and a template's definitions refused before anything runs; and
replays and forks of a session made with templates that run the very same steps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from domain.errors import InvalidInput, InvalidWorkflow, TemplateCycle
from domain.session import SessionStatus, StepSpec, WorkflowSession
from engine.loop.replay import fork_request, replay_request
from engine.store.app import Stepline
from engine.store.database import eventsourcing_env
from engine.workflows.file import load_workflow
from engine.workflows.inputs import resolved
from engine.workflows.templates import MAX_DEPTH, FileTemplates, Root, expanded, file_key
from tests.conftest import PASSWORD, allow_local_targets, effects, example_target
from tests.integration.conftest import LoopFactory, drive, start_session
from tests.integration.test_cli_schedules import stepline

LOGIN = """\
name: login
inputs:
  user: {type: string}
  times: {type: integer, minimum: 1, default: 1}
steps:
  - 'POST /effects with {"name": "login {{inputs.user}} x{{inputs.times}}"}'
  - expect status 201
"""
CHECKOUT = """\
name: checkout
inputs:
  who: {type: string, default: ada}
  copies: {type: integer, default: 2}
steps:
  - GET /effects
  - use: login
    with: {user: "{{inputs.who}} (checkout)", times: "{{inputs.copies}}"}
  - 'POST /effects with {"name": "paid"}'
"""


@pytest.fixture
def app(fresh_app: Stepline) -> Stepline:
    return fresh_app


@pytest.fixture
def database(fresh_database_url: str) -> str:
    app = Stepline(eventsourcing_env(fresh_database_url), cache_size=0)
    allow_local_targets(app)  # acme may reach the target on loopback
    app.close()
    return fresh_database_url


def files(folder: Path, **texts: str) -> Path:
    """Each text written to NAME.yaml in `folder`; the folder."""
    for name, text in texts.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


def expanded_file(path: Path, given: dict[str, object] | None = None) -> list[StepSpec]:
    """The file's steps as `stepline run` expands them (files beside it only)."""
    spec = load_workflow(path)
    values = resolved(spec.inputs, given or {})
    return expanded(spec.steps, FileTemplates(path.parent), values, Root(path.name, file_key(path)))


# ---- stepline run FILE ----------------------------------------------------------------------


def test_run_expands_a_file_beside_the_workflow_with_its_origin_and_runs_it(
    database: str, tmp_path: Path, target: str
) -> None:
    folder = files(tmp_path, login=LOGIN, checkout=f"base_url: {target}\n{CHECKOUT}")

    ran = stepline(database, "run", str(folder / "checkout.yaml"), "--input", "copies=3",
                   "--tenant", "acme", "--json")  # fmt: skip

    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout)
    assert report["status"] == "completed"
    history = stepline(database, "history", report["session_id"], "--tenant", "acme", "--json")
    created = json.loads(history.stdout)[0]["data"]
    assert [(s["text"], s.get("origin")) for s in created["steps"]] == [
        ("GET /effects", None),
        ('POST /effects with {"name": "login ada (checkout) x3"}', {"template": "login.yaml"}),
        ("expect status 201", {"template": "login.yaml"}),
        ('POST /effects with {"name": "paid"}', None),
    ]
    assert created["config"]["inputs"] == {"who": "ada", "copies": 3}
    assert effects(target) == ["login ada (checkout) x3", "paid"]


def test_run_refuses_files_that_use_each_other_naming_the_cycle(
    database: str, tmp_path: Path
) -> None:
    folder = files(
        tmp_path,
        a="name: a\nsteps:\n  - GET /\n  - use: b\n",
        b="name: b\nsteps:\n  - use: parts/c.yaml\n",
    )
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "c.yaml").write_text("name: c\nsteps:\n  - use: ../a.yaml\n")

    refused = stepline(database, "run", str(folder / "a.yaml"), "--tenant", "acme")
    checked = stepline(database, "run", str(folder / "a.yaml"), "--check", "--tenant", "acme")

    assert refused.returncode == 2
    assert "TEMPLATE_CYCLE" in refused.stderr
    said = " ".join(refused.stderr.split())
    assert "templates use each other: a.yaml -> b -> parts/c.yaml -> ../a.yaml" in said
    assert checked.returncode == 2
    assert "TEMPLATE_CYCLE" in checked.stderr


@pytest.mark.parametrize("reach", ["../outside.yaml", "parts/link.yaml"])
def test_run_refuses_a_template_outside_the_workflows_folder_and_reads_nothing_of_it(
    database: str, tmp_path: Path, reach: str
) -> None:
    """Someone else's workflow run in CI names a file out of its folder, by `..` or through
    a link: the file is not read, so nothing of it reaches the run's output."""
    files(tmp_path, outside="name: outside\nsteps:\n  - GET /only-outside-knows\n")
    folder = tmp_path / "repo"
    (folder / "parts").mkdir(parents=True)
    (folder / "parts" / "link.yaml").symlink_to(tmp_path / "outside.yaml")
    files(folder, main=f"name: main\nsteps:\n  - use: {reach}\n")

    refused = stepline(database, "run", str(folder / "main.yaml"), "--check", "--tenant", "acme")

    assert refused.returncode == 2
    said = " ".join(refused.stderr.split())
    assert "TEMPLATE_NOT_FOUND" in said
    assert f"use: {reach}: a template file must be in {folder.resolve()}" in said
    assert "only-outside-knows" not in refused.stdout + refused.stderr


def test_run_refuses_a_template_neither_beside_it_nor_registered(
    database: str, tmp_path: Path
) -> None:
    folder = files(tmp_path, main="name: main\nsteps:\n  - use: login\n")

    refused = stepline(database, "run", str(folder / "main.yaml"), "--tenant", "acme")

    assert refused.returncode == 2
    said = " ".join(refused.stderr.split())
    assert "TEMPLATE_NOT_FOUND" in said
    assert "there is no login.yaml or login.yml in" in said
    assert "no workflow named 'login' is registered" in said


def test_run_falls_back_on_the_tenants_registry_and_records_the_version(
    database: str, tmp_path: Path, target: str
) -> None:
    registered = tmp_path / "registered"
    registered.mkdir()
    files(registered, login=LOGIN)
    pushed = stepline(database, "workflows", "push", str(registered / "login.yaml"),
                      "--tenant", "acme")  # fmt: skip
    folder = tmp_path / "work"
    folder.mkdir()
    files(folder, checkout=f"base_url: {target}\n{CHECKOUT}")

    ran = stepline(database, "run", str(folder / "checkout.yaml"), "--tenant", "acme", "--json")
    elsewhere = stepline(database, "run", str(folder / "checkout.yaml"), "--tenant", "globex")

    assert pushed.returncode == 0, pushed.stderr
    assert ran.returncode == 0, ran.stderr
    history = stepline(database, "history", json.loads(ran.stdout)["session_id"],
                       "--tenant", "acme", "--json")  # fmt: skip
    steps = json.loads(history.stdout)[0]["data"]["steps"]
    assert [s.get("origin") for s in steps[1:3]] == [{"template": "login@1"}] * 2
    assert elsewhere.returncode == 2  # globex has no login: acme's is not looked at
    assert "TEMPLATE_NOT_FOUND" in elsewhere.stderr


# ---- the expansion --------------------------------------------------------------------------


def test_a_template_inside_a_template_records_the_chain_and_inside_a_loop_keeps_it(
    tmp_path: Path,
) -> None:
    folder = files(
        tmp_path,
        login=LOGIN,
        checkout=CHECKOUT,
        main="name: main\nsteps:\n  - use: checkout\n  - for each x in vars.xs:\n"
        "      - use: login\n        with: {user: looped}\n",
    )

    steps = expanded_file(folder / "main.yaml")

    assert [s.origin for s in steps[:4]] == [
        {"template": "checkout.yaml"},
        {"template": "login.yaml", "via": ["checkout.yaml"]},
        {"template": "login.yaml", "via": ["checkout.yaml"]},
        {"template": "checkout.yaml"},
    ]
    loop = steps[4].loop
    assert loop is not None
    assert steps[4].origin is None
    assert [s["origin"] for s in loop.steps] == [{"template": "login.yaml"}] * 2
    [first, _] = loop.iterations(["only"], {})[:2]
    assert first["origin"]["template"] == "login.yaml"  # the iteration's keys beside it
    assert first["origin"]["iteration"] == 0


@pytest.mark.parametrize(
    ("with_", "says"),
    [
        ("{}", "template login.yaml: input user is required"),
        ("{user: ada, times: 0}", "template login.yaml: input times: 0 is less than the minimum"),
        ("{user: ada, nope: 1}", "template login.yaml: the workflow declares no input nope"),
        ('{user: "{{inputs.missing}}"}', "uses {{inputs.missing}}, but the workflow declares"),
    ],
)
def test_a_templates_values_are_checked_against_its_inputs_naming_it(
    tmp_path: Path, with_: str, says: str
) -> None:
    folder = files(tmp_path, login=LOGIN, main=f"name: main\nsteps:\n  - use: login\n"
                   f"    with: {with_}\n")  # fmt: skip

    with pytest.raises(InvalidInput) as refused:
        expanded_file(folder / "main.yaml")

    assert says in refused.value.message


def test_nesting_past_the_bound_and_a_template_with_its_own_definitions_are_refused(
    tmp_path: Path,
) -> None:
    for depth in range(MAX_DEPTH + 1):
        (tmp_path / f"t{depth}.yaml").write_text(f"name: t{depth}\nsteps:\n  - use: t{depth + 1}\n")
    (tmp_path / f"t{MAX_DEPTH + 1}.yaml").write_text("name: last\nsteps:\n  - GET /\n")
    files(tmp_path, own="name: own\ndefinitions: my_steps.py\nsteps:\n  - sign in\n")
    files(tmp_path, main="name: main\nsteps:\n  - use: own\n")

    with pytest.raises(InvalidWorkflow) as deep:
        expanded_file(tmp_path / "t0.yaml")
    with pytest.raises(InvalidWorkflow) as module:
        expanded_file(tmp_path / "main.yaml")

    assert f"templates nest more than {MAX_DEPTH} deep" in deep.value.message
    assert "own.yaml names a definitions module" in module.value.message


def test_a_template_used_over_and_over_is_bounded_by_the_steps_it_makes(tmp_path: Path) -> None:
    fifty = "".join("  - use: ten\n" for _ in range(50))
    files(
        tmp_path,
        ten="name: ten\nsteps:\n" + "  - GET /\n" * 10,
        fifty=f"name: fifty\nsteps:\n{fifty}",
        main="name: main\nsteps:\n" + "  - use: fifty\n" * 50,
    )

    with pytest.raises(InvalidWorkflow) as refused:
        expanded_file(tmp_path / "main.yaml")

    assert "more than 500 steps" in refused.value.message


def test_a_template_that_uses_itself_is_a_cycle(tmp_path: Path) -> None:
    files(tmp_path, me="name: me\nsteps:\n  - use: me\n")

    with pytest.raises(TemplateCycle) as refused:
        expanded_file(tmp_path / "me.yaml")

    assert refused.value.details["cycle"] == ["me.yaml", "me"]


# ---- replay and fork ------------------------------------------------------------------------


def ran_steps(session: WorkflowSession) -> list[tuple[str, str, object]]:
    return [(s.text, s.status.value, s.origin) for s in session.steps]


def test_a_replay_and_a_fork_run_the_same_steps_with_their_origin(
    make_loop: LoopFactory, tmp_path: Path, target: str
) -> None:
    loop = make_loop(ai=False)
    folder = files(tmp_path, login=LOGIN, checkout=CHECKOUT)
    steps = expanded_file(folder / "checkout.yaml", {"who": "bo"})
    source = drive(loop, start_session(loop, steps, target))
    with example_target().serving(password=PASSWORD) as again:
        replay = loop.app.create(
            replay_request(source, strict=True, base_url=again), tenant="acme", actor="alice"
        )
        replayed = drive(loop, replay.id)
        assert effects(again) == effects(target)
    fork = loop.app.create(
        fork_request(source, loop.app.history(source.id), from_step=2), tenant="acme", actor="a"
    )
    forked = drive(loop, fork.id)

    assert source.status is SessionStatus.COMPLETED
    assert source.steps[1].origin == {"template": "login.yaml"}
    assert replayed.status is forked.status is SessionStatus.COMPLETED
    assert ran_steps(replayed) == ran_steps(forked) == ran_steps(source)
    assert effects(target) == ["login bo (checkout) x2", "paid", "paid"]
