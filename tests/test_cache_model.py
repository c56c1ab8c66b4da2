"""Property tests: Hypothesis drives the cache's core through interleavings of loads (started
and finished separately), writes and their events, partition changes, skips to the end, probe
asks and answers, and clock steps, against a model of the source, the log and the consumer. Every
read is checked:

- G0: a load's value is stored exactly when no invalidation of its key and no flush was applied
  after it started (``fills_voided`` counts the others);
- G1: no read returns a version older than the newest event of its key applied before the read
  began;
- G2: a hit, or a read that joined a load under way, at time ``t`` returns at least every version
  whose produce returned before ``t - max_staleness``;
- read-your-writes: a read after a write's token that is a hit or joins a load returns that
  write's version or newer.

The core is the cache's whole state machine; :class:`~eventstream.cache.Cache` calls it under one
lock, one call per step, as this test does.
"""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from eventstream import Token
from eventstream.cache.core import BYPASS, WAIT, CacheCore, Join, Miss, Start

KEYS = ("a", "b", "c")
PARTITIONS = (0, 1)
PARTITION_OF = {"a": 0, "b": 1, "c": 0}
MAX_STALENESS = 1.0


@dataclass
class Written:
    """An event in the log: a write of ``key`` (``None``: flush everything) at ``version``,
    whose produce returned at ``at``."""

    key: str | None
    version: int
    at: float


@dataclass
class Reader:
    """A read that joined a load: what its value must be at least, by G1/G2/token."""

    at_least: int
    why: str


@dataclass
class Load:
    key: str
    fill: Future[int]
    value: int  # the loader read the source when the load started
    voided: bool = False
    readers: list[Reader] = field(default_factory=list[Reader])


class CacheModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.core: CacheCore[str, int] = CacheCore(
            max_staleness=MAX_STALENESS, ttl=5.0, max_entries=2, probe_interval=0.25
        )
        self.now = 0.0
        self.version = dict.fromkeys(KEYS, 0)  # the source of truth
        self.log: dict[int, list[Written]] = {p: [] for p in PARTITIONS}
        self.applied = dict.fromkeys(KEYS, 0)  # newest version of each key applied (G1)
        self.assigned: set[int] = set()
        self.position = dict.fromkeys(PARTITIONS, 0)  # the feed's, of assigned partitions
        self.skips = [0]  # epochs whose move to the end the feed has yet to make (the start's)
        self.moved: list[int] = []  # epochs whose move is made but not reported yet
        self.answered: set[int] = set()  # epochs in which a probe asked was answered
        self.asks: list[tuple[int, float, dict[int, int], dict[int, int]]] = []
        self.loads: list[Load] = []

    @initialize(serving=st.booleans())
    def start(self, serving: bool) -> None:
        """Most runs start with a serving cache; the others with a cache that was just made."""
        if serving:
            self.recover()

    # -- the source, the log, the feed ------------------------------------------------------------

    @rule(key=st.sampled_from(KEYS))
    def write(self, key: str) -> None:
        """The writer commits a new version, then publishes (its produce returns now)."""
        self.version[key] += 1
        self.log[PARTITION_OF[key]].append(Written(key, self.version[key], self.now))

    def _positions(self) -> dict[int, int]:
        return {p: self.position[p] for p in self.assigned}

    @rule(partition=st.sampled_from(PARTITIONS))
    def deliver(self, partition: int) -> None:
        """The feed applies the next event of an assigned partition."""
        offset = self.position[partition]
        if partition not in self.assigned or offset >= len(self.log[partition]):
            return
        event = self.log[partition][offset]
        if event.key is None:
            self.core.clear("event")
            self._void(None)
        else:
            self.core.invalidate([event.key])
            self._void(event.key)
            self.applied[event.key] = max(self.applied[event.key], event.version)
        self.core.applied(partition, offset)
        self.position[partition] = offset + 1

    def _void(self, key: str | None) -> None:
        for load in self.loads:
            if key is None or load.key == key:
                load.voided = True

    def _reset(self, epoch: int | None) -> None:
        if epoch is not None:
            self._void(None)
            self.skips.append(epoch)

    def take(self, partition: int, lost: bool) -> None:
        if partition in self.assigned:
            self.assigned.discard(partition)
            self._reset(self.core.reset("lost" if lost else "revoked", "partition taken"))

    def assign(self, partition: int, rewind: int) -> None:
        """The partition comes back at its committed offset, which may be a little behind."""
        if partition not in self.assigned:
            self.assigned.add(partition)
            self.position[partition] = max(0, self.position[partition] - rewind)
            self._reset(self.core.reset("assigned", "partition assigned"))

    def gap(self, partition: int) -> None:
        """Retention removed the next event before it was read: the feed moves past it."""
        if partition in self.assigned and self.position[partition] < len(self.log[partition]):
            self.position[partition] += 1
            self._reset(self.core.reset("gap", "gap"))

    @rule(
        kind=st.sampled_from(["lost", "revoked", "assigned", "gap", "flush", "probe fails"]),
        partition=st.sampled_from(PARTITIONS),
        rewind=st.integers(0, 3),
    )
    def disrupt(self, kind: str, partition: int, rewind: int) -> None:
        """Something that flushes: a partition taken or given back, a gap, an event without
        keys, the probe without an answer."""
        if kind in ("lost", "revoked"):
            self.take(partition, kind == "lost")
        elif kind == "assigned":
            self.assign(partition, rewind)
        elif kind == "gap":
            self.gap(partition)
        elif kind == "flush":
            self.log[partition].append(Written(None, 0, self.now))
        else:
            self._reset(self.core.probe_failed(TimeoutError("no answer"), self.now))

    @rule()
    def recover(self) -> None:
        """The group gives every partition back; the feed moves to the end; a probe round."""
        for partition in PARTITIONS:
            self.assign(partition, 0)
        if self.skips:
            self.move_to_end()
        if self.moved:
            self.report_moved()
        self.probe_round()

    @precondition(lambda self: bool(self.skips))
    @rule()
    def move_to_end(self) -> None:
        """The feed moves every assigned partition to its end, skipping what lies between, for
        the requests made so far; it reports them later (requests made meanwhile wait for a
        move of their own)."""
        for partition in self.assigned:
            self.position[partition] = len(self.log[partition])
        self.moved += self.skips
        self.skips = []

    @precondition(lambda self: bool(self.moved))
    @rule()
    def report_moved(self) -> None:
        moved, self.moved = self.moved, []
        for epoch in moved:
            self.core.skip_done(epoch)

    # -- the probe and the clock --------------------------------------------------------------

    @rule()
    def ask(self) -> None:
        ends = {p: len(self.log[p]) for p in PARTITIONS}
        self.asks.append((self.core.epoch, self.now, ends, self._positions()))

    @precondition(lambda self: bool(self.asks))
    @rule()
    def answer(self) -> None:
        epoch, asked_at, ends, before = self.asks.pop(0)
        self.answered.add(epoch)
        self._reset(self.core.record(epoch, asked_at, ends, before, self._positions(), self.now))

    @rule()
    def probe_round(self) -> None:
        """An ask answered at once (the usual case)."""
        self.asks.clear()
        self.ask()
        self.answer()

    @rule()
    def catch_up(self) -> None:
        for partition in PARTITIONS:
            while partition in self.assigned and self.position[partition] < len(
                self.log[partition]
            ):
                self.deliver(partition)

    @rule(seconds=st.sampled_from([0.1, 0.2, 0.3, 0.6, 1.2, 3.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    # -- reads -------------------------------------------------------------------------------

    def _at_least(self, key: str, token_version: int) -> list[Reader]:
        """What a read of ``key`` beginning now must return at least."""
        cutoff = self.now - MAX_STALENESS
        produced = [
            e.version for e in self.log[PARTITION_OF[key]] if e.key == key and e.at < cutoff
        ]
        return [
            Reader(self.applied[key], "G1: an applied invalidation"),
            Reader(max(produced, default=0), "G2: produced before now - max_staleness"),
            Reader(token_version, "read-your-writes"),
        ]

    def _read(self, key: str, token: Token | None, token_version: int, quick: bool) -> None:
        """A get; a load it starts returns at once when ``quick``."""
        outcome = self.core.decide(key, token, self.now)
        at_least = self._at_least(key, token_version)
        if not isinstance(outcome, Miss):
            for need in at_least:
                assert outcome >= need.at_least, f"hit of {key}={outcome}: {need.why}"
        elif isinstance(outcome, Start):
            assert self.core.serving(self.now)
            self.loads.append(Load(key, outcome.fill, self.version[key]))
            if quick:
                self.finish_load(-1, fails=False)
        elif isinstance(outcome, Join):
            [load] = [load for load in self.loads if load.fill is outcome.fill]
            assert not load.voided, "joined a load that an invalidation voided"
            load.readers.extend(at_least)
        elif outcome is WAIT:
            assert token is not None and not token.reached_by(self.core.positions)
        else:
            assert outcome is BYPASS and not self.core.serving(self.now)

    @rule(key=st.sampled_from(KEYS), quick=st.booleans())
    def get(self, key: str, quick: bool) -> None:
        self._read(key, None, 0, quick)

    @rule(key=st.sampled_from(KEYS), quick=st.booleans())
    def get_after_the_latest_write(self, key: str, quick: bool) -> None:
        partition = PARTITION_OF[key]
        offsets = [o for o, e in enumerate(self.log[partition]) if e.key == key]
        if offsets:
            token = Token({partition: offsets[-1] + 1})
            self._read(key, token, self.log[partition][offsets[-1]].version, quick)

    @precondition(lambda self: bool(self.loads))
    @rule(index=st.integers(0, 7), fails=st.sampled_from([False, False, False, True]))
    def finish_load(self, index: int, fails: bool) -> None:
        """A load under way returns (or raises: nothing is stored, no reader gets a value)."""
        load = self.loads.pop(index % len(self.loads))
        if fails:
            self.core.abandon(load.key, load.fill)
            return
        voided = self.core.fills_voided
        self.core.finish(load.key, load.fill, load.value, self.now)
        stored = self.core.fills_voided == voided
        assert stored == (not load.voided), f"stored={stored}, voided={load.voided}"
        for reader in load.readers:
            assert load.value >= reader.at_least, f"joined {load.key}={load.value}: {reader.why}"

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def entries_are_bounded(self) -> None:
        assert len(self.core.store) <= 2

    @invariant()
    def serving_means_every_partition_assigned_moved_and_probed_since_the_flush(self) -> None:
        """The protocol's side of the spec: serving only with every partition of the topic
        assigned, the move to the end asked for by the latest flush reported, and a probe
        asked after that flush answered."""
        if self.core.serving(self.now):
            assert self.assigned == set(PARTITIONS)
            assert self.core.epoch not in self.skips + self.moved
            assert self.core.epoch in self.answered

    @invariant()
    def the_topic_never_looks_changed(self) -> None:
        assert self.core.flushes["topic_changed"] == 0


CacheModel.TestCase.settings = settings(max_examples=500, stateful_step_count=60, deadline=None)
test_cache_core_against_the_model = CacheModel.TestCase


def _check(model: CacheModel) -> None:
    model.entries_are_bounded()
    model.serving_means_every_partition_assigned_moved_and_probed_since_the_flush()
    model.the_topic_never_looks_changed()


def test_a_move_reported_for_an_earlier_flush_does_not_make_it_ready() -> None:
    """The feed reports the move asked by one flush while another flush's move is pending."""
    model = CacheModel()
    model.recover()
    model.disrupt("revoked", 0, 0)
    model.move_to_end()
    model.disrupt("assigned", 0, 0)
    model.report_moved()  # the first flush's move: the second flush's is not made yet
    model.probe_round()
    _check(model)
    assert not model.core.serving(model.now)
    model.move_to_end()
    model.report_moved()
    model.probe_round()
    assert model.core.serving(model.now)


def test_an_answer_asked_before_the_flush_does_not_make_it_ready() -> None:
    model = CacheModel()
    model.recover()
    model.ask()  # stamped, then the flush
    model.disrupt("revoked", 1, 0)
    model.disrupt("assigned", 1, 0)
    model.move_to_end()
    model.report_moved()
    model.answer()
    _check(model)
    assert not model.core.serving(model.now)
    model.probe_round()
    assert model.core.serving(model.now)
