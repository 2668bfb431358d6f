"""Realistic conversation documents, shaped like pal's ThreadContext JSON."""

from __future__ import annotations

import copy
import json
import random
import uuid

_WORDS = (  # noqa: SIM905 - one sentence reads better than forty quoted words
    "the function returns a list of results while the caller expects one value so the "
    "test fails intermittently under load because two threads append to the same buffer "
    "without a lock review the diff and suggest a minimal fix with a regression test"
).split()


def conversation_document(turns: int, chars_per_turn: int = 2000, *, seed: int = 0) -> str:
    """JSON text of a thread with ``turns`` alternating user/assistant turns."""
    rng = random.Random(seed)
    thread_id = str(uuid.UUID(int=rng.getrandbits(128)))

    def text(n: int) -> str:
        words: list[str] = []
        size = 0
        while size < n:
            word = rng.choice(_WORDS)
            words.append(word)
            size += len(word) + 1
        return " ".join(words)[:n]

    document = {
        "thread_id": thread_id,
        "parent_thread_id": None,
        "created_at": "2026-11-21T10:00:00+00:00",
        "last_updated_at": "2026-11-21T10:30:00+00:00",
        "tool_name": "chat",
        "turns": [
            {
                "role": "user" if i % 2 == 0 else "assistant",
                "content": text(chars_per_turn),
                "timestamp": f"2026-11-21T10:{i % 60:02d}:00+00:00",
                "files": [f"/src/module_{i}.py"] if i % 2 == 0 else None,
                "images": None,
                "tool_name": "chat",
                "model_provider": None if i % 2 == 0 else "openai",
                "model_name": None if i % 2 == 0 else "gpt-5",
                "model_metadata": None if i % 2 == 0 else {"usage": {"input_tokens": 1234, "output_tokens": 567}},
            }
            for i in range(turns)
        ],
        "initial_context": {"prompt": text(300), "model": "auto", "temperature": 0.5, "unicode": "naïve café ✓ 日本語"},
    }
    return json.dumps(document)


def document_of_size(target_bytes: int, *, seed: int = 0) -> str:
    """A conversation document of about ``target_bytes`` bytes (1.2 KB at least)."""
    per_turn = 2000
    turns = max(2, target_bytes // (per_turn + 250))
    if target_bytes < 2 * (per_turn + 250):  # two shorter turns
        per_turn = max(50, (target_bytes - 1000) // 2)
    return conversation_document(turns, per_turn, seed=seed)


def next_turn(old_text: str, turns_key: str = "turns") -> str:
    """The caller's next write, as pal's add_turn makes it: a turn appended,
    last_updated_at changed, the whole document re-serialized compactly."""
    document = json.loads(old_text)
    turn = copy.deepcopy(document[turns_key][-2])
    turn["content"] = "a new answer " * 150
    turn["timestamp"] = "2026-11-21T11:00:00+00:00"
    document[turns_key].append(turn)
    document["last_updated_at"] = "2026-11-21T11:00:00+00:00"
    return json.dumps(document, separators=(",", ":"))
