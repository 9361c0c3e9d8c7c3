"""The Ray job API: finding it, authenticating, and what the cluster can give.

gymray may run anywhere that reaches the job API: a laptop (job.address or
RAY_ADDRESS = http://head:8265), a notebook connected with ``ray.init(address=...)``,
or inside a Ray Job on the same cluster (``ray job submit -- python -m gymray.run ...``).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from urllib.parse import urlencode

import ray
from ray.exceptions import AuthenticationError

from gymray.cluster import auth_token
from gymray.config import JobSettings
from gymray.errors import AuthError, JobError, ResourceError, UnreachableError

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


def job_api(address: str | None) -> str | None:
    """The job API to use, found like ``ray job`` finds it, and failing fast: ``address``
    (a dashboard URL; ``host:port`` without a scheme is tried as one), else
    RAY_API_SERVER_ADDRESS / RAY_ADDRESS (left to Ray, after a reachability check),
    else the dashboard of the cluster this process is connected to (a notebook after
    ``ray.init(address=...)``), else of the cluster ``ray start`` runs on this machine.
    None means: leave it to Ray's client and the environment."""
    if address:
        if "://" in address:
            _tcp(address.split("://", 1)[1], address)
            return address
        if _answers_http(address):
            return f"http://{address}"
        _tcp(address, address)  # a GCS address: Ray's client asks it for the dashboard
        return address
    env = os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if env:
        _tcp(env.split("://", 1)[-1], env)
        return None
    if ray.is_initialized():
        url = ray._private.worker.global_worker.node.address_info.get("webui_url")
        if url:
            return url if "://" in url else f"http://{url}"
    local = _local_gcs()
    if local:
        return local
    raise UnreachableError(
        "no Ray job API to talk to: pass --address / job.address (e.g. http://head:8265) "
        "or set RAY_ADDRESS; no Ray cluster runs on this machine"
    )


def _answers_http(hostport: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{hostport}/api/version", timeout=3):
            return True
    except urllib.error.HTTPError:
        return True  # an HTTP server (auth may be wanted): the dashboard
    except (OSError, ValueError, http.client.HTTPException):  # (a GCS port answers in binary)
        return False


def _tcp(hostport: str, shown: str, timeout: float = 5.0) -> None:
    host, _, port = hostport.split("/", 1)[0].rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 80)), timeout=timeout):
            return
    except (OSError, ValueError) as e:
        raise UnreachableError(
            f"cannot reach the Ray job API at {shown} ({e}): check --address / job.address / "
            "RAY_ADDRESS (e.g. http://head:8265) and that the head's dashboard is running"
        ) from None


def _local_gcs() -> str | None:
    try:
        found = ray._private.services.get_ray_address_from_environment(None, None)
    except Exception:  # none, or several: the caller says what to do
        return None
    if not found:
        return None
    try:
        _tcp(found, found, timeout=2.0)
    except UnreachableError:
        return None
    return found


def connect(address: str | None = None):
    """A JobSubmissionClient for `address` (see JobSettings.address and ``job_api``),
    with the auth token. Raises AuthError / UnreachableError with one-line messages."""
    address = job_api(address)
    where = _describe_address(address)
    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    # imported here: the job client (aiohttp, an SSL context) cost every CLI driver
    # 0.09-0.11 CPU-s of imports, ~8% of a --prepare-only run's driver, which never submits
    from ray.job_submission import JobSubmissionClient

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
