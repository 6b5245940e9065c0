"""The peer of `bench.e2e`: what a team would write with DBOS Transact + FastAPI for the job a
Stepline session runs there (GET the target, check the status, check the body).

    python -m bench.dbos_e2e_app URL PORT

`POST /workflows` with {"url": ..., "text": ..., "steps": N} starts, in the background, a
workflow of N checkpointed `@DBOS.step`s (GET `url`, expect status 200, expect the body to
contain `text`, repeated in that order) and answers its id; `GET /workflows/{id}` answers its
status (PENDING, SUCCESS, ERROR, ...). One uvicorn process; DBOS keeps its system tables in the
database of URL (PostgreSQL). Installed with the `bench` extra, never needed at run time.
"""

from __future__ import annotations

import argparse
import logging

import httpx
import uvicorn
from dbos import DBOS, DBOSConfig  # type: ignore[import-not-found, unused-ignore]
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI()
target = httpx.Client(timeout=30)
"""Shared by every workflow: pooled keep-alive connections to the target, as a service would."""


class JobFailed(Exception):
    """An expectation of the job did not hold: the workflow ends in ERROR."""


@DBOS.step()  # type: ignore[untyped-decorator, unused-ignore]
def fetch(url: str) -> tuple[int, str]:
    response = target.get(url)
    return response.status_code, response.text


@DBOS.step()  # type: ignore[untyped-decorator, unused-ignore]
def expect_status(status: int, wanted: int) -> None:
    if status != wanted:
        raise JobFailed(f"expected status {wanted}, got {status}")


@DBOS.step()  # type: ignore[untyped-decorator, unused-ignore]
def expect_body_contains(body: str, text: str) -> None:
    if text not in body:
        raise JobFailed(f"the body does not contain {text!r}")


@DBOS.workflow()  # type: ignore[untyped-decorator, unused-ignore]
def job(url: str, text: str, steps: int) -> None:
    """GET, expect status 200, expect body contains: each a step, repeated to `steps`."""
    status, body = 0, ""
    for n in range(steps):
        match n % 3:
            case 0:
                status, body = fetch(url)
            case 1:
                expect_status(status, 200)
            case _:
                expect_body_contains(body, text)


class Job(BaseModel):
    url: str
    text: str
    steps: int


class Started(BaseModel):
    workflow_id: str


class Status(BaseModel):
    workflow_id: str
    status: str


@app.post("/workflows", status_code=201)
def start(body: Job) -> Started:
    """Start the job's workflow in the background (its status row is committed first)."""
    handle = DBOS.start_workflow(job, body.url, body.text, body.steps)
    return Started(workflow_id=handle.get_workflow_id())


@app.get("/workflows/{workflow_id}")
def status_of(workflow_id: str) -> Status:
    found = DBOS.get_workflow_status(workflow_id)
    if found is None:
        raise HTTPException(status_code=404, detail="no such workflow")
    return Status(workflow_id=workflow_id, status=found.status)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url", help="the system database, postgresql://")
    parser.add_argument("port", type=int)
    arguments = parser.parse_args()
    config: DBOSConfig = {
        "name": "stepline-bench-e2e",
        "system_database_url": arguments.url,
        "log_level": "WARNING",
    }
    logging.getLogger("dbos").setLevel(logging.WARNING)
    DBOS(config=config)
    DBOS.launch()
    try:
        uvicorn.run(app, host="127.0.0.1", port=arguments.port, log_level="warning")
    finally:
        DBOS.destroy()
        target.close()


if __name__ == "__main__":
    main()
