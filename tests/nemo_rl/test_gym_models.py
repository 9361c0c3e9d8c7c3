"""The fields gymray says a Gym agent's rows need, read from a fake Gym tree written in
the shapes of real Gym code (config chains, _inherit_from, base models in nemo_gym/,
servers served from ``__main__``), so a row Gym would refuse with 422 is caught before
a launch and a field with a default is never demanded."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gymray.nemo_rl.gym_models import required_fields

IFBENCH = ["id", "instruction_id_list", "kwargs", "prompt", "responses_create_params"]

FILES = {
    "nemo_gym/__init__.py": "",
    "nemo_gym/base_resources_server.py": """
        from pydantic import BaseModel

        from nemo_gym.openai_utils import NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
        from nemo_gym.server_utils import SimpleServer


        class BaseRunRequest(BaseModel):
            responses_create_params: NeMoGymResponseCreateParamsNonStreaming


        class BaseVerifyRequest(BaseRunRequest):
            response: NeMoGymResponse


        class BaseSeedSessionRequest(BaseModel):
            pass


        class SimpleResourcesServer(SimpleServer):
            async def seed_session(self, body: BaseSeedSessionRequest):
                return {}

            async def verify(self, body: BaseVerifyRequest):
                return {"reward": 1.0}
    """,
    "nemo_gym/base_responses_api_agent.py": """
        from nemo_gym.server_utils import SimpleServer


        class SimpleResponsesAPIAgent(SimpleServer):
            pass
    """,
    "responses_api_agents/simple_agent/app.py": """
        from fastapi import Request
        from pydantic import ConfigDict

        from nemo_gym.base_resources_server import BaseRunRequest
        from nemo_gym.base_responses_api_agent import SimpleResponsesAPIAgent


        class SimpleAgentRunRequest(BaseRunRequest):
            model_config = ConfigDict(extra="allow")


        class SimpleAgent(SimpleResponsesAPIAgent):
            async def run(self, request: Request, body: SimpleAgentRunRequest):
                return {}


        if __name__ == "__main__":
            SimpleAgent.run_webserver()
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


        if __name__ == "__main__":
            IFBenchResourcesServer.run_webserver()
    """,
    # The server instance lives one config below the agent's: benchmark -> ifbench -> server.
    "resources_servers/ifbench/configs/server.yaml": """
        ifbench:
          resources_servers:
            ifbench:
              entrypoint: app.py
    """,
    "resources_servers/ifbench/configs/ifbench.yaml": """
        config_paths:
          - resources_servers/ifbench/configs/server.yaml
        ifbench_simple_agent:
          responses_api_agents:
            simple_agent:
              entrypoint: app.py
              resources_server: {type: resources_servers, name: ifbench}
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
    # A server whose model covers what pydantic 2 calls required and what it does not, a
    # seed_session model, and an agent of its own whose run model sits in a sibling module.
    "resources_servers/qa/app.py": """
        from typing import Annotated, ClassVar, List, Optional

        from pydantic import AliasChoices, Field

        from nemo_gym.base_resources_server import (
            BaseSeedSessionRequest,
            BaseVerifyRequest,
            SimpleResourcesServer,
        )


        class QASeedSessionRequest(BaseSeedSessionRequest):
            session_id: str


        class QAVerifyRequest(BaseVerifyRequest):
            question: str
            context: Optional[str]
            expected_answer: str = Field(..., description="no default: required")
            task: str = Field(validation_alias=AliasChoices("task_name", "task"))
            weight: float = Field(default=1.0)
            tags: List[str] = Field(default_factory=list)
            judge: Annotated[str, Field(default="exact")]
            note: Optional[str] = None
            LABEL: ClassVar[str] = "[Correct]"
            _cache: dict = {}


        class QAResourcesServer(SimpleResourcesServer):
            async def seed_session(self, body: QASeedSessionRequest):
                return {}

            async def verify(self, body: QAVerifyRequest):
                return {"reward": 1.0}


        if __name__ == "__main__":
            QAResourcesServer.run_webserver()
    """,
    "responses_api_agents/qa_agent/__init__.py": "",
    "responses_api_agents/qa_agent/schemas.py": """
        from nemo_gym.base_resources_server import BaseRunRequest


        class QAAgentRunRequest(BaseRunRequest):
            rubric_id: str
    """,
    "responses_api_agents/qa_agent/app.py": """
        from nemo_gym.base_responses_api_agent import SimpleResponsesAPIAgent

        from .schemas import QAAgentRunRequest


        class QAAgent(SimpleResponsesAPIAgent):
            async def run(self, body: QAAgentRunRequest):
                return {}


        if __name__ == "__main__":
            QAAgent.run_webserver()
    """,
    "resources_servers/qa/configs/qa.yaml": """
        qa:
          resources_servers:
            qa: {entrypoint: app.py}
        qa_agent:
          responses_api_agents:
            qa_agent:
              resources_server: {type: resources_servers, name: qa}
        qa_launch_agent:
          responses_api_agents:
            qa_agent:
              resources_server:
                type: resources_servers
                name: ???
        qa_orphan_agent:
          responses_api_agents:
            simple_agent:
              resources_server: {type: resources_servers, name: no_such_server}
        qa_missing_app_agent:
          responses_api_agents:
            gone_agent:
              entrypoint: gone.py
    """,
    # A verify model that migrates legacy rows before validation: what it requires of a
    # row cannot be read from its fields.
    "resources_servers/migrate/app.py": """
        from pydantic import model_validator

        from nemo_gym.base_resources_server import BaseVerifyRequest, SimpleResourcesServer


        class MigrateVerifyRequest(BaseVerifyRequest):
            id: int

            @model_validator(mode="before")
            @classmethod
            def _from_legacy_metadata(cls, data):
                return data


        class MigrateResourcesServer(SimpleResourcesServer):
            async def verify(self, body: MigrateVerifyRequest):
                return {"reward": 1.0}


        if __name__ == "__main__":
            MigrateResourcesServer.run_webserver()
    """,
    "environments/migrate/config.yaml": """
        migrate:
          resources_servers:
            migrate: {entrypoint: app.py}
        migrate_simple_agent:
          responses_api_agents:
            simple_agent:
              resources_server: {type: resources_servers, name: migrate}
    """,
}


@pytest.fixture
def gym(tmp_path: Path) -> Path:
    for rel, text in FILES.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return tmp_path


def test_ifbench_fields_through_inherit_and_chained_config_paths(gym):
    found = required_fields(gym, ["ifbench_simple_agent", "ifbench_benchmark_simple_agent"])
    for agent in found.values():
        assert agent == {
            "model": "ifbench.verify: IFBenchVerifyRequest",
            "required": IFBENCH,  # grading_mode has a default; response is Gym's to add
            "unchecked": None,
        }


def test_defaults_optional_aliases_and_every_endpoint_model(gym):
    qa = required_fields(gym, ["qa_agent"])["qa_agent"]
    # Optional[str] without a default is required in pydantic 2; Field(...) is no default;
    # an aliased field is looked for under its alias; seed_session and run models add theirs.
    assert qa["required"] == [
        "context",
        "expected_answer",
        "question",
        "responses_create_params",
        "rubric_id",
        "session_id",
        "task_name",
    ]
    assert qa["model"] == (
        "qa.verify: QAVerifyRequest + qa.seed_session: QASeedSessionRequest"
        " + qa_agent.run: QAAgentRunRequest"
    )
    assert qa["unchecked"] is None


def test_server_named_at_launch_checks_the_agent_model_only(gym):
    launch = required_fields(gym, ["qa_launch_agent"])["qa_launch_agent"]
    assert launch["required"] == ["responses_create_params", "rubric_id"]
    assert launch["model"] == "qa_agent.run: QAAgentRunRequest"


def test_a_migrating_before_validator_leaves_the_agent_unchecked(gym):
    migrate = required_fields(gym, ["migrate_simple_agent"])["migrate_simple_agent"]
    assert migrate["required"] == []
    assert "_from_legacy_metadata (model_validator mode=before)" in migrate["unchecked"]
    assert migrate["model"] == "migrate.verify: MigrateVerifyRequest"


def test_unresolvable_agents_say_why_instead_of_raising(gym):
    found = required_fields(gym, ["nobody", "qa_orphan_agent", "qa_missing_app_agent"])
    assert all(a["required"] == [] and a["model"] is None for a in found.values())
    assert "no Gym config declares it" in found["nobody"]["unchecked"]
    assert "no_such_server" in found["qa_orphan_agent"]["unchecked"]
    assert "responses_api_agents/gone_agent/gone.py" in found["qa_missing_app_agent"]["unchecked"]
    assert required_fields(gym / "absent", ["qa_agent"])["qa_agent"]["unchecked"]


def test_config_paths_limit_the_agents_to_those_the_run_starts(gym):
    found = required_fields(
        gym, ["ifbench_benchmark_simple_agent", "qa_agent"], ["benchmarks/ifbench/config.yaml"]
    )
    assert found["ifbench_benchmark_simple_agent"]["required"] == IFBENCH
    assert "config_paths do not declare it" in found["qa_agent"]["unchecked"]
    missing = required_fields(gym, ["qa_agent"], ["benchmarks/none.yaml"])["qa_agent"]
    assert "benchmarks/none.yaml" in missing["unchecked"]


def test_real_gym_checkout_ifbench():
    root = Path.home() / ".cache/nemo-rl-check/nemorl/3rdparty/Gym-workspace/Gym"
    if not (root / "nemo_gym").is_dir():
        pytest.skip(f"no NeMo Gym checkout at {root}")
    found = required_fields(root, ["ifbench_simple_agent"])["ifbench_simple_agent"]
    assert found["required"] == IFBENCH
    assert found["unchecked"] is None
