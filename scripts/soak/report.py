"""The soak's figures as a table, and each failure with the history that matters to it."""

from __future__ import annotations

from pathlib import Path

from scripts.soak import ABSENT
from scripts.soak.checker import FINAL_FAILURES, READ_FAILURES, Failure
from scripts.soak.history import Op, observed


def _answer(seen: object) -> str:
    if seen == ABSENT:
        return "nothing"
    if isinstance(seen, tuple):
        return f"seq {seen[0]}" + (f" log {list(seen[1])}" if seen[1] not in (None, (seen[0],)) else "")
    return repr(seen)


def _row(op: Op, t0: float) -> str:
    if op.acked:
        outcome = f"{op.s0}->{op.s1}"
        if op.op == "get":
            outcome += f" got {_answer(observed(op.value))}"
    else:
        outcome = "error: " + " ".join(op.error.split())[:200] if op.error else "not acknowledged (killed)"
    t1 = f"{op.t1 - t0:8.2f}" if op.t1 else "       -"
    what = op.op + (f" {op.user}" if op.user else "")
    return (f"  {op.seq:6d} {op.t0 - t0:8.2f} {t1}  {op.by:>6}  {Path(op.spool).stem:>9}  {what:13} "
            f"{op.ttl or '':>5}  {outcome}")


def describe(failure: Failure, t0: float) -> str:
    """A failure, with the key's writes from the value it saw (or the last few) up to the read or the end."""
    shown = " / ".join(f"{source} holds {_answer(s)}" if source != "get" else f"read {_answer(s)}"
                       for source, s in failure.seen)
    if failure.written is not None:
        shown += f"; the row was last written at {failure.written - t0:.2f} s"
    head = f"{failure.key}: {failure.kind} ({shown})"
    if failure.note:
        head += f"; {failure.note}"
    upto = failure.read.seq if failure.read else float("inf")
    writes = [op for op in failure.history if op.op != "get" and op.seq < upto]
    # From a few writes before the value seen (what it replaced, what an update built on), or the last few.
    held = [s[0] for _, s in failure.seen if isinstance(s, tuple)]
    first = next((i for i, op in enumerate(writes) if held and op.seq >= min(held)), len(writes))
    shown_ops = writes[max(first - 3, 0):] + ([failure.read] if failure.read else [])
    rows = [_row(op, t0) for op in shown_ops]
    if len(rows) > 25:
        rows[10:-15] = [f"  ... {len(rows) - 25} more"]
    columns = "     seq   t0 (s)   t1 (s)  daemon      spool  op            ttl  states / outcome"
    return "\n".join([head, columns, *rows])


def table(figures: dict) -> str:
    rows = [
        ("backend / spool", f"{figures['backend']} / {figures['spool']}"),
        ("daemons, keys, seconds", f"{figures['daemons']}, {figures['keys']}, {figures['seconds']}"),
        ("acknowledged sets (with a user) / updates",
         f"{figures['acked_sets']} ({figures['acked_user_sets']}) / {figures['acked_updates']}"),
        ("acknowledged deletes / erases", f"{figures['acked_deletes']} / {figures['acked_erases']}"),
        ("  acknowledged while not healthy", figures["acked_while_not_healthy"]),
        ("  short-lived sets expired", figures["expired_sets"]),
        ("unacknowledged (killed mid-op) / raised", f"{figures['unacknowledged']} / {figures['raised']}"),
        ("reads: checked healthy / degraded / raised",
         f"{figures['reads_checked_healthy']} / {figures['reads_degraded']} / {figures['read_errors']}"),
        ("outages / kills / crashes", f"{figures['outages']} / {figures['kills']} / {figures['crashes']}"),
        ("container restarts (PID 1 every time)",
         f"{figures['container_restarts']} ({'yes' if figures['container_not_pid1'] == 0 else 'NO'})"),
        ("spooled writes / replay calls", f"{figures['spooled_writes']} / {figures['replay_calls']}"),
        ("duplicate replays", figures["duplicates"]),
        ("left unreplayed", figures["unreplayed"]),
        ("reads: stale / resurrected / corrupt", " / ".join(str(figures[name]) for name in READ_FAILURES)),
        ("final: lost / stale / resurrected / corrupt / owner",
         " / ".join(str(figures[name]) for name in FINAL_FAILURES)),
        ("final: ambiguous (near expiry)", figures["ambiguous"]),
        ("keys checked loosely for a while (too many states)", figures["keys_widened"]),
        ("wall time", f"{figures['wall_seconds']} s"),
    ]
    return "\n".join(f"{label:52} {value}" for label, value in rows)
