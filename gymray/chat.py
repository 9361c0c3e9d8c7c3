"""Responses API items to chat messages and tools.

Pure Python, no Ray. The Responses API describes a conversation as a flat list of
*items* (messages, function calls, function call outputs, reasoning); chat
templates (and so NeMo RL) want *messages* where one assistant turn carries its
text, its reasoning and all the tool calls it made. This module does that
conversion and nothing else.

Errors are raised as :class:`ConversionError` with the JSON path of the offending
field, so a reject can name file, line *and* field.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

Reasoning = Literal["drop", "reasoning_content", "think"]
# A JSON path as text, or as (parent path, index or ".key" suffix): see path_text.
JsonPath = str | tuple


class ChatSettings(BaseModel):
    """``chat.*``: how Responses API trajectories become chat messages."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    reasoning: Reasoning = Field(
        "drop",
        description="reasoning items: drop them, put them in reasoning_content, or wrap them in <think> tags",
    )
    images: Literal["keep", "filter"] = Field(
        "keep",
        description="keep image parts, or filter rows with images (text-only); dpo and rm "
        "filter them either way (has_images): NeMo RL's preference path loads no images",
    )
    incomplete: Literal["trim", "filter"] = Field(
        "trim",
        description="a trajectory that does not end on an assistant turn: trim it to its last "
        "complete turn (filtered as incomplete_trajectory when none is left), or filter it",
    )


TEXT_PART_TYPES = ("input_text", "output_text", "text", "summary_text", "reasoning_text")
IMAGE_PART_TYPES = ("input_image", "image_url", "image")
# Items that are kept in the record but have no chat rendering: refusal parts
# become text; everything else unknown is an error (never silently dropped).
REFUSAL_PART_TYPES = ("refusal",)


class ConversionError(ValueError):
    """A field of a record cannot be converted. ``field`` is a JSON path."""

    def __init__(self, field: JsonPath, message: str):
        field = path_text(field)
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def path_text(path: JsonPath) -> str:
    """A JSON path, from the ``(parent, step)`` pairs conversion passes down: a step
    is an index (``[i]``) or a suffix (``.content``). Paths are only needed for an
    error, so they are built as text only then (formatting one per item, part and
    tool of every line was a fifth of ``convert``'s instructions)."""
    if isinstance(path, str):
        return path
    parent, step = path
    return f"{path_text(parent)}[{step}]" if isinstance(step, int) else f"{path_text(parent)}{step}"


# --------------------------------------------------------------------------- content
def convert_content(content: Any, path: JsonPath) -> tuple[str | list[dict], bool]:
    """Return (chat content, has_image).

    Text parts are joined with newlines (as vLLM joins text parts when it renders
    a Responses API message); if any image is present the content stays a list
    of OpenAI chat parts (``text`` / ``image_url``) so nothing is lost.
    """
    if content is None:
        return "", False
    if isinstance(content, str):
        return content, False
    if not isinstance(content, list):
        raise ConversionError(
            path, f"content must be a string or a list of parts, got {_kind(content)}"
        )
    parts: list[dict] = []
    has_image = False
    for i, part in enumerate(content):
        ppath = (path, i)
        if isinstance(part, str):
            parts.append({"type": "text", "text": part})
            continue
        if not isinstance(part, dict):
            raise ConversionError(ppath, f"content part must be an object, got {_kind(part)}")
        ptype = part.get("type")
        if ptype in TEXT_PART_TYPES or (ptype is None and isinstance(part.get("text"), str)):
            text = part.get("text")
            if not isinstance(text, str):
                raise ConversionError(
                    (ppath, ".text"), f"text part has no string text ({_kind(text)})"
                )
            parts.append({"type": "text", "text": text})
        elif ptype in REFUSAL_PART_TYPES:
            parts.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif ptype in IMAGE_PART_TYPES:
            url = part.get("image_url")
            if isinstance(url, dict):
                url = url.get("url")
            if not isinstance(url, str) or not url:
                # file_id images reference an upload we cannot see: say so.
                raise ConversionError(
                    (ppath, ".image_url"),
                    "image part has no image_url (file_id images are not supported)",
                )
            image: dict[str, Any] = {"url": url}
            if part.get("detail") not in (None, "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
            has_image = True
        else:
            raise ConversionError((ppath, ".type"), f"unsupported content part type {ptype!r}")
    if has_image:
        return parts, True
    return "\n".join(p["text"] for p in parts), False


def _text_of(value: Any, path: JsonPath) -> str:
    content, has_image = convert_content(value, path)
    if has_image:
        raise ConversionError(path, "images are not allowed here")
    return content  # type: ignore[return-value]


# --------------------------------------------------------------------------- items
def _reasoning_text(item: dict, path: JsonPath) -> str:
    """Reasoning text of a ``reasoning`` item: full content if present, else the summary."""
    for key in ("content", "summary"):
        value = item.get(key)
        if value:
            if not isinstance(value, list):
                raise ConversionError(
                    (path, f".{key}"), f"must be a list of parts, got {_kind(value)}"
                )
            texts = []
            for i, part in enumerate(value):
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif isinstance(part, str):
                    texts.append(part)
                else:
                    raise ConversionError(((path, f".{key}"), i), "reasoning part has no text")
            return "\n".join(texts)
    return ""  # encrypted-only or empty reasoning: nothing readable to keep


class _Builder:
    """Accumulates chat messages, grouping an assistant turn's pieces together."""

    def __init__(self, reasoning: Reasoning):
        self.reasoning = reasoning
        self.messages: list[dict] = []
        self.pending_reasoning: list[str] = []
        self.has_image = False
        # The open assistant turn: text and tool calls of one model response.
        self.turn: dict | None = None

    # An assistant turn stays open while the model keeps producing items
    # (message text, function calls); anything from the environment closes it.
    def _open_turn(self) -> dict:
        if self.turn is None:
            self.turn = {"role": "assistant", "content": ""}
            self.messages.append(self.turn)
            if self.pending_reasoning:
                self._attach_reasoning(self.turn)
        return self.turn

    def _attach_reasoning(self, turn: dict) -> None:
        text = "\n".join(t for t in self.pending_reasoning if t)
        self.pending_reasoning = []
        if not text or self.reasoning == "drop":
            return
        if self.reasoning == "reasoning_content":
            turn["reasoning_content"] = text
        else:  # think
            turn["_think"] = text

    def close_turn(self) -> None:
        self.turn = None

    def add_reasoning(self, item: dict, path: JsonPath) -> None:
        # Reasoning precedes the output it explains: it starts the model's next step.
        self.close_turn()
        self.pending_reasoning.append(_reasoning_text(item, path))

    def add_message(self, role: str, content: Any, path: JsonPath) -> None:
        if role == "assistant":
            turn = self._open_turn()
            text, has_image = convert_content(content, (path, ".content"))
            if has_image:
                raise ConversionError((path, ".content"), "assistant messages cannot carry images")
            if turn.get("tool_calls"):
                # Text after tool calls in the same turn is a new assistant message.
                self.close_turn()
                turn = self._open_turn()
            turn["content"] = f"{turn['content']}\n{text}" if turn["content"] else text
            return
        self.close_turn()
        self._flush_orphan_reasoning()
        if role == "developer":
            role = "system"  # chat templates know no developer role
        if role not in ("system", "user"):
            raise ConversionError((path, ".role"), f"unsupported role {role!r}")
        if content is None:  # (an assistant's may be: its turn is tool calls)
            raise ConversionError((path, ".content"), f"{role} message has no content")
        converted, has_image = convert_content(content, (path, ".content"))
        self.has_image |= has_image
        self.messages.append({"role": role, "content": converted})

    def add_function_call(self, item: dict, path: JsonPath) -> None:
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise ConversionError((path, ".name"), "function_call has no name")
        call_id = item.get("call_id") or item.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise ConversionError((path, ".call_id"), "function_call has no call_id")
        arguments = item.get("arguments")
        if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
            # No arguments (some servers write "" for a function without parameters):
            # chat templates and NeMo RL parse the string, and "" is not JSON.
            arguments = "{}"
        elif not isinstance(arguments, str):
            raise ConversionError(
                (path, ".arguments"), f"arguments must be a JSON string, got {_kind(arguments)}"
            )
        turn = self._open_turn()
        turn.setdefault("tool_calls", []).append(
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        )

    def add_function_call_output(self, item: dict, path: JsonPath) -> None:
        call_id = item.get("call_id")
        if not isinstance(call_id, str) or not call_id:
            raise ConversionError((path, ".call_id"), "function_call_output has no call_id")
        self.close_turn()
        self._flush_orphan_reasoning()
        output = item.get("output")
        if output is None:
            output = ""
        elif not isinstance(output, str):
            output = _text_of(output, (path, ".output"))
        self.messages.append({"role": "tool", "tool_call_id": call_id, "content": output})

    def _flush_orphan_reasoning(self) -> None:
        # Reasoning that no assistant output followed (a cut trace) has no turn to
        # live in; it is dropped with the turn that never came.
        self.pending_reasoning = []

    def finish(self) -> list[dict]:
        for m in self.messages:
            think = m.pop("_think", None)
            if think is not None:
                m["content"] = (
                    f"<think>\n{think}\n</think>\n{m['content']}"
                    if m["content"]
                    else f"<think>\n{think}\n</think>"
                )
            if m["role"] == "assistant" and not m.get("tool_calls"):
                m.pop("tool_calls", None)
        return self.messages


def _iter_items(items: list, path: JsonPath):
    """Yield (item, path); one environment nests lists of items inside output."""
    for i, item in enumerate(items):
        ipath = (path, i)
        if isinstance(item, list):
            yield from _iter_items(item, ipath)
        else:
            yield item, ipath


def add_items(builder: _Builder, items: list, path: JsonPath) -> None:
    for item, ipath in _iter_items(items, path):
        if not isinstance(item, dict):
            raise ConversionError(ipath, f"item must be an object, got {_kind(item)}")
        itype = item.get("type")
        if itype == "message" or (itype is None and "role" in item):
            role = item.get("role")
            if not isinstance(role, str):
                raise ConversionError((ipath, ".role"), "message has no role")
            builder.add_message(role, item.get("content"), ipath)
        elif itype == "function_call":
            builder.add_function_call(item, ipath)
        elif itype == "function_call_output":
            builder.add_function_call_output(item, ipath)
        elif itype == "reasoning":
            builder.add_reasoning(item, ipath)
        else:
            raise ConversionError((ipath, ".type"), f"unsupported item type {itype!r}")


# --------------------------------------------------------------------------- public
def prompt_messages(rcp: dict, reasoning: Reasoning = "drop") -> tuple[list[dict], bool]:
    """Messages of the request: ``instructions`` as a system message, then ``input``."""
    b = _Builder(reasoning)
    instructions = rcp.get("instructions")
    if instructions:
        b.add_message("system", instructions, "responses_create_params.instructions")
    inp = rcp.get("input")
    if isinstance(inp, str):
        b.add_message("user", inp, "responses_create_params.input")
    elif isinstance(inp, list):
        add_items(b, inp, "responses_create_params.input")
    elif inp is not None:
        raise ConversionError(
            "responses_create_params.input", f"must be a string or a list, got {_kind(inp)}"
        )
    return b.finish(), b.has_image


def completion_messages(output: list, reasoning: Reasoning = "drop") -> tuple[list[dict], bool]:
    """Messages of the response trajectory (``response.output``)."""
    b = _Builder(reasoning)
    add_items(b, output, "response.output")
    return b.finish(), b.has_image


def convert_tools(tools: Any, path: str = "responses_create_params.tools") -> list[dict]:
    """Responses API flat tools -> Chat Completions nested tools."""
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise ConversionError(path, f"tools must be a list, got {_kind(tools)}")
    out = []
    for i, tool in enumerate(tools):
        tpath = (path, i)
        if not isinstance(tool, dict):
            raise ConversionError(tpath, f"tool must be an object, got {_kind(tool)}")
        if tool.get("type") not in ("function", None):
            raise ConversionError(
                (tpath, ".type"),
                f"unsupported tool type {tool.get('type')!r} (only function tools have a chat form)",
            )
        if isinstance(tool.get("function"), dict):  # already nested
            fn = dict(tool["function"])
        else:
            fn = {
                k: tool[k]
                for k in ("name", "description", "parameters", "strict")
                if tool.get(k) is not None
            }
        if not isinstance(fn.get("name"), str) or not fn.get("name"):
            raise ConversionError((tpath, ".name"), "function tool has no name")
        fn.setdefault("parameters", {"type": "object", "properties": {}})
        out.append({"type": "function", "function": fn})
    return out


def pair_tool_calls(messages: list[dict]) -> bool:
    """Give every tool call of a conversation an id of its own, in place.

    Ids pair calls with their results, and some harnesses reuse them (``call_0``
    in every turn). A call whose id an earlier call already has is renamed
    ``<id>_2`` (``_3``, ... past ids in use), and so is the next result with that
    id. That is only sound while one call at a time is waiting for a result under
    an id: when two are (parallel calls sharing an id), nothing says which result
    is whose, and the conversation is left as it is (False) for
    :func:`tool_call_problem` to name.
    """
    taken = {c["id"] for m in messages for c in m.get("tool_calls") or ()}
    taken |= {m["tool_call_id"] for m in messages if m["role"] == "tool"}
    given: set[str] = set()
    waiting: dict[str, str] = {}  # id as written -> id given, of an unanswered call
    renames: list[tuple[dict, str, str]] = []
    for m in messages:
        if m["role"] == "tool":
            new = waiting.pop(m["tool_call_id"], None)
            if new is not None and new != m["tool_call_id"]:
                renames.append((m, "tool_call_id", new))
            continue
        for c in m.get("tool_calls") or ():
            old = c["id"]
            if old in waiting:
                return False
            new, k = old, 2
            while new in given or (new != old and new in taken):
                new, k = f"{old}_{k}", k + 1
            given.add(new)
            waiting[old] = new
            if new != old:
                renames.append((c, "id", new))
    for holder, key, new in renames:
        holder[key] = new
    return True


def tool_call_problem(messages: list[dict]) -> str | None:
    """A filter reason when a conversation's tool calls cannot be trained on:
    two calls with one id (results cannot be paired with calls), or arguments
    that are not a JSON object (chat templates and NeMo RL parse them, and a
    model trained on them learns to make broken calls)."""
    seen: set[str] = set()
    for m in messages:
        for c in m.get("tool_calls") or ():
            if c["id"] in seen:
                return "duplicate_tool_call_id"
            seen.add(c["id"])
            try:
                arguments = orjson.loads(c["function"]["arguments"])
            except orjson.JSONDecodeError:
                return "invalid_tool_arguments"
            if not isinstance(arguments, dict):
                return "invalid_tool_arguments"
    return None


def unanswered_tool_calls(messages: list[dict]) -> set[str]:
    answered = {m.get("tool_call_id") for m in messages if m["role"] == "tool"}
    return {
        c["id"]
        for m in messages
        if m["role"] == "assistant"
        for c in m.get("tool_calls") or ()
        if c["id"] not in answered
    }


def trim_to_complete(messages: list[dict], start: int) -> list[dict] | None:
    """Cut ``messages`` after its last assistant turn that leaves no tool call unanswered.

    ``start`` is the index of the first completion message: a result must keep at
    least one assistant message of the completion, else None.
    """
    for end in range(len(messages), start, -1):
        last = messages[end - 1]
        if last["role"] != "assistant":
            continue
        head = messages[:end]
        if last.get("tool_calls"):
            continue  # its results would be cut off
        if not unanswered_tool_calls(head):
            return head
    return None


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
