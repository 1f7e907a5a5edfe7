"""Talking to the service: the HTTP client, its defaults and retry policy, and the token store."""

from synthbio_pipeline.client.http import SynthesizeClient, check_base_url, is_loopback, resolve_base_url

__all__ = ["SynthesizeClient", "check_base_url", "is_loopback", "resolve_base_url"]
