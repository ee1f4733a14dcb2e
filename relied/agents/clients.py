"""Model clients chosen by one spec string, and the guard every model call goes through.

* ``offline``: :class:`OfflinePlannerClient` (deterministic, not an LLM);
* ``ollama:<model>``: autogen-ext's Ollama client (temperature 0, fixed seed, 16k context;
  ``model_info`` given for any model name) against ``--ollama-host`` / ``$OLLAMA_HOST``;
* ``auto``: the first model Ollama lists, or the offline planner when Ollama does not answer.

:class:`GuardedClient` counts calls, applies a timeout, and validates structured replies with
Pydantic: a reply that does not parse is fed back to the model with the error, at most
``retries`` times, then :class:`ModelError` (AutoGen itself validates once without retry).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

import httpx
from autogen_core import CancellationToken
from autogen_core.models import (
    ChatCompletionClient,
    CreateResult,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    UserMessage,
)
from pydantic import BaseModel, ValidationError

from relied.agents.offline import OFFLINE_LABEL, OfflinePlannerClient
from relied.agents.view import CityView
from relied.env.network import CityNetwork

DEFAULT_HOST = "http://127.0.0.1:11434"
NUM_CTX = 16_384  # Ollama's default context (2-4k tokens) truncates prompts of 50 agents
GENERIC_INFO = ModelInfo(vision=False, function_calling=True, json_output=True,
                         family=ModelFamily.UNKNOWN, structured_output=True)


class ModelError(RuntimeError):
    """A model that cannot be reached or keeps answering invalid output; message says why."""


def ollama_host(host: str | None = None) -> str:
    text = host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
    return text if "://" in text else f"http://{text}"


def _down(host: str, exc: Exception) -> ModelError:
    return ModelError(f"Ollama is not reachable at {host} ({type(exc).__name__}); start it with "
                      "'ollama serve' (or set --ollama-host / OLLAMA_HOST), or use --model offline")


def list_ollama_models(host: str | None = None, timeout_s: float = 3.0) -> list[str]:
    """Model names served by Ollama at ``host``; :class:`ModelError` when it does not answer."""
    import ollama

    url = ollama_host(host)
    try:
        reply = ollama.Client(host=url, timeout=timeout_s).list()
    except (httpx.HTTPError, ConnectionError, OSError, ollama.ResponseError) as exc:
        raise _down(url, exc) from exc
    return sorted(m.model for m in reply.models if m.model)


def ollama_model_details(name: str, host: str | None = None, timeout_s: float = 3.0) -> dict:
    """Family, size, quantisation and capabilities of a model (``/api/show``)."""
    import ollama

    url = ollama_host(host)
    try:
        reply = ollama.Client(host=url, timeout=timeout_s).show(name)
    except (httpx.HTTPError, ConnectionError, OSError, ollama.ResponseError) as exc:
        raise ModelError(f"Ollama at {url} could not describe '{name}' ({type(exc).__name__})"
                         ) from exc
    d = reply.details
    return {"family": d.family if d else None, "parameter_size": d.parameter_size if d else None,
            "quantization": d.quantization_level if d else None,
            "capabilities": list(reply.capabilities or [])}


def check_ollama_model(spec: str, host: str | None = None) -> None:
    """:class:`ModelError` unless Ollama answers and has the model of ``spec`` pulled."""
    name = spec.split(":", 1)[1].strip()
    models = list_ollama_models(host)
    if name not in models and f"{name}:latest" not in models:
        raise ModelError(f"model '{name}' is not pulled in Ollama at {ollama_host(host)}; run "
                         f"'ollama pull {name}' (available: {', '.join(models[:5]) or 'none'})")


def check_spec(spec: str) -> str:
    """``spec`` itself when it is ``offline`` or ``ollama:<model>``, else :class:`ModelError`."""
    if spec == "offline" or (spec.startswith("ollama:") and spec[len("ollama:"):].strip()):
        return spec
    raise ModelError(f"unknown model spec '{spec}'; use 'offline', 'auto' or "
                     "'ollama:<model>' (e.g. ollama:qwen2.5:7b)")


def resolve_spec(spec: str, host: str | None = None) -> str:
    """``auto`` -> ``ollama:<first model>`` if Ollama answers with a model, else ``offline``."""
    if spec != "auto":
        return check_spec(spec)
    try:
        models = list_ollama_models(host)
    except ModelError:
        return "offline"
    return f"ollama:{models[0]}" if models else "offline"


def describe(spec: str) -> str:
    """Human label of a spec: the offline planner is never called an LLM."""
    return OFFLINE_LABEL if spec == "offline" else f"LLM {spec.split(':', 1)[-1]} via Ollama"


def make_client(spec: str, net: CityNetwork, view: CityView | None = None,
                host: str | None = None, seed: int = 0, timeout_s: float = 120.0,
                retries: int = 2) -> GuardedClient:
    """A guarded client for ``spec`` (``offline`` or ``ollama:<model>``)."""
    if check_spec(spec) == "offline":
        inner: ChatCompletionClient = OfflinePlannerClient(net, view)
    else:
        from autogen_ext.models.ollama import OllamaChatCompletionClient

        url = ollama_host(host)
        inner = OllamaChatCompletionClient(
            model=spec[len("ollama:"):].strip(), host=url, model_info=GENERIC_INFO,
            options={"temperature": 0.0, "seed": seed, "num_ctx": NUM_CTX})
    return GuardedClient(inner, spec, host=ollama_host(host), timeout_s=timeout_s,
                         retries=retries)


class GuardedClient(ChatCompletionClient):
    """Wraps a client: call counting, timeout, bounded structured-output retries."""

    def __init__(self, inner: ChatCompletionClient, spec: str, host: str = DEFAULT_HOST,
                 timeout_s: float = 120.0, retries: int = 2):
        self.inner, self.spec, self.host = inner, spec, host
        self.timeout_s, self.retries = timeout_s, retries
        self.calls = 0
        self.invalid_replies = 0
        self.error: ModelError | None = None

    def _fail(self, error: ModelError) -> ModelError:
        """Remember ``error``: AutoGen re-raises agent errors as text, the team re-raises this."""
        self.error = error
        return error

    async def _once(self, messages: Sequence[LLMMessage], **kw: Any) -> CreateResult:
        self.calls += 1
        try:
            return await asyncio.wait_for(self.inner.create(messages, **kw), self.timeout_s)
        except TimeoutError as exc:
            raise self._fail(ModelError(
                f"{self.spec} did not answer within {self.timeout_s:g} s; use a smaller model, "
                "raise --timeout, or use --model offline")) from exc
        except (httpx.ConnectError, ConnectionError) as exc:
            raise self._fail(_down(self.host, exc)) from exc
        except Exception as exc:
            if type(exc).__name__ == "ResponseError":
                name = self.spec.split(":", 1)[-1]
                raise self._fail(ModelError(
                    f"Ollama refused {self.spec}: {str(exc)[:120]}; pull the model with "
                    f"'ollama pull {name}' or pick one from 'relied models'")) from exc
            raise

    async def create(self, messages: Sequence[LLMMessage], *, tools: Sequence[Any] = (),
                     tool_choice: Any = "auto", json_output: bool | type[BaseModel] | None = None,
                     extra_create_args: Mapping[str, Any] = {},  # noqa: B006 (interface)
                     cancellation_token: CancellationToken | None = None) -> CreateResult:
        history = list(messages)
        kw = {"tools": tools, "json_output": json_output, "extra_create_args": extra_create_args,
              "cancellation_token": cancellation_token}
        if tool_choice != "auto":
            kw["tool_choice"] = tool_choice
        schema = json_output if isinstance(json_output, type) else None
        for attempt in range(self.retries + 1):
            result = await self._once(history, **kw)
            if schema is None or not isinstance(result.content, str):
                return result
            try:
                schema.model_validate_json(result.content)
                return result
            except ValidationError as exc:
                self.invalid_replies += 1
                error = exc.errors()[0]
                problem = f"{error['type']} at {'/'.join(map(str, error['loc']))}: {error['msg']}"
            if attempt < self.retries:
                history += [UserMessage(
                    content=f"Your reply was rejected: it is not valid JSON for the schema "
                    f"({problem[:200]}). Reply again with only the JSON object.",
                    source="validator")]
        raise self._fail(ModelError(
            f"{self.spec} returned no valid {schema.__name__} after {self.retries + 1} attempts "
            f"({problem[:160]}); try a larger model or --model offline"))

    def create_stream(self, messages: Sequence[LLMMessage], **kwargs: Any
                      ) -> AsyncGenerator[str | CreateResult, None]:
        async def gen() -> AsyncGenerator[str | CreateResult, None]:
            yield await self.create(messages, **kwargs)
        return gen()

    async def close(self) -> None:
        await self.inner.close()

    def actual_usage(self) -> RequestUsage:
        return self.inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self.inner.total_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Any] = ()) -> int:
        return self.inner.count_tokens(messages, tools=tools)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *,
                         tools: Sequence[Any] = ()) -> int:
        return self.inner.remaining_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> Any:
        return self.inner.model_info

    @property
    def model_info(self) -> ModelInfo:
        return self.inner.model_info
