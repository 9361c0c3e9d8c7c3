"""NeMo Gym-shaped rollouts for tests: every input shape
``../shared/spec/nemo_gym_rollouts.md`` lists, and a NeMo Gym-like directory tree,
built here so that the tests mean the same on a clone without the real fixtures.
Pure functions: rows are dicts, files are bytes written where a test says.
"""

from __future__ import annotations

import collections
import gzip
import json
from pathlib import Path

from gymray.samples.generate import (
    _call,
    _msg,
    _out,
    rollout,
    tool,
    user,
)

# The Responses API request as NeMo Gym dumps it: 23 keys, mostly null.
REQUEST_KEYS = ("background", "include", "input", "instructions", "max_output_tokens",
                "max_tool_calls", "metadata", "model", "parallel_tool_calls",
                "previous_response_id", "prompt", "reasoning", "service_tier", "store",
                "temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p",
                "truncation", "user", "stream")  # fmt: skip
PIXEL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
PLACEHOLDER = "<PLACEHOLDER ROW>"


def full_request(input, tools=(), instructions=None, **set_):
    """``responses_create_params`` as ``ng_collect_rollouts`` dumps it: every key, nulls kept."""
    request = dict.fromkeys(REQUEST_KEYS)
    request.update(input=input, tools=list(tools), instructions=instructions,
                   parallel_tool_calls=True, tool_choice="auto", **set_)  # fmt: skip
    return request


RESPONSE_KEYS = ("id", "created_at", "error", "incomplete_details", "instructions", "metadata",
                 "model", "object", "output", "parallel_tool_calls", "temperature", "tool_choice",
                 "tools", "top_p", "background", "conversation", "max_output_tokens",
                 "max_tool_calls", "previous_response_id", "prompt", "prompt_cache_key",
                 "reasoning", "safety_identifier", "service_tier", "status", "text",
                 "top_logprobs", "truncation", "usage", "user")  # fmt: skip


def full_response(response: dict) -> dict:
    """``response`` as NeMo Gym dumps it: the 30 keys of the Responses API object."""
    out = dict.fromkeys(RESPONSE_KEYS)
    out.update(created_at=1782184824.0, model="Qwen/Qwen3-4B-Instruct-2507", object="response",
               parallel_tool_calls=True, tool_choice="auto", tools=[], top_p=1.0,
               usage={"input_tokens": 120, "output_tokens": 40, "total_tokens": 160,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}})  # fmt: skip
    out.update(response)
    return out


def gym_rollout(request, output, reward, **kw):
    """``rollout`` with a whole ``responses_create_params`` (see :func:`full_request`)
    and the whole response object, as ``ng_collect_rollouts`` writes them."""
    row = rollout(None, output, reward, request=request, **kw)
    row["response"] = full_response(row["response"])
    return row


def untyped(role, content):
    """A message item without ``type`` (201 of them in the measured files)."""
    return {"role": role, "content": content}


def assistant_parts(text):
    """An assistant turn inside the *input*, with ``output_text`` parts."""
    return {"type": "message", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}  # fmt: skip


def image_message(text, url=PIXEL):
    return {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": text},
        {"type": "input_image", "image_url": url, "detail": "auto"}]}  # fmt: skip


def reasoning_item(text=None, encrypted=None, rid="rs_1"):
    """A reasoning item: ``summary`` empty when ``text`` is None (the common case),
    ``content`` null, ``encrypted_content`` set when given."""
    item = {"type": "reasoning", "id": rid, "content": None,
            "summary": [] if text is None else [{"type": "summary_text", "text": text}]}  # fmt: skip
    if encrypted is not None:
        item["encrypted_content"] = encrypted
    return item


def sim_turn(text, role="user"):
    """A user-simulator (or environment) turn recorded inside ``response.output``."""
    return {"type": "message", "role": role, "content": text}


def with_token_ids(item, n=3):
    """An output item carrying the token ids one environment records on items."""
    return {**item, "prompt_token_ids": list(range(n)), "generation_token_ids": list(range(n)),
            "generation_log_probs": [-0.5] * n}  # fmt: skip


# name -> (row or raw line, the outcome parse_line must give: "ok" or a reject reason)
def shapes() -> dict[str, tuple[dict | str, str]]:
    """One rollout line per shape of the spec, with what gymray must make of it."""
    q = "What is 2 + 2?"
    answer = [_msg("4", "m1")]
    search = tool("web_search", "Search the web.", {"query": {"type": "string"}})
    rows = {
        "string_input": rollout(q, answer, 1.0),
        "list_input_typed": rollout([user(q)], answer, 1.0),
        "untyped_messages": rollout(
            [untyped("system", "Be brief."), untyped("user", q)], answer, 1.0
        ),  # fmt: skip
        "empty_input_list": rollout([], answer, 0.0),
        "instructions": rollout(q, answer, 1.0, instructions="You are a tutor."),
        "developer_role": rollout([user("Rules.", role="developer"), user(q)], answer, 1.0),
        "assistant_in_input": rollout(
            [user(q), assistant_parts("Let me see."), user("Go on.")], answer, 1.0
        ),  # fmt: skip
        "input_tool_calls": rollout(
            [
                user(q),
                _call("web_search", {"query": "2+2"}, "c_in"),
                _out("c_in", "4"),
                user("Answer now."),
            ],
            answer,
            1.0,
            tools=[search],
        ),  # fmt: skip
        "input_reasoning": rollout(
            [user(q), reasoning_item("think first"), user("Go.")], answer, 1.0
        ),  # fmt: skip
        "reasoning_with_summary": rollout(q, [reasoning_item("2 and 2 make 4"), *answer], 1.0),
        "reasoning_without_summary": rollout(q, [reasoning_item(), *answer], 1.0),
        "reasoning_encrypted": rollout(q, [reasoning_item(encrypted="gAAAA=="), *answer], 1.0),
        "tool_call_and_result": rollout(
            [user(q)],
            [_call("web_search", {"query": "2+2"}, "c1"), _out("c1", "4"), *answer],
            1.0,
            tools=[search],
        ),  # fmt: skip
        "parallel_tool_calls": rollout(
            [user(q)],
            [
                _call("web_search", {"query": "a"}, "p1"),
                _call("web_search", {"query": "b"}, "p2"),
                _out("p1", "A"),
                _out("p2", "B"),
                *answer,
            ],
            1.0,
            tools=[search],
        ),  # fmt: skip
        "call_without_output": rollout(
            [user(q)], [_call("web_search", {"query": "a"}, "cut")], 0.0, tools=[search]
        ),  # fmt: skip
        "tool_not_in_record": rollout(
            [user(q)], [_call("calculator", {"x": 2}, "h1"), _out("h1", "4"), *answer], 1.0
        ),  # fmt: skip
        "several_messages": rollout(q, [_msg("Let me think.", "a"), _msg("It is 4.", "b")], 1.0),
        "think_tags": rollout(q, [_msg("<think>2+2</think>The answer is 4.", "t")], 1.0),
        "user_simulator_turns": rollout(
            [user("Deal me in.")],
            [
                _msg("<action>hit</action>", "g1"),
                sim_turn("Hand: 16."),
                _msg("<action>stand</action>", "g2"),
            ],
            -1.0,
        ),  # fmt: skip
        "system_turn_in_output": rollout(
            [user("Start.")],
            [_msg("ok", "s1"), sim_turn("Episode ends.", "system"), _msg("done", "s2")],
            0.5,
        ),  # fmt: skip
        "nested_output_lists": rollout(q, [[_msg("4", "n1")]], 1.0),
        "token_ids_on_items": rollout(q, [with_token_ids(_msg("4", "k1"))], 1.0),
        "image_input": rollout(
            [image_message("What colour is this pixel?")], [_msg("Red.", "i1")], 1.0
        ),  # fmt: skip
        "int_reward": rollout(q, answer, 1),
        "reward_minus_100": rollout(q, answer, -100),
        "reward_above_one": rollout(q, answer, 19.4),
        "truncated": rollout(q, [_msg("2 + 2 is", "tr")], 0.0, incomplete="max_output_tokens"),
        "full_request_dump": gym_rollout(full_request(q, temperature=0.0), answer, 1.0),
        "line_separators": rollout("a\u2028b\u2029c\u0085d", answer, 1.0),
        "indices_and_agent": rollout(q, answer, 1.0, agent="math_agent", task=3, rollout_index=1),
        "indices_without_agent": rollout(q, answer, 1.0, task=3, rollout_index=0),
        "agent_ref_name_only": {**rollout(q, answer, 1.0, task=2), "agent_ref": {"name": "m"}},
        "verifier_fields": rollout(
            q,
            answer,
            1.0,
            expected_answer="4",
            judge_evaluations=None,
            extracted_answer="4",
            library_reward=1.0,
        ),  # fmt: skip
        "placeholder_row": PLACEHOLDER,
        "missing_response": {
            "responses_create_params": {"input": q},
            "reward": 1.0,
            "judge_output": "A>B",
        },  # fmt: skip
        "missing_reward": {k: v for k, v in rollout(q, answer, 1.0).items() if k != "reward"},
        "empty_output": rollout(q, [], 1.0),
    }
    for status in ("missing", "null"):
        row = rollout(q, answer, 1.0)
        if status == "missing":
            del row["response"]["status"]
        else:
            row["response"]["status"] = None
        rows[f"status_{status}"] = row
    rejects = {"placeholder_row": "invalid_json", "missing_response": "missing_response",
               "missing_reward": "missing_reward", "empty_output": "empty_trajectory"}  # fmt: skip
    return {name: (row, rejects.get(name, "ok")) for name, row in rows.items()}


def line(row: dict | str) -> bytes:
    """One line as orjson writes it (raw U+2028 and friends, no escaping of non-ASCII)."""
    return row.encode() if isinstance(row, str) else json.dumps(row, ensure_ascii=False).encode()


def write_lines(path, rows, *, newline=b"\n", trailing=True, bom=False, gz=False) -> Path:
    """Rows (dicts, or raw strings such as ``<PLACEHOLDER ROW>``) as a file, with the
    odd encodings files meet: another ``newline`` (CRLF), no final newline, a BOM,
    gzip (``gz``; the name is the caller's)."""

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = newline.join(line(r) for r in rows) + (newline if trailing and rows else b"")
    if bom:
        data = b"\xef\xbb\xbf" + data
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


# ---- environments of the tree: each a list of rows, as the real file of that name has
BLACKJACK_SYSTEM = ("You are playing Blackjack. After seeing your hand, respond with "
                    "<action>hit</action> or <action>stand</action>.")  # fmt: skip


def blackjack(task, k, hand=None, reward=None, agent="blackjack_gymnasium_agent"):
    """A multi-turn game rollout shaped as ``environments/blackjack``'s: the dealt hand
    is a second user turn of the prompt (so rollouts of one task can differ in prompt),
    the user simulator's turns sit inside the output."""
    a, b = hand or (2 + (task + k) % 9, 3 + (task * 3 + k) % 7)
    return gym_rollout(
        full_request([untyped("system", BLACKJACK_SYSTEM) | {"type": "message"},
                      untyped("user", "Deal me in.") | {"type": "message"},
                      untyped("user", f"Your hand: [{a}, {b}] = {a + b}\nDealer shows: A")
                      | {"type": "message"}], temperature=0.0, max_output_tokens=1024),
        [_msg("<action>hit</action>", f"msg_{task}_{k}_1"),
         sim_turn(f"Your hand: [{a}, {b}, 3] = {a + b + 3}\nDealer shows: A"),
         _msg("<action>stand</action>", f"msg_{task}_{k}_2")],
        [-1.0, 1.0, 0.0][(task + k) % 3] if reward is None else reward,
        agent=agent, task=task, rollout_index=k,
    )  # fmt: skip


def citation(task, k):
    """Tool calls *in the input* (a search already run), flat tools, a reasoning item."""
    search = tool(
        "web_search",
        "Search the web for a query and return ranked results.",
        {"query": {"type": "string", "description": "A single search query."}},
    )
    question = f"In which year did event {task} happen?"
    cid = f"call_{task}_citation_{k}"
    good = k % 2 == 0
    return gym_rollout(
        full_request([user("Cite your sources as [ref:id].", role="system"), user(question),
                      _call("web_search", {"query": f"event {task}"}, cid),
                      _out(cid, json.dumps({"query": f"event {task}", "results": [
                          {"id": f"ref_{task}", "text": f"Event {task} was in {1990 + task}."}]})),
                      user("Research is complete. Provide your final answer now.")],
                     tools=[search]),
        [reasoning_item(), _msg(f"It happened in {1990 + task if good else 1900} [ref:ref_{task}].",
                                f"msg_c{task}_{k}")],
        1.0 if good else 0.0, agent="citation_if_simple_agent", task=task, rollout_index=k,
        expected_answer=str(1990 + task),
    )  # fmt: skip


def tavily(task, k):
    """Parallel searches, one trace cut before its results, a call to a tool the
    record does not declare (injected by the harness)."""
    search = tool("tavily_search", "Search.", {"query": {"type": "string"}})
    calls = [
        _call("tavily_search", {"query": f"t{task} a"}, f"tv{task}{k}a"),
        _call("tavily_search", {"query": f"t{task} b"}, f"tv{task}{k}b"),
    ]
    if k == 2:
        out = calls[:1]  # cut: no result, no answer
    else:
        out = [
            *calls,
            _out(f"tv{task}{k}a", "A"),
            _out(f"tv{task}{k}b", "B"),
            _call("open_page", {"url": "x"}, f"tv{task}{k}c"),
            _out(f"tv{task}{k}c", "page"),
            _msg(f"Both say {task}.", f"msg_t{task}_{k}"),
        ]
    return gym_rollout(full_request([user(f"Search twice for topic {task}.")], tools=[search]),
                   out, [1.0, 0.6, 0.0][k % 3], agent="tavily_search_agent", task=task,
                   rollout_index=k)  # fmt: skip


def flores(task, k):
    """Single-turn translation with a reasoning summary and ``<think>`` text; no
    agent, no indices (grouped by prompt hash); the ground truth as ``translation``."""
    text = ["We have a plan.", "The sea is calm.", "Bread is cheap."][task % 3]
    return gym_rollout(
        full_request(f"Translate to German: {text}"),
        [reasoning_item(f"Okay, let's tackle this translation of '{text}'."),
         _msg(f"<think>word by word</think>Satz {task}.{k}", f"msg_f{task}_{k}")],
        [1.0, 0.75, 0.25][k % 3], translation=f"Satz {task}",
    )  # fmt: skip


def polymath(task, k):
    """Math whose verifier dropped the ground truth: it lives in the task file."""
    return gym_rollout(
        full_request([untyped("user", f"What is {task} + {task}?\n\nPut the answer in \\boxed{{}}.")]),
        [_msg(f"\\boxed{{{2 * task if k != 1 else 0}}}", f"msg_p{task}_{k}")],
        1.0 if k != 1 else 0.0, agent="polymath_simple_agent", task=task, rollout_index=k,
        extracted_answer=str(2 * task if k != 1 else 0), judge_evaluations=None,
    )  # fmt: skip


def polymath_task(task, k):
    """The materialized-inputs row of ``polymath(task, k)``: the task as Gym gave it."""
    return {"responses_create_params": {"input": [untyped("user", f"What is {task} + {task}?\n\n"
                                                          "Put the answer in \\boxed{}.")]},
            "question": f"What is {task} + {task}?", "expected_answer": str(2 * task),
            "agent_ref": {"name": "polymath_simple_agent"}, "_ng_task_index": task,
            "_ng_rollout_index": k}  # fmt: skip


def aalcr(task, k):
    """Every rollout of a task scored alike: nothing to pair."""
    return gym_rollout(full_request([user(f"Read document {task}. Summarise it.")]),
                   [_msg(f"Summary {task}/{k}.", f"msg_a{task}_{k}")], float(task % 2),
                   agent="aalcr_simple_agent", task=task, rollout_index=k)  # fmt: skip


def circles(task, k):
    """An image prompt (base64 data URI), rewards spread."""
    return gym_rollout(full_request([image_message(f"How many circles? ({task})")]),
                   [_msg(str(task + k % 2), f"msg_o{task}_{k}")], 1.0 if k % 2 == 0 else 0.0,
                   agent="circle_count_agent", task=task, rollout_index=k)  # fmt: skip


def gym_tree(root, *, repeats=3) -> dict:
    """Write a directory laid out like NeMo Gym's (``<kind>/<env>/data/example_rollouts.jsonl``,
    task files ``example.jsonl``, sidecars beside some rollouts files) and say what is
    in it: ``{"rollouts": {rel: rows}, "tasks": {rel: rows}, "sidecars": [rel],
    "expected": Counter of parse outcomes over every rollouts-file line}``.

    Shapes, by file: blackjack (multi-turn, a task file, one task with a fresh dealt hand
    per rollout), citation_if (tool calls in the input), tavily_search (parallel calls,
    a cut trace, an undeclared tool, placeholder rows, sidecars), flores200 (reasoning,
    ``<think>``, no agent nor indices, no final newline), polymath (ground truth only in
    its ``_materialized_inputs``), aalcr (tied rewards), circle_count (images), a judge
    file without responses, and ``shapes/data/example_rollouts.jsonl`` with one line of
    every shape of :func:`shapes`."""

    root = Path(root)
    files: dict[str, list] = {
        "environments/blackjack/data/example_rollouts.jsonl": (
            [blackjack(0, k) for k in range(repeats + 2)]
            + [blackjack(t, k, hand=(t + 4, 6)) for t in range(1, 4) for k in range(repeats)]
        ),
        "resources_servers/citation_if/data/example_rollouts.jsonl": (
            [citation(t, k) for t in range(3) for k in range(repeats)]
        ),
        "resources_servers/tavily_search/data/example_rollouts.jsonl": (
            [tavily(t, k) for t in range(2) for k in range(repeats)]
        )
        + [PLACEHOLDER, PLACEHOLDER],
        "benchmarks/flores200/data/example_rollouts.jsonl": (
            [flores(t, k) for t in range(3) for k in range(repeats)]
        ),
        "resources_servers/polymath/data/example_rollouts.jsonl": (
            [polymath(t, k) for t in range(4) for k in range(repeats)]
        ),
        "resources_servers/aalcr/data/example_rollouts.jsonl": (
            [aalcr(t, k) for t in range(3) for k in range(repeats)]
        ),
        "environments/circle_count/data/example_rollouts.jsonl": (
            [circles(t, k) for t in range(2) for k in range(repeats)]
        ),
        "resources_servers/judge_compare/data/example_rollouts.jsonl": [
            {
                "responses_create_params": {"input": f"Compare {t}."},
                "judge_output": "A>B",
                "verdict": t % 2,
            }
            for t in range(3)
        ],  # fmt: skip
        "shapes/data/example_rollouts.jsonl": [row for row, _ in shapes().values()],
    }
    tasks = {
        "environments/blackjack/data/example.jsonl": [
            {
                "responses_create_params": {
                    "input": [untyped("system", BLACKJACK_SYSTEM), untyped("user", "Deal me in.")]
                },
                "agent_ref": {"type": "responses_api_agents", "name": "blackjack_gymnasium_agent"},
            }
            for _ in range(4)
        ],  # fmt: skip
        "resources_servers/polymath/data/example_rollouts_materialized_inputs.jsonl": [
            polymath_task(t, k) for t in range(4) for k in range(repeats)
        ],
    }
    sidecars = {
        "resources_servers/tavily_search/data/example_rollouts_failures.jsonl":
            b'{"_ng_failure_class": "TimeoutError", "_ng_task_index": 9}\nnot json\n',
        "resources_servers/tavily_search/data/example_rollouts_aggregate_metrics.json":
            b'{"mean_reward": 0.5}',
        "resources_servers/tavily_search/data/example_rollouts_reward_profiling.jsonl":
            b'{"reward": "not a rollout"}\n',
    }  # fmt: skip
    for rel, rows in files.items():
        write_lines(root / rel, rows, trailing="flores200" not in rel)
    for rel, rows in tasks.items():
        write_lines(root / rel, rows)
    for rel, data in sidecars.items():
        (root / rel).write_bytes(data)
    expected = collections.Counter()
    for rel, rows in files.items():
        for row in rows:
            if rel.startswith("shapes/"):
                continue
            if row == PLACEHOLDER:
                expected["invalid_json"] += 1
            elif "response" not in row:
                expected["missing_response"] += 1
            else:
                expected["ok"] += 1
    for _, outcome in shapes().values():
        expected[outcome] += 1
    return {"rollouts": files, "tasks": tasks, "sidecars": sorted(sidecars), "expected": expected}


def repeats_tree(d, tasks=30, per_task=4, shards=3, agent="bj") -> Path:
    """Blackjack tasks with ``per_task`` rollouts each, rewards spread (every 5th task
    all tied at 1.0), the lines of one task scattered over ``shards`` files as a
    collection run writes them. ``expected_answer`` is "stand" on every line."""
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    parts = [[] for _ in range(shards)]
    n = 0
    for task in range(tasks):
        for k in range(per_task):
            reward = [1.0, -1.0, 0.0, 0.5][(task + k) % 4] if task % 5 else 1.0
            hand = (task % 9 + 2, 5 + task // 9)  # one dealt hand a task, distinct across tasks
            row = blackjack(task, 0, hand=hand, reward=reward, agent=agent)
            row["_ng_rollout_index"] = k
            row["response"]["output"][-1]["content"][0]["text"] += f" (attempt {k})"
            row["expected_answer"] = "stand"
            parts[n % shards].append(row)
            n += 1
    for i, rows in enumerate(parts):
        write_lines(d / f"part-{i}.jsonl", rows)
    return d
