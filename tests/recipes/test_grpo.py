"""GRPO task rows: what NeMo Gym is given again, and what the math verifier checks."""

from __future__ import annotations

import orjson
import pytest
from support import fixture, member, read_jsonl

import gymray
from gymray.config import Settings
from gymray.errors import ConfigError
from gymray.recipes.base import Context, Member
from gymray.recipes.grpo import GRPO, is_math_answer
from gymray.rollouts import parse_line
from gymray.samples.generate import message, rollout, user, write_jsonl

IFBENCH_TASK = {
    "id": 7,
    "instruction_id_list": ["detectable_format:title"],
    "prompt": "Write a poem about rain.",
    "kwargs": [{}],
}
IFBENCH_OUTPUTS = {"follow_all_instructions": True, "follow_instruction_list": [True]}


def members(rows: list[dict], file: str = "/d/env/data/example_rollouts.jsonl") -> list[Member]:
    out = []
    for i, row in enumerate(rows):
        r = parse_line(orjson.dumps(row), "example_rollouts.jsonl")
        out.append(Member(r, file, i + 1, i))
    return out


def grpo(**section) -> GRPO:
    return GRPO(Settings(algo="grpo", grpo=section), Context([]))


def ifbench_rollouts(agent: str | None = "ifbench_simple_agent", n: int = 2) -> list[dict]:
    return [
        rollout([user("Write a poem about rain.")], [message("Rain, rain.", "m")], float(k % 2),
                agent=agent, task=0, rollout_index=k, **IFBENCH_TASK, **IFBENCH_OUTPUTS)
        for k in range(n)
    ]  # fmt: skip


def test_a_gym_row_is_the_task_as_gym_gave_it():
    """Every task field of the rollout is in the row (ifbench's verify request needs
    id, instruction_id_list, prompt and kwargs); what the rollout produced is not."""
    res = grpo(format="nemo_gym")(members(ifbench_rollouts()))
    ((row, _),) = res.records
    for key, value in IFBENCH_TASK.items():
        assert row[key] == value
    assert "response" not in row and "reward" not in row
    assert not any(k.startswith("_ng_") for k in row)
    assert row["agent_ref"] == {"type": "responses_api_agents", "name": "ifbench_simple_agent"}
    # sampling settings of the collection run are NeMo RL's to set
    assert "temperature" not in row["responses_create_params"]
    assert "max_output_tokens" not in row["responses_create_params"]


def test_agent_ref_is_completed_or_configured_or_the_task_is_filtered():
    rows = ifbench_rollouts(agent=None)
    half = [dict(r, agent_ref={"name": "ifbench_simple_agent"}) for r in rows]
    ((row, _),) = grpo(format="nemo_gym")(members(half)).records
    assert row["agent_ref"] == {"type": "responses_api_agents", "name": "ifbench_simple_agent"}

    res = grpo(format="nemo_gym")(members(rows))
    assert not res.records and set(res.status.values()) == {("filtered", "no_agent_ref")}

    ((row, _),) = grpo(format="nemo_gym", agent_name="ifbench_simple_agent")(members(rows)).records
    assert row["agent_ref"]["name"] == "ifbench_simple_agent"
    # per environment (the label of .../<env>/data/<file>) or by path glob
    by_env = grpo(format="nemo_gym", agent_name={"env": "by_env_agent"})(members(rows))
    assert by_env.records[0][0]["agent_ref"]["name"] == "by_env_agent"
    by_glob = grpo(format="nemo_gym", agent_name={"*/env/*": "glob_agent"})(members(rows))
    assert by_glob.records[0][0]["agent_ref"]["name"] == "glob_agent"


def math_rows(answer, field="expected_answer", system=None, n=2):
    prompt = ([user(system, "system")] if system else []) + [user("What is 6 x 7?")]
    return [
        rollout(prompt, [message(f"\\boxed{{{answer}}}", "m")], float(k), task=0,
                rollout_index=k, **{field: answer})
        for k in range(n)
    ]  # fmt: skip


def test_math_rows_keep_the_system_text():
    ((row, _),) = grpo(format="math")(members(math_rows("42", system="Answer in LaTeX."))).records
    assert row["input"] == "Answer in LaTeX.\n\nWhat is 6 x 7?"
    assert row["ground_truth"] == "42" and row["meta"]["ground_truth_field"] == "expected_answer"


@pytest.mark.parametrize(
    ("field", "value", "math"),
    [
        ("expected_answer", "42", True),
        ("expected_answer", "164,000", True),
        ("answer", "\\frac{1}{2}", True),
        ("expected_answer", "B", True),
        ("expected_answer", "h/p", True),
        ("translation", "Wir haben jetzt vier Monate alte Mäuse", False),
        ("gold_sql", "SELECT 1", False),
        ("expected_answer", "Paris", False),
        ("label", "safe", False),
        ("expected_answer", "line one\nline two", False),
        ("expected_output", [[1, 2]], False),
    ],
)
def test_what_counts_as_a_math_answer(field, value, math):
    assert is_math_answer(field, value) is math


def test_non_math_ground_truth_is_filtered_unless_forced():
    rows = math_rows("Wir haben Mäuse", field="translation")
    res = grpo(format="math")(members(rows))
    assert not res.records and set(res.status.values()) == {("filtered", "ground_truth_not_math")}
    forced = grpo(format="math", force_math=True)(members(rows))
    assert forced.records[0][0]["ground_truth"] == "Wir haben Mäuse"


@pytest.mark.usefixtures("ray_session")
def test_tasks_join_each_rollouts_file_to_its_own_task_file(tmp_path):
    """Two environments, each numbering its tasks from 0: every row carries its own
    environment's task (not the other's), and a collision is an error naming both rows."""
    for env in ("alpha", "beta"):
        d = tmp_path / env / "data"
        write_jsonl(d / "example.jsonl", [
            {"responses_create_params": {"input": f"{env} task {i}"}, "expected_answer": f"{env}-{i}",
             "agent_ref": {"type": "responses_api_agents", "name": f"{env}_agent"}}
            for i in range(3)
        ])  # fmt: skip
        write_jsonl(d / "example_rollouts.jsonl", [
            rollout(f"{env} task {i}", [message("x", "m")], 1.0, task=i, rollout_index=0)
            for i in range(3)
        ])  # fmt: skip
    tasks = sorted(str(p) for p in tmp_path.glob("*/data/example.jsonl"))
    res = gymray.prepare(
        "grpo", input=str(tmp_path / "*/data/example_rollouts.jsonl"), tasks=tasks,
        output=str(tmp_path / "out"), **{"grpo.format": "nemo_gym", "split.val_fraction": 0},
    )  # fmt: skip
    rows = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert res.counts["records"]["train"] == len(rows) == 6
    for row in rows:
        env = row["meta"]["source"][0]["file"].split("/")[-3]
        assert row["responses_create_params"]["input"] == f"{env} task {row['meta']['task_index']}"
        assert row["expected_answer"] == f"{env}-{row['meta']['task_index']}"
        assert row["agent_ref"] == {"type": "responses_api_agents", "name": f"{env}_agent"}
    # a materialized inputs file with two different rows for one (task, rollout)
    bad = tmp_path / "alpha" / "data" / "example_rollouts_materialized_inputs.jsonl"
    write_jsonl(bad, [
        {"_ng_task_index": 0, "_ng_rollout_index": 0, "responses_create_params": {"input": "a"}},
        {"_ng_task_index": 0, "_ng_rollout_index": 0, "responses_create_params": {"input": "b"}},
    ])  # fmt: skip
    with pytest.raises(ConfigError, match=r"_materialized_inputs.jsonl:1 and .*:2"):
        gymray.prepare("grpo", input=str(tmp_path / "alpha/data/example_rollouts.jsonl"),
                       tasks=[str(bad)], output=str(tmp_path / "o2"))  # fmt: skip


@pytest.mark.usefixtures("ray_session")
def test_a_task_row_is_joined_though_gym_typed_the_recorded_prompt(tmp_path):
    """NeMo Gym records a rollout's input with ``"type": "message"`` on every message its
    task file gave without one. The prompts are the same: the task file's fields (here
    ``category``, which the rollout lost) are in the row."""
    d = tmp_path / "env" / "data"
    q = "Solve x + 1 = 2. Put the answer in \\boxed{}."
    write_jsonl(d / "example.jsonl", [{
        "responses_create_params": {"input": [{"role": "user", "content": f"{q} {i}"}]},
        "expected_answer": str(i), "category": f"algebra-{i}",
        "agent_ref": {"type": "responses_api_agents", "name": "math_agent"},
    } for i in range(3)])  # fmt: skip
    write_jsonl(d / "example_rollouts.jsonl", [
        rollout([{"type": "message", "role": "user", "content": f"{q} {i}"}],
                [message(f"\\boxed{{{i}}}", "m")], 1.0, task=i, rollout_index=0,
                agent="math_agent", expected_answer=str(i))
        for i in range(3)
    ])  # fmt: skip
    gymray.prepare("grpo", input=str(d / "example_rollouts.jsonl"), output=str(tmp_path / "o"),
                   **{"grpo.format": "nemo_gym", "split.val_fraction": 0})  # fmt: skip
    rows = read_jsonl(tmp_path / "o" / "train.jsonl")
    assert len(rows) == 3 and {r["meta"]["task_row"] for r in rows} == {"joined"}
    assert sorted(r["category"] for r in rows) == ["algebra-0", "algebra-1", "algebra-2"]


@pytest.mark.usefixtures("ray_session")
def test_the_real_math_rollouts_join_their_task_file(tmp_path):
    """math_with_autograder's rollouts lost category, problem_id, source and subcategory
    (and carry the judge's output): the task file gives them back."""
    rollouts = fixture("resources_servers/math_with_autograder/data/example_rollouts.jsonl")
    gymray.prepare("grpo", input=str(rollouts), output=str(tmp_path / "o"),
                   **{"grpo.format": "nemo_gym", "split.val_fraction": 0})  # fmt: skip
    rows = read_jsonl(tmp_path / "o" / "train.jsonl")
    assert rows and {r["meta"]["task_row"] for r in rows} == {"joined"}
    assert all({"category", "problem_id", "source", "subcategory"} <= set(r) for r in rows)


def test_same_named_files_of_two_environments_are_not_one_task(tmp_path):
    """NeMo Gym names every environment's rollouts example_rollouts.jsonl and numbers
    its tasks from 0: rollouts without agent_ref must not pool across environments."""
    for env in ("circle_click", "circle_count"):
        write_jsonl(tmp_path / env / "data" / "example_rollouts.jsonl", [
            rollout(f"{env} {i}", [message("x", "m")], float(k), task=i, rollout_index=k,
                    expected_answer="1")
            for i in range(2) for k in range(2)
        ])  # fmt: skip
    res = gymray.prepare("grpo", input=str(tmp_path), output=str(tmp_path / "out"),
                         **{"grpo.format": "math", "split.val_fraction": 0})  # fmt: skip
    rows = read_jsonl(tmp_path / "out" / "train.jsonl")
    assert res.counts["records"]["train"] == len(rows) == 4
    assert sorted(r["input"] for r in rows) == [
        "circle_click 0", "circle_click 1", "circle_count 0", "circle_count 1"
    ]  # fmt: skip
    assert all(r["meta"]["rollouts"] == 2 for r in rows)


def grpo_prompts(members, section: dict, fmt: str, tasks: bytes | None = None):
    context = Context([m.file for m in members], tasks=[("tasks.jsonl", tasks)] if tasks else [])
    return GRPO(Settings(algo="grpo", grpo={**section, "format": fmt}), context)(members)


def test_grpo_pass_rate_and_formats():
    ms = [member(0, 1.0, expected_answer=42), member(1, 0.0), member(2, 0.0), member(3, 1.0)]
    res = grpo_prompts(ms, {"pass_rate": (0.1, 0.9)}, "math")
    rec = res.records[0][0]
    assert rec["input"] == "q" and rec["ground_truth"] == "42"
    assert rec["meta"]["pass_rate"] == 0.5 and rec["meta"]["ground_truth_source"] == "rollout"
    assert len(rec["meta"]["source"]) == 4
    assert grpo_prompts(ms, {"pass_rate": (0.6, 1.0)}, "math").status[0] == (
        "filtered",
        "pass_rate_out_of_range",
    )
    no_gt = [member(0, 1.0)]
    assert grpo_prompts(no_gt, {}, "math").status[0] == ("filtered", "no_ground_truth")
    gt = grpo_prompts(no_gt, {}, "math", b"{}\n" + b'{"expected_answer": "7"}\n')
    assert (
        gt.records[0][0]["ground_truth"] == "7"
        and gt.records[0][0]["meta"]["ground_truth_source"] == "tasks_file"
    )
    gym = grpo_prompts(ms, {}, "nemo_gym").records[0][0]
    assert gym["responses_create_params"] == {"input": "q", "tools": []}  # sampling params dropped
    assert (
        gym["agent_ref"] == {"type": "responses_api_agents", "name": "a"}
        and gym["expected_answer"] == 42
    )


def test_grpo_reward_threshold_keeps_the_seed_behaviour():
    ms = [member(0, -1.0), member(1, 0.0)]
    res = grpo_prompts(ms, {}, "nemo_gym")
    assert res.status == {0: ("filtered", "below_reward_threshold"), 1: ("used", None)}
