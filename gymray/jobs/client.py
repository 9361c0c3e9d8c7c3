"""The Ray job API: finding it, authenticating, and what the cluster can give.

gymray may run anywhere that reaches the job API: a laptop (job.address or
RAY_ADDRESS = http://head:8265), a notebook connected with ``ray.init(address=...)``,
or inside a Ray Job on the same cluster (``ray job submit -- python -m gymray.run ...``).
"""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path

from gymray.config import JobSettings
from gymray.errors import AuthError, JobError, ResourceError, UnreachableError


def auth_token() -> str | None:
    """The Ray auth token, from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token.

    Sent explicitly because Ray 2.56's client only sends one when RAY_AUTH_MODE=token is
    set in the client's environment, and a 401 is a poor way to learn that.
    """
    if token := os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return token
    if path := os.environ.get("RAY_AUTH_TOKEN_PATH"):
        try:
            return Path(path).expanduser().read_text().strip() or None
        except OSError as e:
            raise AuthError(
                f"RAY_AUTH_TOKEN_PATH={path} cannot be read ({e.strerror}): point it at "
                "the cluster's token file or set RAY_AUTH_TOKEN"
            ) from None
    default = Path.home() / ".ray" / "auth_token"
    try:
        return default.read_text().strip() or None
    except OSError:
        return None


_ENV_LOCK = threading.Lock()


@contextmanager
def _address_env(address: str | None):
    # Ray's client lets RAY_API_SERVER_ADDRESS / RAY_ADDRESS win over an address passed
    # in; an explicit job.address must win, so hide them while the client is built.
    if not address:
        yield
        return
    with _ENV_LOCK:
        saved = {
            k: os.environ.pop(k)
            for k in ("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS")
            if k in os.environ
        }
        try:
            yield
        finally:
            os.environ.update(saved)


def _describe_address(address: str | None) -> str:
    return (
        address
        or os.environ.get("RAY_API_SERVER_ADDRESS")
        or os.environ.get("RAY_ADDRESS")
        or "the local Ray cluster"
    )


def _auth_exc() -> tuple[type[BaseException], ...]:
    try:
        from ray.exceptions import AuthenticationError
    except ImportError:  # pragma: no cover - older Ray
        return ()
    return (AuthenticationError,)


def _auth_error(exc: BaseException, where: str) -> AuthError:
    text = str(exc)
    if "401" in text or "Missing" in text or "no authentication token" in text:
        return AuthError(
            f"the Ray job API at {where} requires a token and none was sent: set "
            "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH, or copy the cluster's token to "
            "~/.ray/auth_token"
        )
    return AuthError(
        f"the Ray job API at {where} rejected the auth token (wrong token): check "
        "RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH / ~/.ray/auth_token against the cluster's"
    )


def connect(address: str | None = None):
    """A JobSubmissionClient for `address` (see JobSettings.address), with the auth token.

    Raises AuthError / UnreachableError with one-line messages.
    """
    from ray.job_submission import JobSubmissionClient

    where = _describe_address(address)
    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        with _address_env(address):
            return JobSubmissionClient(address, headers=headers)
    except _auth_exc() as e:
        raise _auth_error(e, where) from None
    except (ConnectionError, OSError) as e:
        raise UnreachableError(
            f"cannot reach the Ray job API at {where} ({e}): check job.address / "
            "RAY_ADDRESS (e.g. http://head:8265) and that the dashboard is running"
        ) from None
    except Exception as e:  # Ray raises bare RuntimeError/ValueError for bad addresses.
        raise UnreachableError(
            f"cannot reach the Ray job API at {where}: {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
            "Set job.address or RAY_ADDRESS (e.g. http://head:8265)"
        ) from None


def _call(fn, *args, where: str = "the Ray job API", **kwargs):
    try:
        return fn(*args, **kwargs)
    except _auth_exc() as e:
        raise _auth_error(e, where) from None
    except ConnectionError as e:
        raise UnreachableError(f"lost the Ray job API at {where}: {e}") from None


def _job_info(client, submission_id: str):
    """JobInfo, or None when no job has this id."""
    try:
        return _call(client.get_job_info, submission_id)
    except RuntimeError as e:
        if "404" in str(e) or "does not exist" in str(e):
            return None
        raise


def parent_submission_id() -> str | None:
    """The submission id of the Ray Job this process runs in, if any.

    Ray 2.56 sets no dedicated variable; the job supervisor passes the job's metadata,
    which holds `job_submission_id`, in RAY_JOB_CONFIG_JSON_ENV_VAR.
    """
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        return json.loads(raw).get("metadata", {}).get("job_submission_id")
    except (ValueError, AttributeError):
        return None


def cluster_totals(client) -> dict[str, float] | None:
    """Total resources of the cluster's alive nodes, or None when they cannot be read.

    Asked of the job API itself: the Ray this process may be connected to (a
    notebook's, a test session's) is not necessarily the cluster the job goes to."""
    try:
        r = _call(client._do_request, "GET", "/nodes?view=summary")
        if r.status_code != 200:
            return None
        totals: dict[str, float] = {}
        for node in r.json()["data"]["summary"]:
            raylet = node.get("raylet", {})
            if raylet.get("state", "ALIVE") != "ALIVE":
                continue
            for k, v in raylet.get("resourcesTotal", {}).items():
                totals[k] = totals.get(k, 0.0) + float(v)
        return totals or None
    except JobError:
        raise
    except Exception:
        return None


def parent_resources(client, parent: str) -> dict[str, float]:
    """Entrypoint resources held by the running job `parent` ({} when unknown).

    The job API does not return them; the job's supervisor actor
    (`_ray_internal_job_actor_<id>`) is created with exactly those resources, and the
    state API lists them.
    """
    from urllib.parse import urlencode

    query = urlencode(
        {
            "filter_keys": "name",
            "filter_predicates": "=",
            "filter_values": f"_ray_internal_job_actor_{parent}",
            "detail": "1",
        }
    )
    try:
        r = _call(client._do_request, "GET", f"/api/v0/actors?{query}")
        rows = r.json()["data"]["result"]["result"] if r.status_code == 200 else []
    except JobError:
        raise
    except Exception:
        return {}
    for row in rows:
        if row.get("state") == "ALIVE":
            return {k: float(v) for k, v in (row.get("required_resources") or {}).items()}
    return {}


def check_resources(client, job: JobSettings, parent: str | None) -> list[str]:
    """Refuse entrypoint resources the cluster can never give; return warnings."""
    totals = cluster_totals(client)
    if totals is None:
        return ["cluster resources could not be read: entrypoint resources not checked"]
    held = parent_resources(client, parent) if parent else {}
    asks = {
        "CPU": ("job.entrypoint_num_cpus", job.entrypoint_num_cpus),
        "GPU": ("job.entrypoint_num_gpus", job.entrypoint_num_gpus),
        "memory": ("job.entrypoint_memory", job.entrypoint_memory),
        **{k: (f"job.entrypoint_resources.{k}", v) for k, v in job.entrypoint_resources.items()},
    }
    for res, (name, ask) in asks.items():
        if not ask:
            continue
        # The dashboard's node summary spells custom resources in camelCase.
        camel = res.split("_")[0] + "".join(p.title() for p in res.split("_")[1:])
        total = totals.get(res, totals.get(camel, 0.0))
        parent_held = held.get(res, 0.0)
        if ask + parent_held > total:
            because = (
                f" plus the {parent_held:g} held by the parent job {parent} (which waits for it)"
                if parent_held
                else ""
            )
            raise ResourceError(
                f"{name}={ask:g}{because} exceeds the cluster's total {res} of {total:g}: "
                "the job would stay PENDING forever. Lower it"
                + (
                    " or submit the parent job with fewer entrypoint resources"
                    if parent_held
                    else ""
                )
                + " (or set job.check_resources=false on an autoscaling cluster)"
            )
    return []
