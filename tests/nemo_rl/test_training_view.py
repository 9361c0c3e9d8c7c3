"""What NeMo RL trains on, through the stand-in NeMo RL: the config gymray writes is
run by scripts that behave like NeMo RL's entrypoints (tests/nemo_rl_standin.py:
chat templates as get_tokenizer reads them, processors' masking, Gym routing)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from nemo_rl_standin import MODEL_TEMPLATE, SQUAD_TEMPLATE, make_checkout
from omegaconf import OmegaConf
from support import REPO, read_jsonl, run_standin

import gymray
from gymray.errors import ConfigError, EmptyDatasetError
from gymray.samples.generate import HERE, message, rollout, user, write_jsonl

pytestmark = pytest.mark.usefixtures("ray_session")
SAMPLE = str(HERE / "rollouts.jsonl")


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    return make_checkout(tmp_path_factory.mktemp("nemo-rl"))


def job(checkout: Path) -> dict:
    return {"nemo_rl_dir": str(checkout), "launcher": sys.executable}


def dry_run(ds, checkout, **nemo_rl):
    handle = gymray.submit(ds, job=job(checkout), nemo_rl=nemo_rl or None, dry_run=True)
    assert Path(handle.config_path).is_file()  # a dry run writes what it would launch with
    return handle


def script_of(handle) -> str:
    return handle.config.script


def test_sft_trains_on_tool_calls_through_the_models_own_template(checkout, tmp_path):
    ds = gymray.prepare("sft", input=SAMPLE, output=str(tmp_path / "sft"),
                        **{"sft.reward_threshold": None, "chat.images": "filter"})  # fmt: skip
    notes = ds.manifest["stats"]["notes"]
    assert notes["content:tool_calls"] > 0
    handle = dry_run(ds, checkout, **{"policy": {"max_total_sequence_length": 100000}})
    assert script_of(handle) == "examples/run_sft.py"
    proc, seen = run_standin(checkout, "examples/run_sft.py", handle.config_path, tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    view = seen["views"]["train"]
    assert view["template"] == "model" and view["lost"] == [] and view["masked"] == 0
    assert view["samples"] == ds.counts["records"]["train"]

    # The trap, reproduced by the stand-in: NeMo RL's sft.yaml template loses them.
    squad = tmp_path / "squad.yaml"
    squad.write_text(OmegaConf.to_yaml({"defaults": handle.config_path,
                                        "policy": {"tokenizer": {"chat_template": SQUAD_TEMPLATE}}}))  # fmt: skip
    proc, seen = run_standin(checkout, "examples/run_sft.py", str(squad), tmp_path / "r2")
    assert proc.returncode == 0 and seen["views"]["train"]["lost"], "the stand-in lost the trap"

    # gymray refuses a template that drops tool calls, naming the key
    for template in (SQUAD_TEMPLATE, None):
        with pytest.raises(ConfigError, match=r"nemo_rl\.policy\.tokenizer\.chat_template"):
            gymray.submit(ds, job=job(checkout), dry_run=True,
                          nemo_rl={"policy": {"tokenizer": {"chat_template": template}}})  # fmt: skip
    # and accepts a custom one that renders them
    ok = dry_run(ds, checkout, **{"policy": {"tokenizer": {"chat_template": MODEL_TEMPLATE}}})
    assert "chat_template" in Path(ok.config_path).read_text()


def test_sft_images_train_a_vlm_or_are_filtered_never_a_crash(checkout, tmp_path):
    ds = gymray.prepare("sft", input=SAMPLE, output=str(tmp_path / "img"),
                        **{"sft.reward_threshold": None})  # fmt: skip
    assert ds.manifest["stats"]["notes"]["content:images"] > 0
    parts = [p for r in read_jsonl(tmp_path / "img" / "train.jsonl") + read_jsonl(tmp_path / "img" / "val.jsonl")
             for m in r["messages"] if isinstance(m["content"], list) for p in m["content"]]  # fmt: skip
    assert {"type": "image", "image": parts[-1]["image"]} in parts  # NeMo RL's own image parts
    handle = dry_run(ds, checkout)
    assert script_of(handle) == "examples/run_vlm_sft.py"
    (said,) = [w for w in handle.warnings if "hold images" in w]  # never a silent switch
    assert "examples/run_vlm_sft.py" in said and "chat.images=filter" in said
    assert "sft_vlm_3B.yaml" in Path(handle.config.base_path).read_text()
    proc, _ = run_standin(checkout, "examples/run_vlm_sft.py", handle.config_path, tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    # the traps: the text entrypoint crashes on image parts, and sft.yaml's template on
    # any list content ('list object' has no attribute 'strip')
    proc, _ = run_standin(checkout, "examples/run_sft.py", handle.config_path, tmp_path / "r2")
    assert proc.returncode != 0 and "text tokenizer" in proc.stderr
    squad = tmp_path / "squad.yaml"
    squad.write_text(OmegaConf.to_yaml({"defaults": handle.config_path,
                                        "policy": {"tokenizer": {"chat_template": SQUAD_TEMPLATE}}}))  # fmt: skip
    proc, _ = run_standin(checkout, "examples/run_vlm_sft.py", str(squad), tmp_path / "r4")
    assert proc.returncode != 0 and "has no attribute 'strip'" in proc.stderr
    with pytest.raises(ConfigError, match="chat.images=filter"):
        gymray.submit(ds, job={**job(checkout), "script": "examples/run_sft.py"}, dry_run=True)

    text = gymray.prepare("sft", input=SAMPLE, output=str(tmp_path / "txt"),
                          **{"sft.reward_threshold": None, "chat.images": "filter"})  # fmt: skip
    assert text.counts["filtered"]["has_images"] > 0
    handle = dry_run(text, checkout)
    assert script_of(handle) == "examples/run_sft.py"
    proc, seen = run_standin(checkout, "examples/run_sft.py", handle.config_path, tmp_path / "r3")
    assert proc.returncode == 0, proc.stderr


def gym_rollouts(tmp_path: Path, agents: dict[str, dict]) -> Path:
    rows = []
    for t, (agent, fields) in enumerate(agents.items()):
        for k in range(2):
            rows.append(rollout([user(f"task {t}")], [message("answer", "m")], float(k),
                                agent=agent, task=t, rollout_index=k, **fields))  # fmt: skip
    return write_jsonl(tmp_path / "gym" / "rollouts.jsonl", rows)


IFBENCH = {"id": 1, "instruction_id_list": ["x"], "prompt": "p", "kwargs": [{}]}
MATH = {"question": "1+1?", "expected_answer": "2"}


def test_grpo_starts_the_gym_servers_of_every_agent_in_the_data(checkout, tmp_path):
    src = gym_rollouts(tmp_path, {"ifbench_simple_agent": IFBENCH,
                                  "math_with_judge_simple_agent": MATH})  # fmt: skip
    ds = gymray.prepare("grpo", input=str(src), output=str(tmp_path / "g"),
                        **{"split.val_fraction": 0})  # fmt: skip
    handle = dry_run(ds, checkout)
    paths = OmegaConf.load(handle.config_path).env.nemo_gym.config_paths
    gym = checkout / "3rdparty/Gym-workspace/Gym"
    assert list(paths) == [
        str(gym / "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml"),
        str(gym / "resources_servers/ifbench/configs/ifbench.yaml"),
        str(gym / "resources_servers/math_with_judge/configs/math_with_judge.yaml"),
    ]
    proc, seen = run_standin(checkout, script_of(handle), handle.config_path, tmp_path / "r")
    assert proc.returncode == 0, proc.stderr
    assert seen["views"]["train"]["agents"] == {"ifbench_simple_agent": 1,
                                                "math_with_judge_simple_agent": 1}  # fmt: skip

    # the trap: the example config's servers (workplace_assistant) serve none of them
    example = tmp_path / "example.yaml"
    example.write_text(OmegaConf.to_yaml({"defaults": handle.config_path, "env": {"nemo_gym": {
        "config_paths": ["resources_servers/workplace_assistant/configs/workplace_assistant.yaml"]}}}))  # fmt: skip
    proc, _ = run_standin(checkout, script_of(handle), str(example), tmp_path / "r2")
    assert proc.returncode != 0 and "no server named" in proc.stderr
    # gymray refuses the same, listing the unserved agents
    with pytest.raises(ConfigError, match="ifbench_simple_agent, math_with_judge_simple_agent"):
        gymray.submit(ds, job=job(checkout), dry_run=True, nemo_rl={"env": {"nemo_gym": {
            "config_paths": ["resources_servers/workplace_assistant/configs/workplace_assistant.yaml"]}}})  # fmt: skip


def test_rows_without_the_fields_their_gym_request_model_requires_are_refused(checkout, tmp_path):
    """ifbench's verify request needs id, instruction_id_list, prompt and kwargs: rows
    whose rollouts dropped one would be answered 422 in the middle of training."""
    lacking = {k: v for k, v in IFBENCH.items() if k != "id"}
    src = gym_rollouts(tmp_path, {"ifbench_simple_agent": lacking})
    ds = gymray.prepare("grpo", input=str(src), output=str(tmp_path / "g"))
    with pytest.raises(ConfigError, match=r"ifbench_simple_agent needs id \(1 rows\).*tasks="):
        gymray.submit(ds, job=job(checkout), dry_run=True)
    handle = gymray.submit(ds, job={**job(checkout), "check_gym_rows": False}, dry_run=True)
    assert Path(handle.config_path).is_file()


def test_an_agent_no_gym_config_declares_is_refused_before_submitting(checkout, tmp_path):
    src = gym_rollouts(tmp_path, {"nope_agent": {}})
    ds = gymray.prepare("grpo", input=str(src), output=str(tmp_path / "g"))
    with pytest.raises(ConfigError, match="nope_agent"):
        gymray.submit(ds, job=job(checkout), dry_run=True)


def test_dpo_and_rm_render_the_tools_and_load_in_their_data_setup(checkout, tmp_path):
    for algo, script in (("dpo", "examples/run_dpo.py"), ("rm", "examples/run_rm.py")):
        ds = gymray.prepare(algo, input=SAMPLE, output=str(tmp_path / algo),
                            **{f"{algo}.pairing": "all", "split.val_fraction": 0})  # fmt: skip
        assert ds.counts["records"]["train"] > 0
        handle = dry_run(ds, checkout)
        assert script_of(handle) == script
        proc, seen = run_standin(checkout, script, handle.config_path, tmp_path / f"r-{algo}")
        assert proc.returncode == 0, proc.stderr
        view = seen["views"]["train"]
        assert view["lost"] == [] and view["samples"] == ds.counts["records"]["train"]
        assert view["unscored_tail_differs"] == 0
        if algo == "rm":
            assert seen["config"]["policy"]["tokenizer"]["chat_template"] == "default"


def test_records_nemo_rl_would_mask_as_too_long_are_counted_before_launch(checkout, tmp_path):
    rows = [rollout([user(f"question {i} " + "word " * (3000 if i % 2 else 10))],
                    [message(f"answer {i}", "m")], 1.0) for i in range(8)]  # fmt: skip
    src = write_jsonl(tmp_path / "long" / "rollouts.jsonl", rows)
    ds = gymray.prepare("sft", input=str(src), output=str(tmp_path / "o"),
                        **{"split.val_fraction": 0})  # fmt: skip
    handle = dry_run(ds, checkout)
    (warning,) = [w for w in handle.warnings if "max_input_seq_length" in w]
    assert warning.startswith("about 4 of 8 train records") and "1024" in warning
    proc, seen = run_standin(checkout, "examples/run_sft.py", handle.config_path, tmp_path / "r")
    assert proc.returncode == 0 and seen["views"]["train"]["masked"] == 4


def test_a_dataset_without_training_records_is_never_launched(checkout, tmp_path):
    args = ["sft", f"input={SAMPLE}", f"output={tmp_path / 'e'}", "sft.reward_threshold=100"]
    proc = subprocess.run([sys.executable, "-m", "gymray.run", *args, "--prepare-only"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 7 and "no training records" in proc.stderr, proc.stderr
    ds = gymray.load(str(tmp_path / "e"))
    with pytest.raises(EmptyDatasetError, match="allow_empty"):
        gymray.submit(ds, job=job(checkout), dry_run=True)
    proc = subprocess.run(
        [sys.executable, "-m", "gymray.run", *args, "allow_empty=true", "--prepare-only"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
