"""What a daemon does next: which operation, on which keys."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from scripts.soak import LONG_TTL, SHORT_TTLS

USERS = 3
#: Each user owns a fixed set of keys, and only that user's sets name it: an erase then has one meaning.
KEYS_PER_USER = 3
#: Operation and weight. Erases are rare: each takes the locks of all its user's keys.
MIX = {"get": 30, "set": 35, "delete": 10, "update": 15, "uset": 8, "erase": 2}
WRITES = ("set", "uset", "update", "delete")


def user_name(j: int) -> str:
    return f"user-{j}"


def user_keys(j: int) -> tuple[str, ...]:
    return tuple(sorted(f"thread:soak-u{j}-{n}" for n in range(KEYS_PER_USER)))


@dataclass(frozen=True)
class Plan:
    op: str
    keys: tuple[str, ...]  # sorted: an erase takes its locks in this order
    ttl: int | None = None
    user: str | None = None


def pick_key(rng: random.Random, keys: int, epoch: int) -> str:
    # A quarter of the ops go to the users' keys and a quarter to keys shared by the whole run; the
    # rest to the keys of the current epoch, left alone once it is over: their final state is what
    # happened around it (an outage, a replay), not what later steady writing made of it.
    roll = rng.random()
    if roll < 0.25:
        return rng.choice(user_keys(rng.randrange(USERS)))
    if roll < 0.5:
        return f"thread:soak-all-{rng.randrange(keys)}"
    return f"thread:soak-{epoch}-{rng.randrange(keys)}"


def plan(rng: random.Random, keys: int, epoch: int) -> Plan:
    op = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    ttl = rng.randint(*SHORT_TTLS) if rng.random() < 0.5 else LONG_TTL
    if op == "erase":
        j = rng.randrange(USERS)
        return Plan("erase", user_keys(j), user=user_name(j))
    if op == "uset":
        j = rng.randrange(USERS)
        return Plan("uset", (rng.choice(user_keys(j)),), ttl, user_name(j))
    return Plan(op, (pick_key(rng, keys, epoch),), ttl if op in ("set", "update") else None)


def document(seq: int, by: str, log: list[int]) -> str:
    """What a write stores: which op wrote it (seq, by), and the ops whose updates it carries (log)."""
    return json.dumps({"seq": seq, "by": by, "log": log})


def appender(seq: int, by: str):
    """An update's fn: it may run more than once, so it only computes."""
    def append(current: str | None) -> str:
        log: list[int] = []
        if current is not None:
            try:
                found = json.loads(current).get("log")
            except (ValueError, AttributeError):
                found = None
            log = list(found) if isinstance(found, list) else []
        return document(seq, by, log + [seq])
    return append
