"""A stand-in NeMo RL checkout and hand-written datasets for gymray's launch tests.

NeMo RL cannot be installed here (Python >= 3.13, GPUs), so the tests build a small
tree with the same entrypoint paths and base configs. Its scripts behave like NeMo RL's
at the contract's edges: they load `--config` with `defaults:` resolution (relative to
each YAML's own dir, `_override_` on top-level keys), apply Hydra-style overrides in
struct mode, fail like NeMo RL on the `data.validation` hub-split trap, read the data
files the config names and check the records, and write what they saw to a JSON report
(path from STANDIN_REPORT or `standin.report`). `standin.mode` = ok | fail | sleep.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import orjson

STANDIN_SCRIPT = textwrap.dedent(
    '''
    """Stand-in for a NeMo RL examples/run_*.py entrypoint (written by gymray's tests)."""
    import argparse
    import hashlib
    import json
    import os
    import sys
    import time
    from pathlib import Path

    from omegaconf import DictConfig, OmegaConf, open_dict


    def load(path, seen=()):
        path = Path(path).resolve()
        assert path not in seen, f"defaults cycle at {path}"
        cfg = OmegaConf.load(path)
        if "defaults" not in cfg:
            return cfg
        defaults = cfg.pop("defaults")
        parents = [defaults] if isinstance(defaults, str) else list(defaults)
        base = OmegaConf.create({})
        for parent in parents:
            p = Path(str(parent))
            base = merge(base, load(p if p.is_absolute() else path.parent / p, (*seen, path)))
        return merge(base, cfg)


    def merge(base, child):
        # Like NeMo RL: `_override_` is honoured on top-level keys only.
        for key in list(child.keys()):
            node = child[key]
            if isinstance(node, DictConfig) and node.get("_override_", False):
                node.pop("_override_")
                if key in base:
                    base.pop(key)
        return OmegaConf.merge(base, child)


    def apply_overrides(cfg, overrides):
        OmegaConf.set_struct(cfg, True)
        for item in overrides:
            if item.startswith("~"):
                with open_dict(cfg):
                    parent, _, leaf = item[1:].rpartition(".")
                    node = OmegaConf.select(cfg, parent) if parent else cfg
                    node.pop(leaf)
                continue
            key, _, raw = item.partition("=")
            value = OmegaConf.from_dotlist([f"v={raw}"]).v
            if key.startswith("++"):
                with open_dict(cfg):
                    OmegaConf.update(cfg, key[2:], value, force_add=True)
            else:
                if OmegaConf.select(cfg, key, default="<missing>") == "<missing>":
                    raise SystemExit(f"Could not override '{key}': key not in struct config")
                OmegaConf.update(cfg, key, value)
        return cfg


    def read_jsonl(path):
        assert path.endswith(".jsonl"), f"stand-in reads jsonl only, got {path}"
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


    def check_record(block, rec, where):
        name = block["dataset_name"]
        if name == "openai_format":
            msgs = rec[block["chat_key"]]
            assert msgs and msgs[-1]["role"] == "assistant", f"{where}: last message not assistant"
            assert block["tool_key"] in rec, f"{where}: no {block['tool_key']}"
        elif name == "ResponseDataset":
            assert isinstance(rec[block["input_key"]], (str, list)), f"{where}: bad input"
            assert isinstance(rec[block["output_key"]], str), f"{where}: output not a string"
        elif name == "PreferenceDataset":
            comps = rec["completions"]
            assert len(comps) == 2, f"{where}: {len(comps)} completions"
            assert comps[0]["rank"] != comps[1]["rank"], f"{where}: equal ranks"
            assert isinstance(rec["context"], list), f"{where}: context not messages"
        elif name == "BinaryPreferenceDataset":
            assert isinstance(rec[block["chosen_key"]], str), f"{where}: chosen not a string"
            assert isinstance(rec[block["rejected_key"]], str), f"{where}: rejected not a string"
            assert block["prompt_key"] in rec, f"{where}: no prompt"
        elif name == "NemoGymDataset":
            assert "input" in rec["responses_create_params"], f"{where}: no input"
            assert rec["agent_ref"]["name"], f"{where}: no agent_ref"
        else:
            raise KeyError(f"unknown dataset_name {name}")


    def load_split(cfg, split):
        block = cfg["data"].get(split)
        if block is None:
            return None
        block = {**(cfg["data"].get("default") or {}), **block}
        if "data_path" not in block or block.get("split", "train") != "train":
            # What NeMo RL does with a hub block's split on a local file: a local file
            # has only a train split.
            raise KeyError(block.get("split", split))
        if block["dataset_name"] == "NemoGymDataset":
            assert cfg["env"]["should_use_nemo_gym"] is True, "env.should_use_nemo_gym not set"
            assert block["processor"] == "nemo_gym_data_processor"
        records = read_jsonl(block["data_path"])
        for i, rec in enumerate(records):
            check_record(block, rec, f"{block['data_path']}:{i + 1}")
        return len(records)


    def main():
        parser = argparse.ArgumentParser()
        parser.add_argument("--config", required=True)
        args, overrides = parser.parse_known_args()
        cfg = apply_overrides(load(args.config), overrides)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert "_override_" not in json.dumps(resolved), "an _override_ marker survived"
        standin = resolved.get("standin") or {}
        mode = standin.get("mode", "ok")
        print(f"stand-in {sys.argv[0]} mode={mode} cwd={os.getcwd()}", flush=True)
        if standin.get("print_env"):
            # A leaky program: gymray must redact what it relays.
            name = standin["print_env"]
            print(f"{name}={os.environ.get(name)}", flush=True)
        records = {"train": load_split(resolved, "train"), "val": load_split(resolved, "validation")}
        ckpt = Path(resolved["checkpointing"]["checkpoint_dir"]) / "step_1"
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "training_info.json").write_text(json.dumps({"step": 1}))
        Path(resolved["logger"]["log_dir"]).mkdir(parents=True, exist_ok=True)
        report = os.environ.get("STANDIN_REPORT") or standin.get("report")
        if report:
            env = {
                k: hashlib.sha256(v.encode()).hexdigest()
                for k, v in os.environ.items()
                if k.startswith(("GYMRAY_TEST_", "RAY_OVERRIDE_JOB_RUNTIME_ENV"))
            }
            Path(report).write_text(json.dumps({
                "script": sys.argv[0], "cwd": os.getcwd(), "config": resolved,
                "records": records, "env_sha256": env,
                "override_env": os.environ.get("RAY_OVERRIDE_JOB_RUNTIME_ENV"),
            }))
        print(f"records train={records['train']} val={records['val']}", flush=True)
        if mode == "fail":
            print("stand-in failing on purpose", flush=True)
            sys.exit(1)
        if mode == "sleep":
            time.sleep(float(standin.get("sleep_s", 120)))
        print("stand-in done", flush=True)


    if __name__ == "__main__":
        main()
    '''
).lstrip()

BASE_CONFIGS = {
    "examples/configs/sft.yaml": """
        sft:
          max_num_steps: 100
          val_period: 10
        policy:
          model_name: Qwen/Qwen2.5-1.5B
          max_total_sequence_length: 1024
          train_global_batch_size: 32
          generation: null
          dtensor_cfg:
            enabled: true
            env_vars: {}
        data:
          max_input_seq_length: ${policy.max_total_sequence_length}
          shuffle: true
          train:
            dataset_name: squad
            split: train
          validation:
            dataset_name: squad
            split: validation
        checkpointing:
          enabled: true
          checkpoint_dir: results/sft
        logger:
          log_dir: logs
          wandb_enabled: false
          wandb:
            project: sft-dev
        cluster:
          gpus_per_node: 1
          num_nodes: 1
        """,
    "examples/configs/dpo.yaml": """
        dpo:
          max_num_steps: 100
          reference_policy_kl_penalty: 0.05
        policy:
          model_name: Qwen/Qwen2.5-1.5B
          max_total_sequence_length: 1024
        data:
          max_input_seq_length: ${policy.max_total_sequence_length}
          train:
            dataset_name: HelpSteer3
            split: train
          validation:
            dataset_name: HelpSteer3
            split: validation
        checkpointing:
          enabled: true
          checkpoint_dir: results/dpo
        logger:
          log_dir: logs
        cluster:
          gpus_per_node: 1
          num_nodes: 1
        """,
    "examples/configs/grpo_math_1B.yaml": """
        grpo:
          num_prompts_per_step: 32
          num_generations_per_prompt: 16
        policy:
          model_name: Qwen/Qwen2.5-1.5B
          generation:
            backend: vllm
            temperature: 1.0
            vllm_cfg:
              tensor_parallel_size: 1
        data:
          max_input_seq_length: 1024
          default:
            prompt_file: examples/prompts/cot.txt
            processor: math_hf_data_processor
            env_name: math
          train:
            dataset_name: OpenMathInstruct-2
            split: train
          validation: null
        env:
          math:
            num_workers: 8
        checkpointing:
          enabled: true
          checkpoint_dir: results/grpo
        logger:
          log_dir: logs
        cluster:
          gpus_per_node: 1
          num_nodes: 1
        """,
    # A relative `defaults:` one directory up: resolved against this file's own dir.
    "examples/nemo_gym/grpo_workplace_assistant_nemotron_nano_v2_9b.yaml": """
        defaults: ../configs/grpo_math_1B.yaml
        policy:
          model_name: nvidia/NVIDIA-Nemotron-Nano-9B-v2
        env:
          should_use_nemo_gym: false
          nemo_gym:
            config_paths: []
        """,
}

SCRIPTS = (
    "examples/run_sft.py",
    "examples/run_dpo.py",
    "examples/run_grpo.py",
    "examples/nemo_gym/run_grpo_nemo_gym.py",
)


def make_checkout(root: Path) -> Path:
    """Write the stand-in NeMo RL checkout under `root`; return its path."""
    root.mkdir(parents=True, exist_ok=True)
    for rel in SCRIPTS:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(STANDIN_SCRIPT)
    for rel, text in BASE_CONFIGS.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    (root / "examples/prompts").mkdir(parents=True, exist_ok=True)
    (root / "examples/prompts/cot.txt").write_text("Think step by step. {}\n")
    return root


def _records(fmt: str, n: int, tag: str) -> list[dict]:
    out = []
    for i in range(n):
        q = f"{tag} question {i}: what is {i} + {i}?"
        a = f"The answer is {2 * i}."
        meta = {"task": f"{tag}-{i}"}
        if fmt == "openai":
            out.append(
                {
                    "messages": [
                        {"role": "user", "content": q},
                        {"role": "assistant", "content": a},
                    ],
                    "tools": [],
                    "meta": meta,
                }
            )
        elif fmt == "simple":
            out.append({"input": q, "output": a, "meta": meta})
        elif fmt == "preference":
            out.append(
                {
                    "context": [{"role": "user", "content": q}],
                    "completions": [
                        {"rank": 0, "completion": [{"role": "assistant", "content": a}]},
                        {"rank": 1, "completion": [{"role": "assistant", "content": "no idea"}]},
                    ],
                    "meta": meta,
                }
            )
        elif fmt == "binary":
            out.append(
                {
                    "prompt": q,
                    "chosen": a,
                    "rejected": "no idea",
                    "chosen_reward": 1.0,
                    "rejected_reward": 0.0,
                    "reward_gap": 1.0,
                    "meta": meta,
                }
            )
        elif fmt == "math":
            out.append({"input": q, "ground_truth": str(2 * i), "meta": meta})
        elif fmt == "nemo_gym":
            out.append(
                {
                    "responses_create_params": {"input": [{"role": "user", "content": q}]},
                    "agent_ref": {"type": "responses_api_agents", "name": "simple_agent"},
                    "expected": str(2 * i),
                    "meta": meta,
                }
            )
        else:
            raise ValueError(fmt)
    return out


def write_dataset(
    out: Path,
    algo: str,
    fmt: str,
    *,
    n_train: int = 3,
    n_val: int = 1,
    fingerprint: str = "f00d",
    tools_differ: bool = False,
) -> dict:
    """A committed gymray dataset dir (train/val JSONL + manifest.json) written by hand."""
    from gymray import formats

    out.mkdir(parents=True, exist_ok=True)
    files = {"train": "train.jsonl", "val": "val.jsonl" if n_val else None}
    for split, n in (("train", n_train), ("val", n_val)):
        if files[split]:
            with open(out / files[split], "wb") as f:
                for rec in _records(fmt, n, split):
                    f.write(orjson.dumps(rec) + b"\n")
    manifest = {
        "algo": algo,
        "output": str(out),
        "fingerprint": fingerprint,
        "format": fmt,
        "files": files,
        "counts": {"records": {"train": n_train, "val": n_val}},
        "tools_differ": tools_differ,
        "nemo_rl": formats.get(fmt).data_config(
            str(out / files["train"]),
            str(out / files["val"]) if files["val"] else None,
            {"tools_differ": tools_differ},
        ),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
