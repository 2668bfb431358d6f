"""The soak's checker on hand-made histories: it flags what it must, and accepts what the design allows."""

from __future__ import annotations

import json

from scripts.soak import ABSENT, DEGRADED, HEALTHY, LONG_TTL, REPLAYING
from scripts.soak.checker import check_final, judge_read, walk
from scripts.soak.history import History, Op, load, observed
from scripts.soak.model import Key
from scripts.soak.workload import appender, document

KEY = "thread:soak-u0-0"
U = "user-0"


class Story:
    """A history of one key, told op by op; each op takes 10 ms, one after the other."""

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.now = 1000.0

    def op(self, kind: str, *, by: str = "0.0", spool: str = "spool-0", states=(HEALTHY, HEALTHY),
           ttl: int | None = LONG_TTL, user: str | None = None, outcome: str = "acked", value: object = None,
           after: float = 0.0) -> Op:
        self.now += after + 0.01
        op = Op(len(self.ops) + 1, kind, (KEY,), by, self.now, states[0], ttl, user, spool)
        if outcome == "acked":
            op.t1, op.s1 = self.now + 0.005, states[1]
        elif outcome == "raised":
            op.t1, op.error = self.now + 0.005, "StorageUnavailableError: down"
        else:  # killed before its outcome was logged
            op.end = self.now + 1.0
        op.value = value
        self.ops.append(op)
        return op

    def set(self, **kwargs) -> Op:
        return self.op("set", **kwargs)

    def read(self, seq: int | None, log: list[int] | None = None, **kwargs) -> Op:
        value = None if seq is None else document(seq, "0.0", log or [seq])
        return self.op("get", ttl=None, value=value, **kwargs)

    def verdicts(self) -> list[str]:
        """The verdict of every read, in order."""
        model, found = Key(), []
        for op in self.ops:
            if op.op == "get":
                found.append(judge_read(model, op)[0])
            else:
                model.apply(op)
        return found


DOWN = (DEGRADED, DEGRADED)


def test_a_healthy_read_must_see_the_latest_acknowledged_write():
    story = Story()
    story.set()
    story.set()
    story.read(2)
    story.read(1)
    story.read(None)
    assert story.verdicts() == ["ok", "stale", "stale"]


def test_a_write_never_acknowledged_may_or_may_not_have_happened():
    story = Story()
    story.set()
    story.set(outcome="killed")
    story.read(1, by="1.0")
    story.read(2, by="1.0")
    story.op("update", outcome="raised")
    story.read(2, by="1.0")
    story.read(3, [3], by="1.0")  # the raised update ran on a thread it found... not absent: it lost a turn
    assert story.verdicts() == ["ok", "ok", "ok", "corrupt"]


def test_an_update_must_carry_the_turns_before_it():
    story = Story()
    story.set()
    story.op("update")
    story.read(2, [1, 2])
    story.read(2, [2])  # fn ran on None although the thread was there: the turn of op 1 is lost
    assert story.verdicts() == ["ok", "corrupt"]


def test_a_read_of_something_no_op_wrote_is_corrupt():
    story = Story()
    story.set()
    story.read(7)
    story.op("get", ttl=None, value='{"not": "ours"}')
    assert story.verdicts() == ["corrupt", "corrupt"]


def test_a_deleted_thread_read_back_is_resurrected():
    story = Story()
    story.set()
    story.op("delete", ttl=None)
    story.read(1)
    assert story.verdicts() == ["resurrected"]


def test_near_expiry_both_answers_are_fine_and_long_after_it_only_absence():
    story = Story()
    story.set(ttl=2)
    story.read(1, after=1.0)
    story.read(None)
    story.read(1, after=10.0)
    assert story.verdicts() == ["ok", "ok", "resurrected"]


def test_a_read_after_an_erase_of_the_owner_is_resurrected():
    story = Story()
    story.op("uset", user=U)
    story.set()  # pal's setex keeps the owner of the live thread
    story.op("erase", ttl=None, user=U)
    story.read(2)
    story.read(None)
    assert story.verdicts() == ["resurrected", "ok"]


def test_an_erase_spares_a_thread_set_after_its_owners_thread_expired():
    story = Story()
    story.op("uset", user=U, ttl=2)
    story.set(after=10.0)  # the user's thread had expired: this one has no owner
    story.op("erase", ttl=None, user=U)
    story.read(2)
    story.op("erase", ttl=None, user="user-1")
    story.read(2)
    assert story.verdicts() == ["ok", "ok"]


def test_an_erase_that_raised_may_or_may_not_have_happened():
    story = Story()
    story.op("uset", user=U)
    story.op("erase", ttl=None, user=U, outcome="raised")
    story.read(1)
    story.read(None)
    assert story.verdicts() == ["ok", "ok"]


def test_a_degraded_read_answers_from_its_own_spool_file_only():
    story = Story()
    story.set(spool="spool-a")
    story.set(by="1.0", spool="spool-b", states=DOWN)  # spooled in spool-b
    story.read(2, by="1.1", spool="spool-b", states=DOWN)  # the newest entry of spool-b
    story.read(None, by="1.1", spool="spool-b", states=DOWN)
    story.read(1, by="1.1", spool="spool-b", states=DOWN)  # neither spool-b's nor the latest
    story.read(1, by="0.0", spool="spool-a", states=DOWN)  # spool-a holds nothing of the key
    story.read(None, by="0.0", spool="spool-a", states=DOWN)
    assert story.verdicts() == ["ok", "ok", "stale", "stale", "ok"]


def test_a_degraded_read_after_a_spooled_delete_gets_nothing_from_that_spool():
    story = Story()
    story.set(spool="spool-b", states=DOWN)
    story.op("delete", ttl=None, spool="spool-b", states=DOWN)
    story.set(spool="spool-a")
    story.read(1, spool="spool-b", states=DOWN)
    story.read(None, spool="spool-b", states=DOWN)
    story.read(3, spool="spool-b", states=DOWN)
    assert story.verdicts() == ["stale", "ok", "ok"]


def test_a_degraded_read_may_return_an_older_write_of_its_spool_but_not_an_expired_one():
    story = Story()
    story.set(spool="spool-b", states=DOWN, ttl=LONG_TTL)
    story.set(spool="spool-a", states=DOWN)
    story.read(1, spool="spool-b", states=DOWN)  # spool-b's newest entry of the key, though not the latest
    story.set(spool="spool-b", states=DOWN, ttl=2)
    story.set(spool="spool-a", states=DOWN)
    story.read(4, spool="spool-b", states=DOWN, after=1.0)  # near its expiry
    story.read(4, spool="spool-b", states=DOWN, after=10.0)  # long expired: the spool answers None
    assert story.verdicts() == ["ok", "ok", "stale"]


def test_a_healthy_reader_may_not_see_a_write_still_in_another_daemons_spool():
    story = Story()
    story.set()
    story.set(by="1.0", spool="spool-b", states=DOWN)
    story.read(1, by="0.0", states=(REPLAYING, REPLAYING))
    story.read(2, by="0.0")
    story.set()  # a direct write: the spooled one is older, the store refuses its replay
    story.read(1, by="0.0")
    story.read(2, by="0.0")
    assert story.verdicts() == ["ok", "ok", "stale", "stale"]


def test_an_erased_value_read_through_the_erasers_spool_is_resurrected():
    story = Story()
    story.op("uset", user=U, spool="spool-b", states=DOWN)
    story.op("erase", ttl=None, user=U, spool="spool-b", states=DOWN)  # the store answered the erase
    story.read(1, spool="spool-b", states=DOWN)
    assert story.verdicts() == ["resurrected"]


def test_an_erased_value_read_through_another_spool_while_degraded_is_allowed():
    story = Story()
    story.op("uset", user=U, spool="spool-b", states=DOWN)
    story.op("erase", ttl=None, user=U, spool="spool-a")
    story.read(1, spool="spool-b", states=DOWN)
    story.read(1, spool="spool-a")
    assert story.verdicts() == ["ok", "resurrected"]


def _final(story: Story, row: object, owner: str | None, api: object) -> tuple[dict, list]:
    history = History({KEY: story.ops}, story.ops, {})
    models, _, _ = walk(history)
    direct = {} if row is None else {KEY: (json.loads(row), owner, story.now)}
    return check_final(history, models, direct, story.now + 1, {KEY: api}, story.now + 1)


def test_the_final_state_is_checked_with_its_owner():
    story = Story()
    story.op("uset", user=U)
    story.set()
    held = document(2, "0.0", [2])
    assert _final(story, held, U, held)[1] == []
    counts, failures = _final(story, held, None, held)
    assert counts["wrong_owner"] == 1 and [f.kind for f in failures] == ["wrong_owner"]
    assert _final(story, None, None, None)[0]["lost"] == 1
    assert _final(story, held, U, None)[0]["lost"] == 1  # the store has it, get() does not
    story.op("erase", ttl=None, user=U)
    assert _final(story, held, U, held)[0]["resurrected"] == 1
    assert _final(story, None, None, None)[1] == []


def test_reads_are_counted_and_failures_reported_with_their_key():
    story = Story()
    story.set()
    story.read(1)
    story.read(1, states=DOWN)
    story.read(None, states=(HEALTHY, DEGRADED))
    story.op("delete", ttl=None)
    story.read(1)
    story.read(1, states=(HEALTHY, None), outcome="raised")
    _, counts, failures = walk(History({KEY: story.ops}, story.ops, {}))
    assert counts == {"reads": 4, "reads_checked_healthy": 2, "reads_degraded": 2,
                      "stale_reads": 0, "resurrected_reads": 1, "corrupt_reads": 0, "keys_widened": 0}
    assert [(f.key, f.kind, f.read.seq) for f in failures] == [(KEY, "resurrected read", 6)]


def test_the_ledger_is_read_back_in_order(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    lines = {
        "0.0": [{"start": 1.0, "pid": 1, "spool": "/s/spool-0.sqlite3", "state": HEALTHY},
                {"seq": 2, "op": "set", "keys": [KEY], "ttl": 5, "user": None, "by": "0.0", "t0": 2.0,
                 "s0": HEALTHY},
                {"seq": 2, "t1": 2.1, "s1": HEALTHY},
                {"seq": 3, "op": "get", "keys": [KEY], "ttl": None, "user": None, "by": "0.0", "t0": 3.0,
                 "s0": HEALTHY}],
        "0.1": [{"start": 7.0, "pid": 1, "spool": "/s/spool-0.sqlite3", "state": DEGRADED}],
        "1.0": [{"start": 1.0, "pid": 50, "spool": "/s/spool-1.sqlite3", "state": HEALTHY},
                {"seq": 1, "op": "erase", "keys": [KEY, "thread:soak-u0-1"], "ttl": None, "user": U,
                 "by": "1.0", "t0": 1.5, "s0": HEALTHY},
                {"seq": 1, "t1": 1.6, "error": "StorageUnavailableError: down"}],
    }
    for name, records in lines.items():
        torn = '{"seq": 9, "op"'  # the last line of a daemon killed as it wrote
        (logs / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + torn)
    history = load(tmp_path, end=100.0)
    assert [op.seq for op in history.by_key[KEY]] == [1, 2, 3]
    assert [op.seq for op in history.by_key["thread:soak-u0-1"]] == [1]
    erase, put, get = history.by_key[KEY]
    assert not erase.acked and erase.error and erase.done == 1.6
    assert put.acked and put.spool == "/s/spool-0.sqlite3" and put.healthy
    assert not get.acked and get.done == 8.0  # killed: its successor's start, plus a call's late run
    assert history.incarnations["0.1"].pid == 1


def test_answers_map_back_to_the_op_that_wrote_them():
    assert observed(None) == ABSENT
    assert observed(document(4, "1.0", [2, 4])) == (4, (2, 4))
    assert observed({"seq": 4, "by": "1.0", "log": [4]}) == (4, (4,))
    assert observed('{"foreign": 1}') == '{"foreign": 1}'
    assert observed("not json") == "not json"
    update = appender(9, "0.0")
    assert observed(update(None)) == (9, (9,))
    assert observed(update(document(4, "1.0", [2, 4]))) == (9, (2, 4, 9))


def test_a_key_with_too_many_possible_logs_is_checked_loosely_until_its_next_set():
    story = Story()
    story.set()
    for _ in range(10):  # each may or may not have happened: 2**10 possible logs
        story.op("update", outcome="raised")
    story.read(11, [1, 3, 11])
    story.read(99)
    story.set()
    story.op("update")
    story.read(15, [14, 15])
    story.read(15, [15])
    assert story.verdicts() == ["ok", "corrupt", "ok", "corrupt"]
    model = Key()
    for op in story.ops:
        model.apply(op)
    assert model.widened and len(model.states) == 1


def test_an_erase_leaves_what_the_store_showed_if_the_user_did_not_own_it_until_the_replay():
    story = Story()
    story.set()  # no owner
    story.op("uset", user=U, by="1.0", spool="spool-b", states=DOWN)  # waits in spool-b
    story.op("erase", ttl=None, user=U)
    story.read(1)  # the store never saw the user's write: the erase left the thread it showed
    story.read(None)
    assert story.verdicts() == ["ok", "ok"]
    held = document(1, "0.0", [1])
    counts, failures = _final(story, held, None, held)  # but the replay must not leave it there
    assert counts["resurrected"] == 1 and failures[0].kind == "resurrected"
    assert _final(story, None, None, None)[1] == []
