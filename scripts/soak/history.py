"""The daemons' ledgers read back: every operation, in the order of the shared counter."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from scripts.soak import ABSENT, DEGRADED, HEALTHY

#: How long a killed daemon's last call may still have run after its successor started (a
#: request held by the gateway runs until the client's deadline: its timeout, 1 s).
LATE_RUN = 1.0


@dataclass
class Op:
    seq: int
    op: str  # get, set (no user), uset (with a user), update, delete, erase
    keys: tuple[str, ...]
    by: str
    t0: float
    s0: str | None = None
    ttl: int | None = None
    user: str | None = None
    spool: str = ""
    t1: float | None = None
    s1: str | None = None
    error: str | None = None
    value: object = None  # what a get answered
    #: For an op whose outcome was never logged: the latest moment it can have taken effect.
    end: float = float("inf")

    @property
    def acked(self) -> bool:
        return self.t1 is not None and self.error is None

    @property
    def done(self) -> float:
        """When it had taken effect at the latest, if it did."""
        return self.t1 if self.t1 is not None else self.end

    @property
    def degraded(self) -> bool:
        """The circuit was open before or after: a write may be spooled, a read answered by the spool."""
        return DEGRADED in (self.s0, self.s1)

    @property
    def healthy(self) -> bool:
        return self.s0 == HEALTHY and self.s1 == HEALTHY

    @property
    def write(self) -> bool:
        return self.op in ("set", "uset", "update", "delete")


@dataclass
class Incarnation:
    name: str  # slot.generation
    pid: int
    spool: str
    start: float


@dataclass
class History:
    by_key: dict[str, list[Op]]
    ops: list[Op]
    incarnations: dict[str, Incarnation]


def load(run_dir: Path, end: float) -> History:
    """Every op of every ledger; ``end`` bounds those whose daemon was killed before their outcome."""
    ops: dict[int, Op] = {}
    incarnations: dict[str, Incarnation] = {}
    for path in sorted((run_dir / "logs").glob("*.jsonl")):
        name = path.stem
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # torn by a kill: never acknowledged
            if "start" in record:
                incarnations[name] = Incarnation(name, record["pid"], record["spool"], record["start"])
            elif "op" in record:
                ops[record["seq"]] = Op(
                    record["seq"], record["op"], tuple(record["keys"]), record["by"], record["t0"],
                    record["s0"], record["ttl"], record["user"], incarnations[name].spool)
            elif "seq" in record:
                op = ops[record["seq"]]
                op.t1, op.s1, op.error = record["t1"], record.get("s1"), record.get("error")
                op.value = record.get("value")
    for op in ops.values():
        if op.t1 is None:
            slot, generation = op.by.split(".")
            successor = incarnations.get(f"{slot}.{int(generation) + 1}")
            op.end = (successor.start if successor else end) + LATE_RUN
    ordered = sorted(ops.values(), key=lambda o: o.seq)
    by_key: dict[str, list[Op]] = {}
    for op in ordered:
        for key in op.keys:
            by_key.setdefault(key, []).append(op)
    return History(by_key, ordered, incarnations)


def observed(document: object) -> object:
    """A read's answer: (seq, log) of the op that wrote it, ABSENT, or the foreign text itself."""
    if document is None:
        return ABSENT
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except ValueError:
            return document
    if isinstance(document, dict) and isinstance(document.get("seq"), int) and "by" in document:
        log = document.get("log")
        if isinstance(log, list) and all(isinstance(s, int) for s in log):
            return document["seq"], tuple(log)
    return json.dumps(document)
