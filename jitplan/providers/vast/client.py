"""Translation to and from the ``vastai`` SDK: our pydantic models in, our models and errors out.

The only module that imports ``vastai`` (lazily, inside :func:`_sdk_class`). Nothing here waits, retries
a create or decides anything; that is ``instance.py`` and ``provision.py``.

    client = VastClient.from_env()           # key from VAST_API_KEY or the vastai key file; VAST_URL honoured
    offers = client.search(OfferQuery(gpu_names=["RTX 3060"], num_gpus=2))
    iid = client.create(CreateSpec(offer_id=offers[0].id, image="pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime",
                                   disk_gb=60, label="jitplan-8f3c2a-1"))
    client.show(iid).state                   # "pending" | "running" | "failed" | "stopped" | "gone"
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import SecretStr

from jitplan.errors import UsageError
from jitplan.providers import (
    AuthError,
    CreateFailed,
    CreateSpec,
    CreateTimedOut,
    Instance,
    Offer,
    OfferQuery,
    OfferUnavailable,
    ProviderError,
    RateLimited,
    Transient,
)
from jitplan.providers.vast.rows import build_search, read_state, to_instance, to_offer  # noqa: F401 - re-exported
from jitplan.secrets import redact, register_secret, vast_api_key

DEFAULT_URL = "https://console.vast.ai"
DEFAULT_TIMEOUT_S = 30.0

def _sdk_class() -> Any:
    try:
        from vastai import VastAI
    except ImportError as e:  # pragma: no cover - depends on the install
        raise UsageError(
            "the Vast.ai provider needs the vastai SDK, which is not installed",
            hint='pip install "jitplan[vast]"',
        ) from e
    return VastAI


class VastClient:
    """A thin typed wrapper around ``vastai.VastAI``. Two SDK objects: reads may retry, creates never do."""

    def __init__(self, api_key: SecretStr, server_url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S):
        register_secret(api_key)
        self.server_url = (server_url or os.environ.get("VAST_URL") or DEFAULT_URL).rstrip("/")
        sdk = _sdk_class()
        key = api_key.get_secret_value()
        self._sdk = sdk(api_key=key, server_url=self.server_url, retry=3, quiet=True, raw=True)
        # The SDK resends PUT /asks after a read timeout (vastai 1.9.1, VastClient._request): that can rent
        # two instances. Creates go through a client with a single attempt; reconciliation is ours.
        self._sdk_once = sdk(api_key=key, server_url=self.server_url, retry=1, quiet=True, raw=True)
        for c in (self._sdk, self._sdk_once):
            c.client.timeout = timeout_s

    @classmethod
    def from_env(cls, server_url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> VastClient:
        key = vast_api_key()
        if key is None:
            raise AuthError(
                "no Vast.ai API key found",
                hint="set VAST_API_KEY, or run `vastai set api-key KEY` (~/.config/vastai/vast_api_key)",
            )
        return cls(key, server_url=server_url, timeout_s=timeout_s)

    # ------------------------------------------------------------------ errors
    def _error(self, e: Exception, what: str) -> ProviderError | AuthError:
        """One message per failure: what we tried, the HTTP status and the first meaningful line (no HTML)."""
        import requests

        if isinstance(e, requests.HTTPError) and e.response is not None:
            status = e.response.status_code
            err = str(_error_body(e).get("error") or "")
            if err == "auth_error" or status in (401, 403):
                return AuthError(f"Vast.ai refused the API key (HTTP {status}: {error_text(e)})",
                                 hint="check VAST_API_KEY or ~/.config/vastai/vast_api_key")
            if status == 429:
                return RateLimited(f"Vast.ai rate limit while trying to {what} (HTTP 429)")
            kind = Transient if status >= 500 else ProviderError
            return kind(f"Vast.ai could not {what}: HTTP {status} {error_text(e)}".strip())
        if isinstance(e, (requests.ConnectionError, requests.Timeout)):
            return Transient(f"Vast.ai could not {what}: no answer ({type(e).__name__})")
        if isinstance(e, requests.RequestException):
            return ProviderError(f"Vast.ai could not {what}: {type(e).__name__}: {redact(str(e))[:200]}")
        raise e

    # ------------------------------------------------------------------ calls
    def search(self, query: OfferQuery, disk_gb: float | None = None) -> list[Offer]:
        """Offers matching ``query`` (cheapest first as Vast sorts them); ``disk_gb`` prices the storage."""
        import requests

        try:
            rows = self._sdk.search_offers(
                query=build_search(query, disk_gb),
                type="bid" if query.interruptible else "on-demand",
                order="dph_total",
                limit=query.limit,
                storage=float(disk_gb or query.min_disk_gb),
            )
        except requests.RequestException as e:
            raise self._error(e, "search offers") from None
        return [to_offer(r) for r in rows or []]

    def create(self, spec: CreateSpec) -> int:
        """``PUT /asks/{offer}/`` once. Returns the new instance id.

        Raises OfferUnavailable (404/410 no_such_ask: nothing created), CreateFailed (``new_contract``
        set when Vast created an instance anyway), CreateTimedOut (no answer: reconcile by label).
        """
        import requests

        try:
            out = self._sdk_once.create_instance(
                id=spec.offer_id, image=spec.image, disk=spec.disk_gb, env=dict(spec.env) or None,
                price=spec.bid, label=spec.label, onstart_cmd=spec.onstart or None, ssh=True, direct=True,
                cancel_unavail=True,
            )
        except (requests.Timeout, requests.ConnectionError) as e:
            raise CreateTimedOut(
                f"no answer to the create of offer {spec.offer_id} ({type(e).__name__}); "
                f"it may exist as label {spec.label}"
            ) from None
        except requests.HTTPError as e:
            r = e.response
            body = _error_body(e)
            status = r.status_code if r is not None else None
            text = error_text(e)
            contract = body.get("new_contract")
            if contract:
                raise CreateFailed(
                    f"create of offer {spec.offer_id} failed (HTTP {status}: {text}) but made instance {contract}",
                    new_contract=int(contract), status=status,
                ) from None
            if status in (404, 410) and "no_such_ask" in f"{body.get('error')} {text}":
                raise OfferUnavailable(f"offer {spec.offer_id} is no longer available (HTTP {status})") from None
            err = self._error(e, f"create an instance from offer {spec.offer_id}")
            if isinstance(err, AuthError):
                raise err from None
            raise CreateFailed(err.message, status=status) from None
        if not isinstance(out, dict) or not out.get("new_contract"):
            raise CreateFailed(f"create of offer {spec.offer_id} answered without an instance id: {out!r:.200}")
        if out.get("success") is False:  # some endpoints answer 200 with success:false (vast.md §3.14)
            raise CreateFailed(
                f"create of offer {spec.offer_id} reported failure but made instance {out['new_contract']}",
                new_contract=int(out["new_contract"]),
            )
        return int(out["new_contract"])

    def show(self, instance_id: int) -> Instance:
        """One instance; ``state == "gone"`` when Vast no longer knows it."""
        import requests

        try:
            row = self._sdk.show_instance(id=instance_id)
        except requests.RequestException as e:
            raise self._error(e, f"read instance {instance_id}") from None
        if not row:
            return Instance(id=instance_id, state="gone")
        return to_instance(row)

    def list(self, label: str | None = None) -> list[Instance]:
        """All instances of the account (v1 list, paginated), or those with exactly ``label``."""
        import requests
        from vastai.api.instances import show_instances

        filters = {"label": {"eq": label}} if label is not None else {}
        try:
            rows = show_instances(self._sdk.client, select_filters=filters)
        except requests.RequestException as e:
            raise self._error(e, "list instances") from None
        return [to_instance(r) for r in rows]

    def destroy(self, instance_id: int) -> None:
        """``DELETE /instances/{id}/``; an instance that is already gone counts as destroyed."""
        import requests

        try:
            out = self._sdk.destroy_instance(id=instance_id)
        except requests.HTTPError as e:
            if _error_body(e).get("error") in ("no_such_instance", "not_found"):
                return
            raise self._error(e, f"destroy instance {instance_id}") from None
        except requests.RequestException as e:
            raise self._error(e, f"destroy instance {instance_id}") from None
        if isinstance(out, dict) and out.get("success") is False:
            raise ProviderError(f"Vast.ai did not destroy instance {instance_id}: {redact(str(out.get('msg')))}")

    def attach_ssh(self, instance_id: int, public_key: str) -> None:
        import requests

        try:
            self._sdk.attach_ssh(instance_id=instance_id, ssh_key=public_key.strip())
        except requests.RequestException as e:
            raise self._error(e, f"attach the SSH key to instance {instance_id}") from None

    def logs(self, instance_id: int, tail: int = 50) -> str:
        """The container log tail (redacted); empty when it cannot be fetched."""
        import requests

        try:
            text = self._sdk.logs(instance_id=instance_id, tail=str(tail))
        except (requests.RequestException, ValueError, KeyError):
            return ""
        return redact(text if isinstance(text, str) else str(text))


def _error_body(e: Exception) -> dict:
    """The JSON object an HTTP error response carries: ``{"msg": first line}`` when it is not a JSON object
    (an nginx HTML page becomes its title), ``{}`` when there is no response."""
    r = getattr(e, "response", None)
    if r is None:
        return {}
    try:
        body = r.json()
    except ValueError:
        return {"msg": first_line(r.text or "") or r.reason or ""}
    return body if isinstance(body, dict) else {"msg": first_line(str(body))}


def first_line(text: str, limit: int = 200) -> str:
    """The first meaningful line of a response body: an HTML page's <title>, else its first non-empty text.

        >>> first_line("<html><head><title>502 Bad Gateway</title></head><body><h1>502</h1></body></html>")
        '502 Bad Gateway'
    """
    if "<" in text and ">" in text:
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.S | re.I)
        text = title.group(1) if title else re.sub(r"<[^>]+>", "\n", text)
    for line in text.splitlines():
        line = " ".join(line.split())
        if line:
            return redact(line[:limit])
    return ""


def error_text(e: Exception) -> str:
    """``error`` and ``msg`` of an HTTP error, one line, without repeating the status the caller prints."""
    body = _error_body(e)
    err, msg = str(body.get("error") or ""), str(body.get("msg") or body.get("detail") or "")
    text = f"{err}: {msg}" if err and msg and err not in msg else (msg or err)
    r = getattr(e, "response", None)
    if not text:
        text = r.reason if r is not None and r.reason else ""
    text = " ".join(text.split())
    if r is not None and text.startswith(f"{r.status_code} "):  # "502 Bad Gateway" after "HTTP 502"
        text = text[len(str(r.status_code)) + 1:]
    return redact(text)
