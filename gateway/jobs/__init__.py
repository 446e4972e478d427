"""Durable transcription jobs for long files (``/v1/jobs``).

- ``models``: the ``Job`` record and its JSON, errors, results to and from JSON;
- ``audio``: pending audio kept compressed, one FLAC per chunk;
- ``store``: the store interface and the SQL both databases share (claims, leases, the webhook outbox);
  ``sqlite`` (embedded default, ``GATEWAY_JOBS_DIR``) and ``postgres`` (``GATEWAY_JOBS_DATABASE_URL``,
  any number of replicas);
- ``runner``: workers that claim jobs and send each chunk through the gateway's pipeline;
- ``webhooks``: callback URL checks, Standard Webhooks signing, the outbox sender;
- ``app``: ``Jobs``, what one app starts and what its routes call.
"""

from gateway.jobs.app import Jobs
from gateway.jobs.models import (Job, JobGone, JobNotFinished, JobNotFound, JobQuotaExceeded, JobsUnavailable,
                                 result_from_dict, result_to_dict)
from gateway.jobs.runner import JobRunner
from gateway.jobs.store import JobStore, Limits

__all__ = ["Job", "JobGone", "JobNotFinished", "JobNotFound", "JobQuotaExceeded", "JobRunner", "JobStore", "Jobs",
           "JobsUnavailable", "Limits", "result_from_dict", "result_to_dict"]
