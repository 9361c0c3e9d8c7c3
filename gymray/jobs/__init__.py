"""Ray Jobs for NeMo RL training: the job API client, job handles, submitting."""

from gymray.jobs.client import auth_token, connect
from gymray.jobs.handle import JobHandle, Redactor, attach
from gymray.jobs.submit import submit_training

__all__ = ["JobHandle", "Redactor", "attach", "auth_token", "connect", "submit_training"]
