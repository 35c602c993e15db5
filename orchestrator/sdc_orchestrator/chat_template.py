"""Shape a chat for templates that refuse a system turn or need strictly alternating turns.

Gemma 2's chat template (the guide's gemma-2-9b-it) raises on a system message
and on two user turns in a row; vLLM then answers 400 "System role not
supported", sdc-runtime the same. The orchestrator sends a system message on
every seed route (the RAG instructions), so without this module the guide's
default model answers nothing. What works with every such template, and what
Google's own examples do, is to put the system text at the top of the first
user turn; turns of one role in a row become one turn.

The rules come from the served model (fitting.py): sdc-runtime states them in
its /v1/models entry, and a backend's refusal names them (`refusal`), after
which the request is sent once more, folded.
"""

from __future__ import annotations

from typing import Any, Literal

Rule = Literal["system_role", "alternate_roles"]

# What templates raise (Gemma 2, Gemma 1, Mistral's older templates), as vLLM and sdc-runtime relay it.
_MARKERS: dict[Rule, tuple[str, ...]] = {
    "system_role": ("system role not supported", "system role is not supported", "system messages are not supported"),
    "alternate_roles": ("roles must alternate", "must alternate user/assistant", "conversation roles must alternate"),
}
SYSTEM_ROLES = ("system", "developer")


def refusal(body: object) -> Rule | None:
    """Which template rule a backend's error body names, if any."""
    text = str(body).lower()
    for rule, markers in _MARKERS.items():
        if any(m in text for m in markers):
            return rule
    return None


def _text(content: Any) -> str | None:
    """A message's text, or None for content that is not plain text (images...): left as it is."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    return None


def fold(messages: list[dict[str, Any]], *, system_role: bool, alternate_roles: bool) -> list[dict[str, Any]]:
    """The same conversation in a shape the template takes; the input is not changed.

    Without a system role, system (and OpenAI `developer`) texts go, in order, at the top of the
    first user turn (a user turn of their own when there is none). With alternation, consecutive
    turns of one role are joined with a blank line. Anything not plain text is left untouched.
    """
    out = [dict(m) for m in messages]
    if not system_role:
        systems = [m for m in out if m.get("role") in SYSTEM_ROLES]
        texts = [_text(m.get("content")) for m in systems]
        if systems and all(t is not None for t in texts):
            rest = [m for m in out if m.get("role") not in SYSTEM_ROLES]
            preamble = "\n\n".join(t for t in texts if t)
            first_user = next((m for m in rest if m.get("role") == "user"), None)
            user_text = _text(first_user.get("content")) if first_user is not None else None
            if first_user is not None and user_text is not None:
                first_user["content"] = f"{preamble}\n\n{user_text}" if preamble else user_text
            else:
                rest.insert(0, {"role": "user", "content": preamble})
            out = rest
    if alternate_roles:
        merged: list[dict[str, Any]] = []
        for m in out:
            prev = merged[-1] if merged else None
            if prev is not None and prev.get("role") == m.get("role"):
                a, b = _text(prev.get("content")), _text(m.get("content"))
                if a is not None and b is not None and not (set(m) - {"role", "content", "name"}):
                    prev["content"] = f"{a}\n\n{b}"
                    continue
            merged.append(m)
        out = merged
    return out
