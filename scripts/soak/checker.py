"""Check every read against the history, as it happened, and every key's final state.

A read made while the daemon's circuit was closed before and after it (healthy
or replaying) must return what the history allows at that point: the latest
acknowledged outcome, an uncertain op's outcome, or, until the next direct
write, what a spooled write replaced (model.py). A read made while degraded is
answered by the daemon's spool: nothing, or the newest spooled write of the
key, which is the latest write acknowledged through that spool file while not
healthy or an uncertain one after it; the latest acknowledged outcome is
accepted too. A value that an acknowledged erase removed is "resurrected" when
it is read back through the store, or through the spool file of the eraser.
"""

from __future__ import annotations

from dataclasses import dataclass

from scripts.soak import ABSENT, DEGRADED, LONG_TTL, MARGIN
from scripts.soak.history import History, Op, observed
from scripts.soak.model import Key, admits

READ_FAILURES = ("stale_reads", "resurrected_reads", "corrupt_reads")
FINAL_FAILURES = ("lost", "stale", "resurrected", "corrupt", "wrong_owner")


@dataclass
class Failure:
    key: str
    kind: str
    seen: tuple  # (source, answer) pairs
    read: Op | None  # None: the final state
    history: list[Op]
    note: str = ""
    written: float | None = None  # when the store's row was last written


def classify(model: Key, seen: object, allowed: set) -> str:
    """Why ``seen`` is not allowed: stale, resurrected or corrupt."""
    if seen == ABSENT:
        return "stale"
    written = {(c.seq, c.log) for c in model.wrote.get(seen[0], ())} if isinstance(seen, tuple) else set()
    if not admits(written, seen):
        return "corrupt"  # no op of this key wrote that, or not with that log (an update lost a turn)
    if seen[0] in model.erased or allowed <= {ABSENT}:
        return "resurrected"
    return "stale"


def judge_read(model: Key, read: Op) -> tuple[str, set]:
    """"ok", or the failure's kind; and what was allowed."""
    seen = observed(read.value)
    through_store = read.s0 != DEGRADED or read.s1 != DEGRADED
    allowed = model.visible(read.t0, read.done, lag=through_store)
    if read.degraded:
        allowed |= {ABSENT} | model.from_spool(read)
    if admits(allowed, seen):
        return "ok", allowed
    return classify(model, seen, allowed), allowed


def judge_final(model: Key, seen: object, at: float) -> str:
    allowed = model.visible(at, at, lag=False)
    if admits(allowed, seen):
        return "ambiguous" if len(allowed) > 1 else "ok"
    return "lost" if seen == ABSENT else classify(model, seen, allowed)


def walk(history: History) -> tuple[dict[str, Key], dict[str, int], list[Failure]]:
    """Every key's model after its whole history; the reads' figures and failures on the way."""
    figures = ("reads", "reads_checked_healthy", "reads_degraded", *READ_FAILURES, "keys_widened")
    counts = dict.fromkeys(figures, 0)
    failures = []
    models = {}
    for key, ops in history.by_key.items():
        model = models[key] = Key()
        for op in ops:
            if op.op != "get":
                model.apply(op)
                continue
            if not op.acked:
                continue
            counts["reads"] += 1
            counts["reads_degraded" if op.degraded else "reads_checked_healthy"] += 1
            verdict, allowed = judge_read(model, op)
            if verdict != "ok":
                counts[f"{verdict}_reads"] += 1
                note = "allowed: " + _shown(allowed)
                seen = (("get", observed(op.value)),)
                failures.append(Failure(key, f"{verdict} read", seen, op, ops, note))
        counts["keys_widened"] += model.widened
    return models, counts, failures


def check_final(history: History, models: dict[str, Key], direct: dict, direct_at: float, api: dict,
                api_at: float) -> tuple[dict[str, int], list[Failure]]:
    """The store's rows and the API's answers at the end, against each key's final model."""
    counts = dict.fromkeys((*FINAL_FAILURES, "ambiguous"), 0)
    failures = []
    for key in sorted(set(models) | set(direct)):
        model = models.get(key) or Key()
        row = direct.get(key)
        seen = (observed(row[0] if row else None), observed(api.get(key)))
        verdicts = [judge_final(model, seen[0], direct_at), judge_final(model, seen[1], api_at)]
        if row and verdicts[0] in ("ok", "ambiguous") and row[1] not in model.owners(seen[0]):
            verdicts[0] = "wrong_owner"  # an erase would miss it, or take what is not the user's
        worst = next((v for v in verdicts if v in FINAL_FAILURES), verdicts[0])
        if worst in counts:
            counts[worst] += 1
        if worst in FINAL_FAILURES:
            note = ""
            if worst == "wrong_owner":
                owners = sorted(map(str, model.owners(seen[0])))
                note = f"the row's owner is {row[1]!r}; the history allows {owners}"
            failures.append(Failure(key, worst, tuple(zip(("postgres", "api"), seen)), None,
                                    history.by_key.get(key, []), note, row[2] if row else None))
    return counts, failures


def op_figures(history: History, at: float) -> dict[str, int]:
    every = [op for op in history.ops if op.op != "get"]
    acked = [op for op in every if op.acked]
    short = [op for op in acked if op.op in ("set", "uset", "update") and op.ttl != LONG_TTL]
    return {
        "acked_sets": sum(op.op in ("set", "uset") for op in acked),
        "acked_user_sets": sum(op.op == "uset" for op in acked),
        "acked_updates": sum(op.op == "update" for op in acked),
        "acked_deletes": sum(op.op == "delete" for op in acked),
        "acked_erases": sum(op.op == "erase" for op in acked),
        "acked_while_not_healthy": sum(not op.healthy for op in acked),
        "expired_sets": sum(op.t1 + op.ttl + MARGIN < at for op in short),
        "unacknowledged": sum(op.t1 is None for op in history.ops),
        "raised": sum(op.error is not None for op in history.ops),
        "read_errors": sum(op.op == "get" and op.error is not None for op in history.ops),
    }


def _shown(allowed: set, at_most: int = 8) -> str:
    names = sorted(_short(a) for a in allowed)
    more = f" and {len(names) - at_most} more" if len(names) > at_most else ""
    return ", ".join(names[:at_most]) + more


def _short(answer: object) -> str:
    if not isinstance(answer, tuple):
        return str(answer)
    if answer[1] is None:
        return f"{answer[0]}[any log]"
    return f"{answer[0]}{list(answer[1]) if answer[1] != (answer[0],) else ''}"
