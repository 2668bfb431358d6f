"""What a key may hold after each op of its history, as a set of possible states.

The history is the ledger's order. An acknowledged op took effect at its
place; an op never acknowledged (its daemon was killed) or that raised may or
may not have, so the model keeps both. A set whose expiry falls within MARGIN
of a moment may be live or not then. Owners follow the store's rule: a set
with a user makes that user the owner, a set or update without one keeps the
owner of a live thread (none otherwise), a delete removes the thread, and an
acknowledged erase removes every thread its user owned at that moment.

One allowance comes from the design: a write acknowledged while the circuit
was open sits in one daemon's spool until it is replayed, so until the next
direct write of the key a reader of the store may still get what it replaced.
Each state therefore carries those older contents (its "lag"), and a direct
write may have been computed from them (an update read the store). An erase
takes an older content away only if its user owned that one. The end state,
once every spool is replayed, has no lag.

Uncertain updates multiply the possible logs (each may or may not be in the
next one's), and uncertain spooled writes the possible lags. Past LIMIT
states a key is widened: logs are no longer told apart (any log of the right
op matches) and the states of one thread share their lags. That accepts
more, never less, and lasts until the next set or delete.
"""

from __future__ import annotations

from dataclasses import dataclass

from scripts.soak import ABSENT, MARGIN
from scripts.soak.history import Op


@dataclass(frozen=True)
class Content:
    """A thread as some op wrote it; seq 0 is no thread."""

    seq: int = 0
    log: tuple[int, ...] | None = ()  # None: not told apart (a widened key)
    owner: str | None = None
    lo: float = 0.0  # the write took effect between lo and hi
    hi: float = 0.0
    ttl: float = 0.0

    def live(self, t0: float, t1: float) -> bool | None:
        """Live all through [t0, t1], dead all through it, or None: it may expire meanwhile."""
        if not self.seq:
            return False
        if t1 < self.lo + self.ttl - MARGIN:
            return True
        if t0 > self.hi + self.ttl + MARGIN:
            return False
        return None

    def answers(self, t0: float, t1: float) -> set:
        """What a read in [t0, t1] of a key holding this may return."""
        live = self.live(t0, t1)
        found: set = set()
        if live is not False:
            found.add((self.seq, self.log))
        if live is not True:
            found.add(ABSENT)
        return found


NOTHING = Content()
#: The thread, and the older contents a reader of the store may still get.
State = tuple[Content, frozenset]
LIMIT = 256


def admits(allowed: set, seen: object) -> bool:
    """Whether ``seen`` is among the answers ``allowed``, where a log of None stands for any log."""
    return seen in allowed or (isinstance(seen, tuple) and (seen[0], None) in allowed)


class Key:
    """One key's possible states, walked along its history."""

    def __init__(self) -> None:
        self.states: set[State] = {(NOTHING, frozenset())}
        #: Every content each op may have written.
        self.wrote: dict[int, set[Content]] = {}
        #: Contents that an acknowledged erase certainly removed, with that erase.
        self.erased: dict[int, Op] = {}
        #: Per spool file: the last write acknowledged through it while not healthy, and any
        #: uncertain write after it; the spool's newest entry of the key is one of them.
        self.spooled: dict[str, list[Op]] = {}
        self.widened = False

    # -- reading ---------------------------------------------------------------------------

    def visible(self, t0: float, t1: float, lag: bool) -> set:
        found: set = set()
        for cur, older in self.states:
            found |= cur.answers(t0, t1)
            if lag:
                for content in older:
                    found |= content.answers(t0, t1)
        return found

    def from_spool(self, read: Op) -> set:
        """What the reader's spool may answer: its newest entry of the key, unless a later erase
        through the same spool removed the thread."""
        found: set = set()
        for op in self.spooled.get(read.spool, []):
            if op.op == "delete":
                continue  # the spool answers None: always allowed
            for content in self.wrote.get(op.seq, ()):
                erase = self.erased.get(content.seq)
                if erase is None or erase.spool != read.spool:
                    found |= content.answers(read.t0, read.done)
        return found

    def owners(self, seen: object) -> set:
        return {cur.owner for cur, _ in self.states if admits({(cur.seq, cur.log)}, seen)}

    # -- writing ---------------------------------------------------------------------------

    def apply(self, op: Op) -> None:
        if op.op == "get":
            return
        before = {_settle(state, op.t0) for state in self.states}
        after: set[State] = set() if op.acked else set(before)
        if op.op == "erase":
            after |= {_erase(op.user, *state) for state in before}
            if op.acked:
                kept = {c.seq for cur, older in after for c in (cur, *older)}
                for cur, older in before:
                    for content in (cur, *older):
                        if content.seq and content.seq not in kept:
                            self.erased.setdefault(content.seq, op)
        else:
            # Acknowledged with the circuit closed before and after: it went to the store.
            modes = (False,) if op.acked and not op.degraded else (False, True)
            for cur, older in before:
                for spooled in modes:
                    after |= self._write(op, cur, older, spooled)
            if op.acked and not op.healthy:
                self.spooled[op.spool] = [op]
            elif not op.acked:
                self.spooled.setdefault(op.spool, []).append(op)
        if len(after) > LIMIT:
            after = _widened(after)
            self.widened = True
        self.states = after

    def _write(self, op: Op, cur: Content, older: frozenset, spooled: bool) -> set[State]:
        # A direct write acts on what the store shows, which may still be older than cur.
        sources = (cur,) if spooled else (cur, *older)
        contents = {NOTHING} if op.op == "delete" else {c for s in sources for c in _written(op, s)}
        self.wrote.setdefault(op.seq, set()).update(c for c in contents if c.seq)
        lag = older | {cur} if spooled else frozenset()
        return {(c, lag - {c}) for c in contents}


def _written(op: Op, base: Content) -> set[Content]:
    """What ``op`` writes over ``base``: the log and owner it carries."""
    live = base.live(op.t0, op.done)
    if op.op == "uset":
        made = {((op.seq,), op.user)}
    elif op.op == "set":
        made = {((op.seq,), owner) for owner in _kept_owner(base, live)}
    else:  # update: fn ran on the live thread, or on None
        made = set()
        if live is not False:
            made.add((None if base.log is None else base.log + (op.seq,), base.owner))
        if live is not True:
            made.add(((op.seq,), None))
    return {Content(op.seq, log, owner, op.t0, op.done, op.ttl or 0) for log, owner in made}


def _kept_owner(base: Content, live: bool | None) -> set:
    if live is None:
        return {base.owner, None}
    return {base.owner} if live else {None}


def _erase(user: str | None, cur: Content, older: frozenset) -> State:
    # What the store shows while a spooled write waits goes if the user owned it, and stays if not
    # (the replay must then not bring it back: the end state has no lag).
    kept = frozenset(NOTHING if c.owner == user else c for c in older)
    cur = NOTHING if cur.owner == user else cur
    return cur, kept - {cur}


def _widened(states: set[State]) -> set[State]:
    lags: dict[Content, frozenset] = {}
    for cur, older in states:
        cur = _vague(cur)
        lags[cur] = lags.get(cur, frozenset()) | {_vague(c) for c in older}
    return {(cur, older - {cur}) for cur, older in lags.items()}


def _vague(content: Content) -> Content:
    if not content.seq:
        return content
    return Content(content.seq, None, content.owner, content.lo, content.hi, content.ttl)


def _settle(state: State, at: float) -> State:
    """Forget what has certainly expired by ``at``: it reads as nothing and owns nothing."""
    cur, older = state
    if cur.live(at, at) is False:
        cur = NOTHING
    return cur, frozenset(NOTHING if c.live(at, at) is False else c for c in older) - {cur}
