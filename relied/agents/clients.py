"""Model clients chosen by one spec string, and the guard every model call goes through.

* ``offline``: :class:`OfflinePlannerClient` (deterministic, not an LLM);
* ``offline-fallible:<p>[:<kind>]``: the offline planner with injected herding errors in a
  fraction ``p`` of its group plans, for stress tests of the critic (not an LLM;
  :mod:`relied.agents.fallible`);
* ``ollama:<model>``: autogen-ext's Ollama client against ``--ollama-host`` / ``$OLLAMA_HOST``,
  temperature 0 and a fixed seed. What the model can do comes from Ollama itself
  (:func:`model_card`: ``/api/tags`` for the digest, ``/api/show`` for capabilities and context
  length): AutoGen's ``model_info`` says ``function_calling`` only for models with the ``tools``
  capability, and ``num_ctx`` is the model's context (capped at :data:`NUM_CTX_CAP`);
* ``auto``: the first model Ollama lists that can chat (``completion``), or the offline planner
  when Ollama does not answer.

:class:`GuardedClient` wraps every call: it measures the prompt before sending it (a prompt
that cannot fit the context is one clear error), runs at most ``$OLLAMA_NUM_PARALLEL``
(default 1) requests per server at a time and starts the timeout only when a request is sent
(time queued behind other requests does not count), retries transient failures (connection
dropped, HTTP 5xx) with backoff, keeps tool turns (``tools``, no ``format``) apart from the
structured answer (``format``, no ``tools``: Ollama suppresses tool calls under a schema), and
validates structured replies with Pydantic, showing the model its rejected reply and the error
at most ``retries`` times. Every failure becomes a one-line :class:`ModelError`; every call's
tokens and wall time are recorded in :attr:`GuardedClient.usage`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any, Literal

import httpx
from autogen_core import CancellationToken
from autogen_core.models import (
    AssistantMessage,
    ChatCompletionClient,
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    ModelFamily,
    ModelInfo,
    RequestUsage,
    UserMessage,
)
from pydantic import BaseModel, Field, ValidationError

from relied.agents.fallible import (
    FALLIBLE_VERSION,
    FallibleOfflineClient,
    fallible_label,
    parse_fallible,
)
from relied.agents.offline import OFFLINE_LABEL, OFFLINE_VERSION, OfflinePlannerClient
from relied.agents.prompt import estimate_tokens
from relied.agents.view import CityView
from relied.env.forecast import TrafficForecast
from relied.env.network import CityNetwork

DEFAULT_HOST = "http://127.0.0.1:11434"
NUM_CTX_CAP = 16_384  # num_ctx = min(model context, cap): a longer KV cache costs memory
FALLBACK_CTX = 4_096  # Ollama's default when /api/show does not say
PROMPT_BUDGET = 6_000  # largest planner prompt, in (estimated) tokens
COMPLETION_RESERVE = 1_024  # tokens kept free for the reply of a text answer


class ModelError(RuntimeError):
    """A model that cannot be reached or keeps answering invalid output; message says why."""


class ModelCard(BaseModel):
    """What a model is and can do: one row of ``relied models``, and part of the cache key."""

    spec: str
    digest: str = Field(description="content digest (Ollama) or the offline planner version")
    capabilities: list[str] = Field(default_factory=list)
    context_length: int | None = None
    family: str | None = None
    parameter_size: str | None = None
    quantization: str | None = None

    @property
    def tools(self) -> bool:
        return "tools" in self.capabilities

    @property
    def num_ctx(self) -> int:
        """The context requested per call (``num_ctx``): the model's, capped."""
        return min(self.context_length or FALLBACK_CTX, NUM_CTX_CAP)

    @property
    def prompt_budget(self) -> int:
        """Largest prompt a planner may send: :data:`PROMPT_BUDGET`, less on short contexts."""
        return min(PROMPT_BUDGET, self.num_ctx - COMPLETION_RESERVE)

    def model_info(self) -> ModelInfo:
        return ModelInfo(vision="vision" in self.capabilities, function_calling=self.tools,
                         json_output=True, structured_output=True, family=ModelFamily.UNKNOWN)


OFFLINE_CARD = ModelCard(spec="offline", digest=f"offline-{OFFLINE_VERSION}",
                         capabilities=["completion", "tools"], context_length=NUM_CTX_CAP,
                         family="offline planner (not an LLM)")


class CallUsage(BaseModel):
    """One model call: tokens as the server counted them and the wall time of the request."""

    kind: Literal["tools", "structured", "text"]
    prompt_tokens: int
    completion_tokens: int
    estimated_prompt_tokens: int
    wall_s: float


def usage_totals(usage: Sequence[CallUsage]) -> dict[str, float]:
    """Summed tokens and wall time of ``usage`` (the ``usage`` object of ``--json``)."""
    return {"calls": len(usage), "prompt_tokens": sum(u.prompt_tokens for u in usage),
            "completion_tokens": sum(u.completion_tokens for u in usage),
            "wall_s": round(sum(u.wall_s for u in usage), 3)}


def ollama_host(host: str | None = None) -> str:
    text = host or os.environ.get("OLLAMA_HOST") or DEFAULT_HOST
    return text if "://" in text else f"http://{text}"


def _down(host: str, exc: BaseException) -> ModelError:
    return ModelError(f"Ollama is not reachable at {host} ({type(exc).__name__}); start it with "
                      "'ollama serve' (or set --ollama-host / OLLAMA_HOST), or use --model offline")


def _not_json(host: str) -> ModelError:
    return ModelError(f"the server at {host} does not answer like Ollama (the reply is not "
                      "Ollama's JSON); check --ollama-host / OLLAMA_HOST points at 'ollama serve'")


def _ollama_call(host: str, method: str, *args: Any, timeout_s: float = 5.0) -> Any:
    """One synchronous request of the ``ollama`` client, its failures as :class:`ModelError`."""
    import ollama

    try:
        return getattr(ollama.Client(host=host, timeout=timeout_s), method)(*args)
    except ollama.ResponseError:
        raise
    except (httpx.HTTPError, ConnectionError, OSError) as exc:
        raise _down(host, exc) from exc
    except (ValueError, TypeError) as exc:  # JSONDecodeError, pydantic: not Ollama's reply
        raise _not_json(host) from exc


def list_ollama_models(host: str | None = None, timeout_s: float = 3.0) -> list[str]:
    """Model names served by Ollama at ``host``; :class:`ModelError` when it does not answer."""
    return sorted(_list(ollama_host(host), timeout_s))


def _list(url: str, timeout_s: float = 3.0) -> dict[str, str]:
    """``{name: digest}`` of ``/api/tags``."""
    import ollama

    try:
        reply = _ollama_call(url, "list", timeout_s=timeout_s)
    except ollama.ResponseError as exc:
        raise ModelError(f"Ollama at {url} could not list its models (HTTP {exc.status_code}: "
                         f"{str(exc.error)[:80]}); check the server's log") from exc
    return {m.model: m.digest or "" for m in reply.models if m.model}


def model_card(name: str, host: str | None = None, digests: Mapping[str, str] | None = None,
               timeout_s: float = 5.0) -> ModelCard:
    """Digest (``/api/tags``), capabilities, context length and details (``/api/show``) of an
    Ollama model; :class:`ModelError` when it is not pulled or cannot be described."""
    import ollama

    url = ollama_host(host)
    digests = _list(url) if digests is None else digests
    key = name if name in digests else f"{name}:latest"
    if key not in digests:
        available = ", ".join(sorted(digests)[:5]) or "none"
        raise ModelError(f"model '{name}' is not pulled in Ollama at {url}; run "
                         f"'ollama pull {name}' (available: {available})")
    try:
        reply = _ollama_call(url, "show", name, timeout_s=timeout_s)
    except ollama.ResponseError as exc:
        raise ModelError(f"Ollama at {url} could not describe '{name}' (HTTP "
                         f"{exc.status_code}: {str(exc.error)[:80]}); run 'ollama pull {name}'"
                         ) from exc
    info = reply.modelinfo or {}
    context = next((int(v) for k, v in sorted(info.items())
                    if k.endswith(".context_length") and isinstance(v, int | float)), None)
    d = reply.details
    return ModelCard(spec=f"ollama:{name}", digest=digests[key],
                     capabilities=sorted(reply.capabilities or ["completion"]),
                     context_length=context, family=d.family if d else None,
                     parameter_size=d.parameter_size if d else None,
                     quantization=d.quantization_level if d else None)


def ollama_model_details(name: str, host: str | None = None, timeout_s: float = 3.0) -> dict:
    """Family, size, quantisation, capabilities, context length and digest of a model."""
    return model_card(name, host, timeout_s=timeout_s).model_dump(exclude={"spec"})


def chat_card(spec: str, host: str | None = None) -> ModelCard:
    """The card of ``spec`` (``offline``, ``offline-fallible:<p>`` or ``ollama:<model>``);
    :class:`ModelError` unless the model is pulled and can chat."""
    if check_spec(spec) == "offline":
        return OFFLINE_CARD
    if (fallible := parse_fallible(spec)) is not None:
        return OFFLINE_CARD.model_copy(update={
            "spec": spec, "digest": f"offline-{OFFLINE_VERSION}-fallible-{FALLIBLE_VERSION}",
            "family": fallible_label(*fallible)})
    name = spec.split(":", 1)[1].strip()
    card = model_card(name, host)
    if "completion" not in card.capabilities:
        raise ModelError(f"'{name}' cannot chat (capabilities: {', '.join(card.capabilities)}; "
                         "an embedding model?); pick a model with 'completion' from "
                         "'relied models'")
    return card


def check_ollama_model(spec: str, host: str | None = None) -> None:
    """:class:`ModelError` unless Ollama answers and has the model of ``spec`` pulled."""
    chat_card(spec, host)


def check_spec(spec: str) -> str:
    """``spec`` itself when it is ``offline``, ``offline-fallible:<p>`` or ``ollama:<model>``,
    else :class:`ModelError`."""
    if spec == "offline" or (spec.startswith("ollama:") and spec[len("ollama:"):].strip()):
        return spec
    try:
        if parse_fallible(spec) is not None:
            return spec
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    raise ModelError(f"unknown model spec '{spec}'; use 'offline', 'auto', "
                     "'offline-fallible:<p>[:<kind>]' (stress tests) or 'ollama:<model>' "
                     "(e.g. ollama:qwen2.5:7b)")


def resolve_spec(spec: str, host: str | None = None) -> str:
    """``auto`` -> ``ollama:<first model that can chat>`` if Ollama answers, else ``offline``."""
    if spec != "auto":
        return check_spec(spec)
    try:
        digests = _list(ollama_host(host))
        for name in sorted(digests):
            if "completion" in model_card(name, host, digests).capabilities:
                return f"ollama:{name}"
    except ModelError:
        pass
    return "offline"


def describe(spec: str) -> str:
    """Human label of a spec: the offline planner is never called an LLM."""
    if spec == "offline":
        return OFFLINE_LABEL
    if (fallible := parse_fallible(spec)) is not None:
        return fallible_label(*fallible)
    return f"LLM {spec.split(':', 1)[-1]} via Ollama"


def make_client(spec: str, net: CityNetwork, view: CityView | None = None,
                host: str | None = None, seed: int = 0, timeout_s: float = 120.0,
                retries: int = 2, card: ModelCard | None = None,
                forecast: TrafficForecast | None = None) -> GuardedClient:
    """A guarded client for ``spec`` (``offline``, ``offline-fallible:<p>`` or
    ``ollama:<model>``); the offline planner routes on ``forecast`` (an LLM gets it through
    the planner tools instead); the fallible one draws its errors with ``seed``."""
    card = card or chat_card(spec, host)
    inner: ChatCompletionClient
    if check_spec(spec) == "offline":
        inner = OfflinePlannerClient(net, view, forecast)
    elif (fallible := parse_fallible(spec)) is not None:
        p, kind = fallible
        inner = FallibleOfflineClient(net, view, forecast, p=p, seed=seed, kind=kind)
    else:
        from autogen_ext.models.ollama import OllamaChatCompletionClient

        inner = OllamaChatCompletionClient(
            model=spec[len("ollama:"):].strip(), host=ollama_host(host),
            model_info=card.model_info(),
            options={"temperature": 0.0, "seed": seed, "num_ctx": card.num_ctx})
    return GuardedClient(inner, spec, card, host=ollama_host(host), timeout_s=timeout_s,
                         retries=retries)


_GATES: dict[tuple[int, str], asyncio.Semaphore] = {}


def _gate(host: str) -> asyncio.Semaphore:
    """Requests in flight to one server from this event loop (``$OLLAMA_NUM_PARALLEL``)."""
    key = (id(asyncio.get_running_loop()), host)
    if key not in _GATES:
        _GATES[key] = asyncio.Semaphore(max(1, int(os.environ.get("OLLAMA_NUM_PARALLEL", "1"))))
    return _GATES[key]


def _transient(exc: BaseException) -> bool:
    if type(exc).__name__ == "ResponseError":
        return getattr(exc, "status_code", 0) >= 500
    return isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError
                      | ConnectionResetError | BrokenPipeError)


def _message_tokens(messages: Sequence[LLMMessage], tools: Sequence[Any],
                    schema: type[BaseModel] | None) -> int:
    """Estimated prompt tokens of a request (text, tool calls and results, tool and output
    schemas); see :func:`relied.agents.prompt.estimate_tokens`."""
    parts: list[str] = []
    for m in messages:
        content = getattr(m, "content", "")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(m, FunctionExecutionResultMessage):
            parts += [r.content for r in content]
        elif isinstance(content, list):
            parts += [getattr(c, "arguments", str(c)) for c in content]
    for t in tools:
        parts.append(json.dumps(getattr(t, "schema", t), default=str))
    if schema is not None:
        parts.append(json.dumps(schema.model_json_schema()))
    return sum(estimate_tokens(p) + 4 for p in parts)


class GuardedClient(ChatCompletionClient):
    """Wraps a client: measuring, queueing, timeouts, retries, tool/format turns, validation."""

    backoff_s = 0.5  # first wait before retrying a transient failure, doubled each time

    def __init__(self, inner: ChatCompletionClient, spec: str, card: ModelCard | None = None,
                 host: str = DEFAULT_HOST, timeout_s: float = 120.0, retries: int = 2,
                 transient_retries: int = 2):
        self.inner, self.spec, self.host = inner, spec, host
        # without a card (a client made in code, e.g. a replay client): what its model_info says
        self.card = card or (OFFLINE_CARD if spec == "offline" else ModelCard(
            spec=spec, digest="", context_length=NUM_CTX_CAP,
            capabilities=["completion"] + ["tools"] * bool(inner.model_info["function_calling"])))
        self.timeout_s, self.retries, self.transient_retries = timeout_s, retries, transient_retries
        # Ollama ignores tools under a JSON-schema format: tool turns and answers are separate
        self.split_turns = not isinstance(inner, OfflinePlannerClient)
        self.calls = 0
        self.invalid_replies = 0
        self.usage: list[CallUsage] = []
        self.error: ModelError | None = None

    @property
    def name(self) -> str:
        return self.spec.split(":", 1)[-1]

    def _fail(self, error: ModelError) -> ModelError:
        """Remember ``error``: AutoGen re-raises agent errors as text, the team re-raises this."""
        self.error = error
        return error

    def _explain(self, exc: BaseException, attempts: int) -> ModelError:
        """The one-line :class:`ModelError` of a failed request."""
        if isinstance(exc, ModelError):
            return exc
        if isinstance(exc, TimeoutError):
            return ModelError(f"{self.spec} did not answer within {self.timeout_s:g} s of "
                              "being sent; use a smaller model, raise --timeout, or use "
                              "--model offline")
        if isinstance(exc, httpx.ConnectError | ConnectionRefusedError) or (
                isinstance(exc, ConnectionError) and "Failed to connect" in str(exc)):
            return _down(self.host, exc)
        if type(exc).__name__ == "ResponseError":
            code, text = getattr(exc, "status_code", -1), str(getattr(exc, "error", exc))[:100]
            if "does not support tools" in text:
                return ModelError(f"Ollama says '{self.name}' does not support tools ({text}); "
                                  f"use a model whose capabilities include 'tools' "
                                  "('relied models'), or update Ollama")
            if code == 404 or "not found" in text:
                return ModelError(f"Ollama has no model '{self.name}' ({text}); pull it with "
                                  f"'ollama pull {self.name}' or pick one from 'relied models'")
            if code >= 500:
                return ModelError(f"Ollama answered HTTP {code} ({text}) {attempts} times; the "
                                  "server failed (see its log, e.g. out of memory: try a smaller"
                                  " model), then retry")
            return ModelError(f"Ollama refused the request for '{self.name}' (HTTP {code}: "
                              f"{text}); check the model and the server's log")
        if _transient(exc):
            return ModelError(f"Ollama at {self.host} dropped the connection {attempts} times "
                              f"({type(exc).__name__}); check that 'ollama serve' is still "
                              "running (its log says why), then retry")
        if isinstance(exc, json.JSONDecodeError | ValidationError) and self.split_turns:
            return _not_json(self.host)
        return ModelError(f"{self.spec} failed ({type(exc).__name__}: "
                          f"{(str(exc).splitlines() or [''])[0][:100]})")

    def _check_fits(self, messages: Sequence[LLMMessage], tools: Sequence[Any],
                    schema: type[BaseModel] | None) -> int:
        tokens = _message_tokens(messages, tools, schema)
        if tokens > self.card.num_ctx - COMPLETION_RESERVE // 2:
            raise self._fail(ModelError(
                f"a prompt of about {tokens:,} tokens does not fit the {self.card.num_ctx:,}-"
                f"token context of {self.spec}; lower --group-size or use a model with a "
                "longer context"))
        return tokens

    async def _once(self, messages: Sequence[LLMMessage], kind: str, **kw: Any) -> CreateResult:
        """One request (after queueing for the server), with transient-failure retries."""
        estimate = self._check_fits(messages, kw.get("tools", ()),
                                    kw["json_output"] if isinstance(kw.get("json_output"), type)
                                    else None)
        for attempt in range(self.transient_retries + 1):
            async with _gate(self.host):
                self.calls += 1
                start = time.perf_counter()
                try:
                    result = await asyncio.wait_for(self.inner.create(messages, **kw),
                                                    self.timeout_s)
                except Exception as exc:  # noqa: BLE001 (every failure becomes one line)
                    if _transient(exc) and attempt < self.transient_retries:
                        failure = exc
                    else:
                        raise self._fail(self._explain(exc, attempt + 1)) from exc
                else:
                    self._record(kind, result.usage, estimate, time.perf_counter() - start)
                    return result
            await asyncio.sleep(self.backoff_s * 2 ** attempt)
        raise self._fail(self._explain(failure, self.transient_retries + 1))

    def _record(self, kind: str, usage: RequestUsage, estimate: int, wall_s: float) -> None:
        self.usage.append(CallUsage(kind=kind, prompt_tokens=usage.prompt_tokens,
                                    completion_tokens=usage.completion_tokens,
                                    estimated_prompt_tokens=estimate, wall_s=round(wall_s, 4)))

    async def create(self, messages: Sequence[LLMMessage], *, tools: Sequence[Any] = (),
                     tool_choice: Any = "auto", json_output: bool | type[BaseModel] | None = None,
                     extra_create_args: Mapping[str, Any] = {},  # noqa: B006 (interface)
                     cancellation_token: CancellationToken | None = None) -> CreateResult:
        history = list(messages)
        tools = list(tools) if tool_choice != "none" and self.model_info["function_calling"] \
            else []
        base = {"extra_create_args": extra_create_args, "cancellation_token": cancellation_token}
        schema = json_output if isinstance(json_output, type) else None
        if schema is None:
            return await self._text(history, tools, json_output, base)
        if tools and self.split_turns:  # a tool turn: tools, no format
            result = await self._once(history, "tools", tools=tools, json_output=None, **base)
            if isinstance(result.content, list) or _problem(schema, result.content) is None:
                return result
            history += [AssistantMessage(content=result.content, source="assistant"),
                        UserMessage(content="Now give your final answer: only the JSON object "
                                    "of the schema.", source="validator")]
            tools = []
        for attempt in range(self.retries + 1):
            result = await self._once(history, "structured", tools=tools, json_output=schema,
                                      **base)
            if isinstance(result.content, list):
                problem = "a tool call where the JSON answer was expected"
                reply = json.dumps([c.name for c in result.content])
            else:
                problem, reply = _problem(schema, result.content), result.content
                if problem is None:
                    return result
            self.invalid_replies += 1
            if attempt < self.retries:
                history += [AssistantMessage(content=reply[:4000], source="assistant"),
                            UserMessage(content=f"Your reply above was rejected: {problem[:300]}."
                                        " Reply again with only the JSON object for the schema "
                                        "(no tools, no prose).", source="validator")]
        raise self._fail(ModelError(
            f"{self.spec} returned no valid {schema.__name__} after {self.retries + 1} attempts "
            f"({problem[:160]}); try a larger model or --model offline"))

    async def _text(self, history: list[LLMMessage], tools: list[Any],
                    json_output: bool | None, base: dict) -> CreateResult:
        """A plain answer (or tool calls when ``tools``); a tool call where no tools were
        offered is shown to the model as an error, then :class:`ModelError`."""
        for attempt in range(self.retries + 1):
            result = await self._once(history, "text" if not tools else "tools", tools=tools,
                                      json_output=json_output, **base)
            if tools or not isinstance(result.content, list):
                return result
            self.invalid_replies += 1
            if attempt < self.retries:
                history = [*history, UserMessage(
                    content="No tools are available in this turn: answer in text from the "
                    "tool results above.", source="validator")]
        raise self._fail(ModelError(f"{self.spec} kept calling tools where a text answer was "
                                    "expected; try a larger model or --model offline"))

    def create_stream(self, messages: Sequence[LLMMessage], *, tools: Sequence[Any] = (),
                      tool_choice: Any = "auto",
                      json_output: bool | type[BaseModel] | None = None,
                      extra_create_args: Mapping[str, Any] = {},  # noqa: B006 (interface)
                      cancellation_token: CancellationToken | None = None
                      ) -> AsyncGenerator[str | CreateResult, None]:
        """Text answers stream chunk by chunk (Ollama ``stream: true``); structured answers
        and the offline planner come as one result. The timeout applies to each chunk."""
        kw = {"tools": tools, "tool_choice": tool_choice, "json_output": json_output,
              "extra_create_args": extra_create_args, "cancellation_token": cancellation_token}
        if isinstance(json_output, type) or not self.split_turns:
            async def whole() -> AsyncGenerator[str | CreateResult, None]:
                yield await self.create(messages, **kw)
            return whole()
        return self._stream(list(messages), kw)

    async def _stream(self, history: list[LLMMessage], kw: dict
                      ) -> AsyncGenerator[str | CreateResult, None]:
        tools = list(kw["tools"]) if kw["tool_choice"] != "none" \
            and self.model_info["function_calling"] else []
        estimate = self._check_fits(history, tools, None)
        for attempt in range(self.transient_retries + 1):
            sent = False
            async with _gate(self.host):
                self.calls += 1
                start = time.perf_counter()
                stream = self.inner.create_stream(
                    history, tools=tools, json_output=kw["json_output"],
                    extra_create_args=kw["extra_create_args"],
                    cancellation_token=kw["cancellation_token"])
                try:
                    while True:
                        try:
                            chunk = await asyncio.wait_for(anext(stream), self.timeout_s)
                        except StopAsyncIteration:
                            break
                        if isinstance(chunk, CreateResult):
                            self._record("tools" if tools else "text", chunk.usage, estimate,
                                         time.perf_counter() - start)
                            if isinstance(chunk.content, list) and not tools:
                                chunk = await self._text(
                                    history, [], kw["json_output"],
                                    {k: kw[k] for k in ("extra_create_args",
                                                        "cancellation_token")})
                        sent = True
                        yield chunk
                    return
                except Exception as exc:  # noqa: BLE001 (every failure becomes one line)
                    if not (_transient(exc) and attempt < self.transient_retries and not sent):
                        raise self._fail(self._explain(exc, attempt + 1)) from exc
            await asyncio.sleep(self.backoff_s * 2 ** attempt)

    async def close(self) -> None:
        await self.inner.close()

    def actual_usage(self) -> RequestUsage:
        return self.inner.actual_usage()

    def total_usage(self) -> RequestUsage:
        return self.inner.total_usage()

    def count_tokens(self, messages: Sequence[LLMMessage], *, tools: Sequence[Any] = ()) -> int:
        return _message_tokens(messages, tools, None)

    def remaining_tokens(self, messages: Sequence[LLMMessage], *,
                         tools: Sequence[Any] = ()) -> int:
        return self.card.num_ctx - self.count_tokens(messages, tools=tools)

    @property
    def capabilities(self) -> Any:
        return self.model_info

    @property
    def model_info(self) -> ModelInfo:
        return self.inner.model_info


def _problem(schema: type[BaseModel], text: str) -> str | None:
    """Why ``text`` is not valid JSON for ``schema`` (None when it is)."""
    try:
        schema.model_validate_json(text)
    except ValidationError as exc:
        error = exc.errors()[0]
        return (f"not valid JSON for the schema ({error['type']} at "
                f"{'/'.join(map(str, error['loc'])) or 'top level'}: {error['msg']})")
    return None
