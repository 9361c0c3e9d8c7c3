"""A stand-in NeMo RL checkout (with its NeMo Gym submodule) for gymray's launch tests.

NeMo RL cannot be installed here (Python >= 3.13, GPUs), so the tests build a small
tree with NeMo RL's entrypoint paths, base configs and Gym configs, whose scripts
behave like NeMo RL's where gymray's output meets it. Everything here is written from
NeMo RL's and NeMo Gym's own code (file:line in the comments, late 2026 main), never
from gymray's: it shares no code with gymray, so it can catch a wrong assumption.

What the scripts reproduce:
- config loading (nemo_rl/utils/config.py): `defaults:` relative to each YAML's own
  directory; `_override_: true` honoured on TOP-LEVEL keys only; Hydra-style CLI
  overrides in struct mode (`a.b=v` for existing keys, `++a.b=v` adds, `~a.b` deletes);
  then everything resolved (an interpolation to a missing key fails);
- the data blocks: a hub block with `split: validation` on a local file fails
  (KeyError 'validation'); openai_format's last message must be the assistant's;
  openai_format with use_preserving_dataset and NemoGymDataset open one file;
- the chat template as get_tokenizer reads it (algorithms/utils.py:376-390): absent or
  "default" = the model's own (here a tool-aware ChatML, as agent models have), null =
  the passthrough template, `*.jinja` = a file, any other string = the template;
- SFT (processors.py sft_processor, llm_message_utils.get_formatted_message_log):
  each record rendered with its tools; `{"type": "image"}` parts are loaded, which a
  text tokenizer cannot take (only run_vlm_sft.py has a processor); samples whose
  length >= data.max_input_seq_length are masked (loss multiplier 0);
- DPO and RM (processors.py preference_preprocessor): context + each completion
  rendered WITHOUT tools; masked when max(chosen, rejected) > the limit; DPO scores
  the final message only (collate_fn.py only_unmask_final=True); run_rm.py asserts
  policy.reward_model_cfg.enabled;
- GRPO math (math_hf_data_processor, math_environment): the ground truth must be a
  string (it is wrapped in \\boxed{});
- GRPO with Gym (environments/nemo_gym.py:676 `row["agent_ref"]["name"]`): every row's
  agent must be declared by a config in env.nemo_gym.config_paths (Gym resolves them:
  absolute, else NEMO_GYM_EXTRA_ROOTS, the cwd, the Gym checkout); Gym validates the
  row with its resources server's verify request model (fields in REQUEST_FIELDS).

"Tokens" are bytes of the rendered text (a byte-level tokenizer, as NeMo RL's CPU
checker uses). Each run writes what NeMo RL would have trained on to a JSON report
(path from STANDIN_REPORT or `standin.report`): records, masked samples, and the
content of records that never reached the rendered text. `standin.mode` = ok | fail
| sleep.
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
    import glob
    import hashlib
    import json
    import os
    import sys
    import time
    from pathlib import Path

    from jinja2.sandbox import ImmutableSandboxedEnvironment
    from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

    SCRIPT = sys.argv[0].replace(os.sep, "/")
    # The model's own template: tool-aware ChatML, as tool-calling models ship.
    MODEL_TEMPLATE = __MODEL_TEMPLATE__
    PASSTHROUGH = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
    # Gym resources servers' verify request models (resources_servers/<x>/app.py), required
    # fields beyond responses_create_params and response.
    REQUEST_FIELDS = {
        "ifbench": ["id", "instruction_id_list", "prompt", "kwargs"],
        "workplace_assistant": ["ground_truth", "id", "category", "environment_name"],
        "math_with_judge": ["question", "expected_answer"],
    }


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
        # nemo_rl/utils/config.py:30-48: `_override_` on top-level keys only.
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


    def read_rows(block):
        path = block["data_path"]
        single = block["dataset_name"] == "NemoGymDataset" or (
            block["dataset_name"] == "openai_format" and block.get("use_preserving_dataset")
        )
        if single:
            with open(path, encoding="utf-8") as f:  # IsADirectoryError / no globs, as NeMo RL
                return [json.loads(x) for x in f if x.strip()]
        files = sorted(glob.glob(path)) or [path]
        return [json.loads(x) for p in files for x in open(p, encoding="utf-8") if x.strip()]


    def chat_template(cfg):
        tok = cfg["policy"].get("tokenizer") or {}
        if "chat_template" not in tok:
            return MODEL_TEMPLATE, "model"
        t = tok["chat_template"]
        if t is None:
            return PASSTHROUGH, "passthrough"
        if t.lower() == "default":
            return MODEL_TEMPLATE, "model"
        if t.endswith(".jinja"):
            return open(t, encoding="utf-8").read(), "file"
        return t, "custom"


    def renderer(template):
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
        t = env.from_string(template)
        return lambda messages, tools=None: t.render(
            messages=messages, tools=tools, add_generation_prompt=False, bos_token="", eos_token=""
        )


    def needles(messages, tools):
        """What of a conversation the model must see: texts, tool calls, results, schemas."""
        out = []
        for m in messages:
            if isinstance(m.get("content"), str) and m["content"].strip():
                out.append(m["content"].strip()[:200])
            for tc in m.get("tool_calls") or []:
                out.append(tc["function"]["name"])
        out += [t["function"]["name"] for t in tools or []]
        return out


    def has_images(messages):
        return any(isinstance(m.get("content"), list)
                   and any(p.get("type") == "image" for p in m["content"]) for m in messages)


    def train_view(cfg, rows, render, vlm):
        """SFT / DPO / RM: what NeMo RL's processors make of each record."""
        limit = cfg["data"]["max_input_seq_length"]
        seen = {"samples": 0, "masked": 0, "lost": [], "unscored_tail_differs": 0}
        preference = "run_dpo" in SCRIPT or "run_rm" in SCRIPT
        for i, rec in enumerate(rows):
            if preference:
                comps = sorted(rec["completions"], key=lambda c: c["rank"])
                assert len(comps) == 2 and comps[0]["rank"] != comps[1]["rank"], f"row {i}: ranks"
                convs = [(rec["context"] + c["completion"], None) for c in comps]
                if "run_dpo" in SCRIPT and comps[0]["completion"][-1] == comps[1]["completion"][-1]:
                    seen["unscored_tail_differs"] += 1  # only the final message is scored
            else:
                msgs = rec["messages"]
                assert msgs and msgs[-1]["role"] == "assistant", f"row {i}: last message not assistant"
                if has_images(msgs) and not vlm:
                    raise TypeError(f"row {i}: image parts given to a text tokenizer (run_vlm_sft.py has a processor)")
                convs = [(msgs, rec.get("tools"))]
            texts = [render(m, t) for m, t in convs]  # a template error ends the run
            seen["samples"] += 1
            length = max(len(t.encode()) for t in texts)
            if (length > limit) if preference else (length >= limit):
                seen["masked"] += 1
                continue
            whole = "".join(texts)
            missing = [n for (m, t) in convs for n in needles(m, t) if n not in whole]
            if missing:
                seen["lost"].append({"row": i, "missing": missing[0][:80]})
        return seen


    def gym_root(cfg):
        return Path.cwd() / "3rdparty/Gym-workspace/Gym"


    def gym_configs(paths, root):
        """Instances declared by Gym configs (following config_paths and _inherit_from)."""
        instances = {}
        todo = [str(p) for p in paths]
        while todo:
            rel = todo.pop()
            extra = [Path(r) / rel for r in os.environ.get("NEMO_GYM_EXTRA_ROOTS", "").split(os.pathsep) if r]
            candidates = [Path(rel)] if os.path.isabs(rel) else [*extra, Path.cwd() / rel, root / rel]
            found = next((c for c in candidates if c.is_file()), None)
            assert found is not None, f"Gym config {rel} not found"
            cfg = OmegaConf.to_container(OmegaConf.load(found))
            todo += cfg.pop("config_paths", None) or []
            instances.update(cfg)
        return instances


    def agent_server(instances, name):
        inst = dict(instances.get(name) or {})
        while "_inherit_from" in inst and "responses_api_agents" not in inst:
            inst = {**instances.get(inst.pop("_inherit_from"), {}), **inst}
        if "_inherit_from" in inst:
            base = instances.get(inst["_inherit_from"], {})
            agents = base.get("responses_api_agents", {}) | inst.get("responses_api_agents", {})
        else:
            agents = inst.get("responses_api_agents")
        if not agents:
            return None
        (spec,) = agents.values()
        server = (spec.get("resources_server") or {}).get("name")
        resources = (instances.get(server) or {}).get("resources_servers") or {}
        return next(iter(resources), server)


    def gym_view(cfg, rows):
        instances = gym_configs(cfg["env"]["nemo_gym"]["config_paths"], gym_root(cfg))
        seen = {"samples": 0, "agents": {}, "request_errors": []}
        for i, row in enumerate(rows):
            assert isinstance(row.get("responses_create_params"), dict), f"row {i}: responses_create_params"
            name = row["agent_ref"]["name"]  # TypeError on a null agent_ref, as nemo_gym.py:676
            server = agent_server(instances, name)
            if server is None:
                raise KeyError(f"row {i}: no server named {name} was started (env.nemo_gym.config_paths)")
            missing = [f for f in REQUEST_FIELDS.get(server, []) if f not in row]
            if missing:
                seen["request_errors"].append({"row": i, "server": server, "missing": missing})
            seen["agents"][name] = seen["agents"].get(name, 0) + 1
            seen["samples"] += 1
        if seen["request_errors"]:
            raise ValueError(f"422 from Gym /verify: {seen['request_errors'][0]}")
        return seen


    def math_view(cfg, block, rows):
        for i, rec in enumerate(rows):
            gt = rec[block["output_key"]]
            assert isinstance(gt, str), f"row {i}: ground truth must be a string for \\\\boxed{{}}"
            assert isinstance(rec[block["input_key"]], str), f"row {i}: problem must be a string"
        return {"samples": len(rows)}


    def load_split(cfg, split):
        block = cfg["data"].get(split)
        if block is None:
            return None
        block = {**(cfg["data"].get("default") or {}), **block}
        if "data_path" not in block or block.get("split", "train") != "train":
            # A local file has only a train split (datasets/utils.py load_dataset_from_path).
            raise KeyError(block.get("split", split))
        if block["dataset_name"] == "NemoGymDataset":
            assert cfg["env"]["should_use_nemo_gym"] is True, "env.should_use_nemo_gym not set"
            assert block["processor"] == "nemo_gym_data_processor"
        rows = read_rows(block)
        name = block["dataset_name"]
        if name == "NemoGymDataset":
            return gym_view(cfg, rows)
        if name == "ResponseDataset" and "run_grpo" in SCRIPT:
            return math_view(cfg, block, rows)
        if name in ("openai_format", "PreferenceDataset"):
            template, kind = chat_template(cfg)
            view = train_view(cfg, rows, renderer(template), "run_vlm_sft" in SCRIPT)
            view["template"] = kind
            return view
        return {"samples": len(rows)}


    def main():
        parser = argparse.ArgumentParser()
        parser.add_argument("--config", required=True)
        args, overrides = parser.parse_known_args()
        cfg = apply_overrides(load(args.config), overrides)
        resolved = OmegaConf.to_container(cfg, resolve=True)
        assert "_override_" not in json.dumps(resolved), "an _override_ marker survived"
        if "run_rm" in SCRIPT:
            assert resolved["policy"]["reward_model_cfg"]["enabled"], "run_rm.py: reward_model_cfg.enabled"
        standin = resolved.get("standin") or {}
        mode = standin.get("mode", "ok")
        print(f"stand-in {sys.argv[0]} mode={mode} cwd={os.getcwd()}", flush=True)
        if standin.get("print_env"):
            # A leaky program: gymray must redact what it relays.
            name = standin["print_env"]
            print(f"{name}={os.environ.get(name)}", flush=True)
        views = {"train": load_split(resolved, "train"), "val": load_split(resolved, "validation")}
        ckpt = Path(resolved["checkpointing"]["checkpoint_dir"]) / "step_1"
        ckpt.mkdir(parents=True, exist_ok=True)
        (ckpt / "training_info.json").write_text(json.dumps({"step": 1}))
        Path(resolved["logger"]["log_dir"]).mkdir(parents=True, exist_ok=True)
        report = os.environ.get("STANDIN_REPORT") or standin.get("report")
        records = {k: (v or {}).get("samples") for k, v in views.items()}
        if report:
            env = {
                k: hashlib.sha256(v.encode()).hexdigest()
                for k, v in os.environ.items()
                if k.startswith(("GYMRAY_TEST_", "RAY_OVERRIDE_JOB_RUNTIME_ENV"))
            }
            Path(report).write_text(json.dumps({
                "script": sys.argv[0], "cwd": os.getcwd(), "config": resolved,
                "records": records, "views": views, "env_sha256": env,
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
# A tool-calling model's own chat template (ChatML with tools and tool calls).
MODEL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n# Tools\n{{ tools | tojson }}<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}"
    "{% elif m['content'] is not none %}{{ m['content'] | tojson }}{% endif %}"
    "{% for tc in m.get('tool_calls') or [] %}<tool_call>{{ tc | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n{% endfor %}"
)
STANDIN_SCRIPT = STANDIN_SCRIPT.replace("__MODEL_TEMPLATE__", repr(MODEL_TEMPLATE))

# NeMo RL's sft.yaml chat template, verbatim (examples/configs/sft.yaml:37).
SQUAD_TEMPLATE = (
    "{% for message in messages %}{%- if message['role'] == 'system'  %}{{'Context: ' + "
    "message['content'].strip()}}{%- elif message['role'] == 'user'  %}{{' Question: ' + "
    "message['content'].strip() + ' Answer:'}}{%- elif message['role'] == 'assistant'  %}"
    "{{' ' + message['content'].strip()}}{%- endif %}{% endfor %}"
)
# rm.yaml's template renders role and content only (examples/configs/rm.yaml:30-32).
RM_TEMPLATE = (
    "{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{%- endfor %}"
)
LOGGER = """
        logger:
          log_dir: logs
          wandb_enabled: false
          wandb:
            project: {algo}-dev
            name: "{algo}-dev-${{data.train.dataset_name}}"
        """

BASE_CONFIGS = {
    "examples/configs/sft.yaml": f"""
        sft:
          max_num_steps: 100
          val_period: 10
          only_unmask_final: false
        policy:
          model_name: meta-llama/Llama-3.2-1B
          tokenizer:
            name: ${{policy.model_name}}
            chat_template: {json.dumps(SQUAD_TEMPLATE)}
          max_total_sequence_length: 1024
          train_global_batch_size: 32
          generation: null
          dtensor_cfg:
            enabled: true
            env_vars: {{}}
        data:
          max_input_seq_length: ${{policy.max_total_sequence_length}}
          shuffle: true
          train:
            dataset_name: squad
            split: train
          validation:
            dataset_name: squad
            split: validation
          default:
            prompt_file: null
            processor: sft_processor
        checkpointing:
          enabled: true
          checkpoint_dir: results/sft
        {LOGGER.format(algo="sft").strip()}
        cluster:
          gpus_per_node: 1
          num_nodes: 1
        """,
    "examples/configs/sft_vlm_3B.yaml": """
        defaults: sft.yaml
        policy:
          model_name: Qwen/Qwen2.5-VL-3B-Instruct
        data:
          train:
            dataset_name: clevr-cogent
            split: train
          validation:
            dataset_name: clevr-cogent
            split: valA
        """,
    "examples/configs/dpo.yaml": """
        dpo:
          max_num_steps: 100
          reference_policy_kl_penalty: 0.05
        policy:
          model_name: Qwen/Qwen2.5-1.5B
          tokenizer:
            name: ${policy.model_name}
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
    "examples/configs/rm.yaml": f"""
        rm:
          max_num_steps: -1
          val_period: 16
        policy:
          model_name: meta-llama/Llama-3.2-1B-Instruct
          tokenizer:
            name: ${{policy.model_name}}
            chat_template: {json.dumps(RM_TEMPLATE)}
          max_total_sequence_length: 8192
          reward_model_cfg:
            enabled: true
            reward_model_type: bradley_terry
        data:
          max_input_seq_length: ${{policy.max_total_sequence_length}}
          train:
            dataset_name: HelpSteer3
            split: train
          validation:
            dataset_name: HelpSteer3
            split: validation
        checkpointing:
          enabled: true
          checkpoint_dir: results/rm
        {LOGGER.format(algo="rm").strip()}
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
          max_total_sequence_length: 512
          generation:
            backend: vllm
            temperature: 1.0
            vllm_cfg:
              tensor_parallel_size: 1
        data:
          max_input_seq_length: ${policy.max_total_sequence_length}
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
        data:
          max_input_seq_length: null
        env:
          should_use_nemo_gym: true
          nemo_gym:
            config_paths:
            - responses_api_models/vllm_model/configs/vllm_model_for_training.yaml
            - resources_servers/workplace_assistant/configs/workplace_assistant.yaml
        """,
}

# NeMo Gym configs in the shape of Gym's own (an instance's one key names its server
# type; agents point at their resources server; benchmarks chain and inherit).
GYM = "3rdparty/Gym-workspace/Gym"
GYM_CONFIGS = {
    "responses_api_models/vllm_model/configs/vllm_model_for_training.yaml": """
        policy_model:
          responses_api_models:
            vllm_model:
              entrypoint: app.py
        """,
    "resources_servers/workplace_assistant/configs/workplace_assistant.yaml": """
        workplace_assistant:
          resources_servers:
            workplace_assistant:
              entrypoint: app.py
        workplace_assistant_simple_agent:
          responses_api_agents:
            simple_agent:
              entrypoint: app.py
              resources_server: {type: resources_servers, name: workplace_assistant}
              model_server: {type: responses_api_models, name: policy_model}
        """,
    "resources_servers/ifbench/configs/ifbench.yaml": """
        ifbench:
          resources_servers:
            ifbench:
              entrypoint: app.py
        ifbench_simple_agent:
          responses_api_agents:
            simple_agent:
              entrypoint: app.py
              resources_server: {type: resources_servers, name: ifbench}
              model_server: {type: responses_api_models, name: policy_model}
        """,
    "benchmarks/ifbench/config.yaml": """
        config_paths:
          - resources_servers/ifbench/configs/ifbench.yaml
        ifbench_benchmark_resources_server:
          _inherit_from: ifbench
        ifbench_benchmark_simple_agent:
          _inherit_from: ifbench_simple_agent
          responses_api_agents:
            simple_agent:
              resources_server:
                name: ifbench_benchmark_resources_server
        """,
    "resources_servers/math_with_judge/configs/math_with_judge.yaml": """
        math_with_judge:
          resources_servers:
            math_with_judge:
              entrypoint: app.py
        math_with_judge_simple_agent:
          responses_api_agents:
            simple_agent:
              entrypoint: app.py
              resources_server: {type: resources_servers, name: math_with_judge}
              model_server: {type: responses_api_models, name: policy_model}
        """,
}

# Gym's request models, in the shape of its code (nemo_gym/base_resources_server.py,
# resources_servers/ifbench/app.py): what a row posted to the ifbench agent must carry.
GYM_CONFIGS.update(
    {
        "nemo_gym/__init__.py": "",
        "nemo_gym/base_resources_server.py": """
            from pydantic import BaseModel


            class BaseRunRequest(BaseModel):
                responses_create_params: dict


            class BaseVerifyRequest(BaseRunRequest):
                response: dict


            class SimpleResourcesServer:
                async def verify(self, body: BaseVerifyRequest):
                    return {"reward": 1.0}
            """,
        "responses_api_agents/simple_agent/app.py": """
            from pydantic import ConfigDict

            from nemo_gym.base_resources_server import BaseRunRequest


            class SimpleAgentRunRequest(BaseRunRequest):
                model_config = ConfigDict(extra="allow")


            class SimpleAgent:
                async def run(self, request, body: SimpleAgentRunRequest):
                    return {}
            """,
        "resources_servers/ifbench/app.py": """
            from typing import Dict, List, Literal

            from nemo_gym.base_resources_server import BaseVerifyRequest, SimpleResourcesServer


            class IFBenchVerifyRequest(BaseVerifyRequest):
                id: int
                instruction_id_list: List[str]
                prompt: str
                kwargs: List[Dict]
                grading_mode: Literal["binary", "fraction"] = "fraction"


            class IFBenchResourcesServer(SimpleResourcesServer):
                async def verify(self, body: IFBenchVerifyRequest):
                    return {"reward": 1.0}
            """,
    }
)

SCRIPTS = (
    "examples/run_sft.py",
    "examples/run_vlm_sft.py",
    "examples/run_dpo.py",
    "examples/run_rm.py",
    "examples/run_grpo.py",
    "examples/nemo_gym/run_grpo_nemo_gym.py",
)


def make_checkout(root: Path, gym: bool = True) -> Path:
    """Write the stand-in NeMo RL checkout under `root` (with its Gym submodule
    unless `gym` is False); return its path."""
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
    if gym:
        for rel, text in GYM_CONFIGS.items():
            path = root / GYM / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text).lstrip())
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
                    "agent_ref": {
                        "type": "responses_api_agents",
                        "name": "math_with_judge_simple_agent",
                    },
                    "question": q,
                    "expected_answer": str(2 * i),
                    "meta": meta,
                }
            )
        else:
            raise ValueError(fmt)
    return out


DATA_BLOCKS = {  # what NeMo RL's dataset classes read (the contract's table)
    "openai": {"dataset_name": "openai_format", "chat_key": "messages", "tool_key": "tools"},
    "simple": {"dataset_name": "ResponseDataset", "input_key": "input", "output_key": "output"},
    "preference": {"dataset_name": "PreferenceDataset"},
    "binary": {
        "dataset_name": "BinaryPreferenceDataset",
        "prompt_key": "prompt",
        "chosen_key": "chosen",
        "rejected_key": "rejected",
    },  # fmt: skip
    "math": {"dataset_name": "ResponseDataset", "input_key": "input", "output_key": "ground_truth"},
    "nemo_gym": {},
}


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
    out.mkdir(parents=True, exist_ok=True)
    files = {"train": "train.jsonl", "val": "val.jsonl" if n_val else None}
    for split, n in (("train", n_train), ("val", n_val)):
        if files[split]:
            with open(out / files[split], "wb") as f:
                for rec in _records(fmt, n, split):
                    f.write(orjson.dumps(rec) + b"\n")
    notes = {"agent:math_with_judge_simple_agent": n_train + n_val} if fmt == "nemo_gym" else {}
    manifest = {
        "algo": algo,
        "output": str(out),
        "fingerprint": fingerprint,
        "format": fmt,
        "files": files,
        "counts": {"records": {"train": n_train, "val": n_val}},
        "tools_differ": tools_differ,
        "stats": {"notes": notes},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest
