"""The MCP endpoint with a real MCP client (the `mcp` SDK over streamable HTTP) against a
real server and worker: an agent lists types, submits and waits, reads logs (secrets
masked), stops a task; roles hold (a viewer sees no submit tool and cannot submit, a
submitter cannot stop another's task); and the transport's edges over raw HTTP."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
from typing import Any

import httpx2
import pytest
from mcp import Client as McpClient
from mcp.client.streamable_http import streamable_http_client

HELLO = """\
description = "says hello"
command = "echo hello {{ WHO }}; echo to stderr >&2"
[environment.required]
WHO = { description = "whom to greet", type = "string" }
[environment.defaults]
API_KEY = { value = "sk-live-never-shown", secret = true }
"""
LEAKY = 'command = "echo key=$API_KEY"\n[environment.defaults]\n' \
        'API_KEY = { value = "sk-live-never-shown", secret = true }\n'
SLOW = 'command = "sleep 60"\n'


def call(url: str, token: str, steps) -> Any:
    """Run `steps(client)` in a connected MCP client (the SDK's default, auto mode: it
    probes for a newer protocol and falls back to the initialize handshake)."""
    async def main():
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx2.AsyncClient(headers=headers, timeout=120) as http:
            transport = streamable_http_client(f"{url}/mcp", http_client=http)
            async with McpClient(transport) as client:
                return await steps(client)
    return asyncio.run(main())


def structured(result) -> dict:
    assert not result.is_error, result.content
    return result.structured_content


@pytest.fixture
def served(make_server):
    server = make_server(types={"hello": HELLO, "leaky": LEAKY, "slow": SLOW})
    make_server.worker(server, slots=2)
    return server


def test_an_agent_lists_submits_waits_reads_and_stops(served):
    server = served

    async def steps(client):
        tools = {t.name for t in (await client.list_tools()).tools}
        types = structured(await client.call_tool("list_types", {}))["types"]
        done = structured(await client.call_tool(
            "submit_task", {"type": "hello", "environment": {"WHO": "agent"},
                            "wait_seconds": 50}))
        logs = structured(await client.call_tool("task_logs", {"id": done["id"]}))
        errors = structured(await client.call_tool(
            "task_logs", {"id": done["id"], "stream": "stderr"}))
        leaky = structured(await client.call_tool(
            "submit_task", {"type": "leaky", "wait_seconds": 50}))
        leaked = structured(await client.call_tool("task_logs", {"id": leaky["id"]}))
        slow = structured(await client.call_tool("submit_task", {"type": "slow"}))
        stopped = structured(await client.call_tool("stop_task", {"id": slow["id"]}))
        ended = structured(await client.call_tool(
            "wait_task", {"id": slow["id"], "timeout_seconds": 50}))
        listed = structured(await client.call_tool("list_tasks", {"type": "hello"}))
        return tools, types, done, logs, errors, leaked, stopped, ended, listed

    tools, types, done, logs, errors, leaked, stopped, ended, listed = call(
        server.url, server.admin_token, steps)
    assert {"list_types", "submit_task", "get_task", "wait_task", "task_logs", "list_tasks",
            "stop_task"} <= tools
    hello = next(t for t in types if t["name"] == "hello")
    assert hello["required"] == [{"name": "WHO", "description": "whom to greet",
                                  "type": "string", "secret": False}]
    assert hello["defaults"]["API_KEY"] == "***"
    assert done["state"] == "SUCCESS" and done["exit_code"] == 0
    assert done["submitted_by"]  # recorded as any submission is
    assert logs["text"] == "hello agent"
    assert errors["text"] == "to stderr"
    assert leaked["text"] == "key=***" and "sk-live" not in json.dumps(leaked)
    assert stopped["id"] == ended["id"] and ended["state"] == "STOPPED"
    assert [t["id"] for t in listed["tasks"]] == [done["id"]]


def test_mistakes_come_back_as_errors_the_agent_can_act_on(served):
    async def steps(client):
        return [await client.call_tool(name, args) for name, args in (
            ("submit_task", {"type": "nope"}),
            ("submit_task", {"type": "hello"}),
            ("submit_task", {"type": "hello", "environment": {"WHO": "x"}, "colour": 1}),
            ("get_task", {"id": 999999}),
            ("task_logs", {"id": 1, "lines": 10**6}),
        )]

    results = call(served.url, served.admin_token, steps)
    assert all(r.is_error for r in results)
    texts = [r.content[0].text for r in results]
    assert "unknown task type 'nope'; known types: hello, leaky, slow" in texts[0]
    assert "WHO" in texts[1]
    assert "colour" in texts[2] or "additional" in texts[2]
    assert "999999" in texts[3]
    assert "lines" in texts[4]


def test_roles_hold_as_in_the_rest_of_the_api(served):
    server = served
    viewer = server.token("watcher", "viewer")
    mine = server.token("mine", "submitter", types=["slow"])

    async def as_viewer(client):
        tools = {t.name for t in (await client.list_tools()).tools}
        refused = await client.call_tool("submit_task", {"type": "hello",
                                                         "environment": {"WHO": "x"}})
        return tools, refused

    tools, refused = call(server.url, viewer, as_viewer)
    assert "submit_task" not in tools and "stop_task" not in tools and "get_task" in tools
    assert refused.is_error and "needs submitter" in refused.content[0].text
    assert server.client.get("/task/") == []  # nothing was submitted

    theirs = server.client.post("/task/", {"type": "slow"})

    async def as_submitter(client):
        other_type = await client.call_tool("submit_task", {"type": "hello",
                                                            "environment": {"WHO": "x"}})
        stop_theirs = await client.call_tool("stop_task", {"id": theirs["id"]})
        own = structured(await client.call_tool("submit_task", {"type": "slow"}))
        stop_own = structured(await client.call_tool("stop_task", {"id": own["id"]}))
        return other_type, stop_theirs, stop_own

    other_type, stop_theirs, stop_own = call(server.url, mine, as_submitter)
    assert other_type.is_error and "may not submit tasks of type 'hello'" in \
        other_type.content[0].text
    assert stop_theirs.is_error and "only its own" in stop_theirs.content[0].text
    assert stop_own["submitted_by"] == "mine"
    assert server.client.get(f"/task/{theirs['id']}")["state"] != "STOPPED"
    server.client.post(f"/task/{theirs['id']}/stop")


def raw(server, body: Any, headers: dict[str, str] | None = None,
        method: str = "POST") -> tuple[int, dict | None]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{server.url}/mcp", data=data if method == "POST" else None, method=method,
        headers={"Authorization": f"Bearer {server.admin_token}",
                 "Content-Type": "application/json",
                 "Accept": "application/json, text/event-stream", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            status, text = answer.status, answer.read()
    except urllib.error.HTTPError as refused:
        status, text = refused.code, refused.read()
    return status, json.loads(text) if text else None


def test_the_transport_edges(served):
    server = served
    status, answer = raw(server, b"{not json")
    assert status == 400 and answer["error"]["code"] == -32700
    status, answer = raw(server, [])
    assert status == 400 and "batch" in answer["error"]["message"]
    status, answer = raw(server, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert (status, answer) == (202, None)
    status, answer = raw(server, {"jsonrpc": "2.0", "id": 7, "method": "resources/list"})
    assert status == 200 and answer["id"] == 7 and answer["error"]["code"] == -32601
    status, answer = raw(server, {"jsonrpc": "2.0", "id": "a", "method": "initialize",
                                  "params": {"protocolVersion": "1999-01-01"}})
    assert answer["result"]["protocolVersion"] == "2025-11-25"
    status, answer = raw(server, {"jsonrpc": "2.0", "id": 1, "method": "ping"},
                         {"MCP-Protocol-Version": "1999-01-01"})
    assert status == 400
    status, answer = raw(server, {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                                  "params": {"name": "rm_rf", "arguments": {}}})
    assert answer["error"]["code"] == -32602
    status, _ = raw(server, None, method="GET")
    assert status == 405


def test_a_page_of_another_origin_cannot_reach_it(served):
    """BrowserGuard refuses a cross-origin write before the route (DNS rebinding and a
    hostile page the user opens are the transport's stated risks)."""
    done = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
         "-H", "Origin: https://evil.example", "-H", "Content-Type: application/json",
         "-d", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                           "params": {"name": "submit_task", "arguments": {"type": "slow"}}}),
         f"{served.url}/mcp"], capture_output=True, text=True, timeout=30)
    assert done.stdout == "403"
    assert served.client.get("/task/") == []


COMBINED = 'command = "echo out; echo err >&2"\ncombine_output = true\n'


def test_the_reviewed_edges(make_server, tmp_path):
    """NaN waits are refused (they would spin), batches are answered, a retried submission
    with its idempotency key makes one task, a combined log is the default stream, and a log
    link out of the task's folder is refused."""
    server = make_server(types={"hello": HELLO, "combined": COMBINED, "slow": SLOW})
    # two slots: the combined task runs beside the slow one, whichever a slot takes first
    make_server.worker(server, slots=2)
    status, answer = raw(server, b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call", '
                                 b'"params": {"name": "wait_task", "arguments": '
                                 b'{"id": 1, "timeout_seconds": NaN}}}')
    assert status == 400 and answer["error"]["code"] == -32700
    status, answer = raw(server, [{"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                  {"jsonrpc": "2.0", "method": "notifications/initialized"},
                                  {"jsonrpc": "2.0", "id": 2, "method": "nope"}])
    assert status == 200 and [a["id"] for a in answer] == [1, 2]
    assert answer[1]["error"]["code"] == -32601

    async def steps(client):
        args = {"type": "slow", "idempotency_key": "retry-1"}
        first = structured(await client.call_tool("submit_task", args))
        again = structured(await client.call_tool("submit_task", args))
        combined = structured(await client.call_tool(
            "submit_task", {"type": "combined", "wait_seconds": 50}))
        logs = structured(await client.call_tool("task_logs", {"id": combined["id"]}))
        await client.call_tool("stop_task", {"id": first["id"]})
        return first, again, logs

    first, again, logs = call(server.url, server.admin_token, steps)
    assert again["id"] == first["id"]
    assert len(server.client.get("/task/?type=slow")) == 1
    assert logs["stream"] == "output" and logs["text"] == "out\nerr"

    # A task's log swapped for a link to a file outside its folder is not read.
    folder = server.data_dir / "tasks" / "combined" / str(logs["id"])
    secret = tmp_path / "outside.txt"
    secret.write_text("not for you\n")
    (folder / "output.log").unlink()
    (folder / "output.log").symlink_to(secret)

    async def read(client):
        return await client.call_tool("task_logs", {"id": logs["id"]})

    refused = call(server.url, server.admin_token, read)
    assert refused.is_error and "outside the task directory" in refused.content[0].text


def test_an_agent_runs_a_workflow_and_waits_for_it(make_server):
    server = make_server(types={"hello": HELLO}, start=False)
    server.write_workflow("greet", 'description = "two greetings"\nrequired = ["NAME"]\n'
                                   '[steps.first]\ntype = "hello"\n'
                                   'environment = { WHO = "{{ NAME }}" }\n'
                                   '[steps.second]\ncommand = "echo again $NAME"\n'
                                   'after = ["first"]\n')
    server.write_workflow("slow", '[steps.wait]\ncommand = "sleep 60"\n')
    server.start()
    make_server.worker(server, slots=2)
    viewer = server.token("watcher", "viewer")
    narrow = server.token("narrow", "submitter", types=["hello"])

    async def steps(client):
        listed = structured(await client.call_tool("list_workflows", {}))["workflows"]
        run = structured(await client.call_tool(
            "run_workflow", {"name": "greet", "environment": {"NAME": "agent"},
                             "wait_seconds": 50}))
        again = structured(await client.call_tool("get_run", {"id": run["id"]}))
        missing = await client.call_tool("run_workflow", {"name": "greet"})
        slow = structured(await client.call_tool("run_workflow", {
            "name": "slow", "environment": {}}))
        stopped = structured(await client.call_tool("stop_run", {"id": slow["id"]}))
        return listed, run, again, missing, stopped

    listed, run, again, missing, stopped = call(server.url, server.admin_token, steps)
    assert stopped["state"] == "stopped" and stopped["steps"][0]["state"] in ("stopped",
                                                                            "running")
    assert listed[0] == {"name": "greet", "description": "two greetings",
                         "required": ["NAME"], "defaults": {},
                         "version": listed[0]["version"], "steps": [
                             {"name": "first", "type": "hello", "after": [], "each": None},
                             {"name": "second", "type": "workflow.greet.second",
                              "after": ["first"], "each": None}]}
    assert run["state"] == "succeeded" and again == run
    assert [s["state"] for s in run["steps"]] == ["succeeded", "succeeded"]
    assert missing.is_error and "needs NAME" in missing.content[0].text

    async def as_viewer(client):
        tools = {t.name for t in (await client.list_tools()).tools}
        return tools, await client.call_tool("run_workflow", {"name": "greet"})

    tools, refused = call(server.url, viewer, as_viewer)
    assert "run_workflow" not in tools and "get_run" in tools and refused.is_error

    async def as_narrow(client):
        return (await client.call_tool("run_workflow", {"name": "greet",
                                                        "environment": {"NAME": "x"}}),
                await client.call_tool("stop_run", {"id": run["id"]}))

    refused, not_its_own = call(server.url, narrow, as_narrow)
    assert refused.is_error and "workflow.greet.second" in refused.content[0].text
    assert not_its_own.is_error and "only its own runs" in not_its_own.content[0].text
