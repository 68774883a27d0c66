"""The decision channel: worker → agent decisions, agent → worker acknowledgements.

The agent binds a ROUTER socket and answers every message (also malformed ones)
on the same connection; a worker connects a DEALER with `DecisionClient`. A
message holds one or more decisions, one JSON part each; the answer holds a
`DecisionAck` per part, in the same order. Messages are JSON, never pickles.

A worker posts each of a field's decisions as soon as its policies make it
(`DecisionClient.post`), so that the agent checks and queues one while the
worker builds the next, and collects the answers once the field's policies are
done (`DecisionClient.collect`).

A decision is applied at most once: the server remembers the acknowledgements
of the last 4096 decisions it answered, and answers a decision sent again (the
same ``decision_id``, e.g. a retry after a wait ran out) with its first
acknowledgement, without applying it again.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import zmq
from pydantic_core import PydanticSerializationError

from livescope.schema import Decision, DecisionAck, LivescopeError, clock_ns, parse_decision

from ._endpoints import BusSecurity, bind, connect, local_endpoint, remove_ipc_files
from ._held import held_send_available, send_held
from ._switching import collection_deferred

__all__ = ["Answered", "DecisionClient", "DecisionServer"]

logger = logging.getLogger("livescope")

_MAX_MESSAGE = 4 * 1024 * 1024
_MAX_DECISION = _MAX_MESSAGE - 64
"""The largest decision a client sends, bytes: CURVE frames a part with 33 bytes more, which
the server's limit counts (ZeroMQ drops the connection of a peer whose part is over it)."""

_BURST_GAP_MS = 1
"""How long the server waits for a burst's next message before it logs the answered ones."""
_BURST_MAX = 64
"""Decisions answered, or messages received, at most before their log is written (a burst
that goes on: repeats, which are not handed on again, count as messages)."""
_GIVEN_UP_MAX = 4096
"""Decisions a client remembers answers to come for: their wait ran out (to tell their late
answers), or they were sent more than once (to drop their extra answers)."""
_ANSWERED_MAX = 4096
"""Decisions whose acknowledgement the server remembers, to answer one sent again (LRU)."""
_POST_ROOM_S = 5.0
"""How long `DecisionClient.post` waits for room in its full queue to the agent (a burst
that outruns an agent reading them) before it refuses the decision; not again until the
agent has answered one (an agent that reads nothing would cost it at every post)."""
_CLOSE_WAIT_S = 2.0
"""How long `DecisionServer.close` waits for the server thread before closing the channel
under it (a decision still being handled then goes unanswered; logged)."""

Answered = tuple[bytes, Decision | None, DecisionAck]
"""One part of a decision message as answered: raw bytes, the decision (None if
it was not a valid one) and its acknowledgement."""


class DecisionServer:
    """Agent side: receives decisions on a thread and answers each.

    Parameters
    ----------
    handler
        Called on the server thread with each valid decision and the time its
        message was received (`livescope.schema.clock_ns`); returns the acknowledgement. It
        must not raise: an exception is turned into a rejection and logged.
        It is called once per ``decision_id``: a decision sent again (one of
        the last 4096 answered) is answered with its first acknowledgement,
        and so is one sent again with other content by the same rule (a
        policy's firing decided again after a worker restart, its inputs
        measured anew: `livescope.policy.firing_id`); one that reuses an
        answered decision's ``decision_id`` otherwise is refused. Neither
        reaches the handler.
    endpoint
        Where to bind (default: a fresh local endpoint).
    on_answered
        Called (server thread) once a burst of messages is answered (no further
        message within 1 ms, or 64 decisions), with each of their parts in
        order: the raw bytes, the decision (None when the part was not a valid
        decision) and its acknowledgement; e.g. to log them. Work done here is
        off the decisions' way: every acknowledgement of the burst is stamped
        and sent first. It is called for what was answered even when receiving
        fails part-way. A decision sent again is not handed on again (it was
        at its first answer); one refused for reusing another's
        ``decision_id`` is, as an invalid part (decision None).

    """

    def __init__(
        self,
        handler: Callable[[Decision, int], DecisionAck],
        *,
        endpoint: str | None = None,
        security: BusSecurity | None = None,
        on_answered: Callable[[list[Answered]], None] | None = None,
    ) -> None:
        self._handler = handler
        self._on_answered = on_answered
        self._security = security
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.MAXMSGSIZE, _MAX_MESSAGE)
        try:
            self.endpoint = bind(self._sock, endpoint or local_endpoint("decisions"), security)
        except BaseException:
            self._sock.close(0)
            if security is not None:
                security.release(self._ctx)
            self._ctx.term()
            raise
        held_send_available()  # looked for now, not at the first answer
        self._stop = threading.Event()
        self.received = 0
        """Parts received (decisions, repeated ones and malformed parts)."""
        self.rejected = 0
        """Parts refused (a repeat of a refused decision is not counted again)."""
        self.repeated = 0
        """Decisions sent again, answered with their first acknowledgement (not applied)."""
        # decision_id → (hash of the part, acknowledgement) of the decisions answered,
        # least recently seen first: a repeat is answered from here, never applied twice
        # decision_id -> (hash of its part, its rule, its acknowledgement)
        self._answered: OrderedDict[str, tuple[int, str, DecisionAck]] = OrderedDict()
        self._thread = threading.Thread(target=self._run, name="livescope-decisions", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if not self._sock.poll(100):
                    continue
                answered: list[Answered] = []
                try:
                    # a burst's messages (a field's decisions, posted one by one) are all
                    # answered before any is logged, and no garbage collection (up to 2 ms)
                    # starts before the last answer has gone
                    with collection_deferred():
                        for _ in range(_BURST_MAX):  # (a client resending one decision
                            # without pause held the answered ones back for as long)
                            self._answer_message(answered)
                            if len(answered) >= _BURST_MAX or not self._sock.poll(_BURST_GAP_MS):
                                break
                finally:
                    if answered and self._on_answered is not None:
                        try:
                            self._on_answered(answered)
                        except Exception:
                            logger.exception("decision server: handling answered decisions failed")
        except zmq.ContextTerminated:  # closed under a slow handler (see `close`): ends here
            logger.debug("decision server: the channel was closed while a message was handled")
        finally:
            self._sock.close(0)

    def _answer_message(self, answered: list[Answered]) -> None:
        """Receive one message, answer each of its decisions in one reply (server thread)."""
        parts = self._sock.recv_multipart()
        t_rx = clock_ns()
        mine: list[Answered] = []
        try:
            acks: list[DecisionAck] = []
            for body in parts[1:] or [b""]:
                decision, ack, repeat = self._answer(body, t_rx)
                acks.append(ack)
                if not repeat:  # (a repeat was handed on at its first answer)
                    mine.append((body, decision, ack))
            # (the GIL kept: the answer is not held up by another thread of the agent)
            answer = [ack.model_dump_json().encode() for ack in acks]
            send_held(self._sock, [parts[0], *answer])
        except zmq.ContextTerminated:  # (`close` gave up waiting for this message's handling)
            logger.warning(
                "decision(s) %s unanswered: the agent closed the decision channel while "
                "handling them (the worker's wait for them runs out)",
                ", ".join(a.decision_id or "?" for a in acks),
            )
            raise
        except Exception:
            logger.exception("decision server: a message could not be answered")
        finally:
            answered += mine

    def _answer(self, body: bytes, t_rx: int) -> tuple[Decision | None, DecisionAck, bool]:
        """Answer one part (server thread): (decision or None, acknowledgement, a repeat)."""
        self.received += 1
        try:
            decision = parse_decision(body)
        except ValueError as exc:
            self.rejected += 1
            ident = _peek(body)
            logger.warning("rejected decision %s: %s", ident.get("decision_id", "?"), exc)
            refusal = DecisionAck(
                decision_id=str(ident.get("decision_id", "")),
                run_id=str(ident.get("run_id", "")),
                type=str(ident.get("type", "")),
                accepted=False,
                reason=str(exc),
                t_received_ns=t_rx,
                t_acked_ns=clock_ns(),
            )
            return None, refusal, False
        did = decision.decision_id
        if (known := self._answered.get(did)) is not None:
            return self._answer_again(decision, body, known, t_rx)
        try:
            ack = self._handler(decision, t_rx)
        except Exception as exc:
            logger.exception("decision %s failed", decision.decision_id)
            ack = DecisionAck(
                decision_id=decision.decision_id,
                run_id=decision.run_id,
                type=decision.type,
                accepted=False,
                reason=f"internal error: {exc}",
                seq=decision.seq,
                t_received_ns=t_rx,
                t_acked_ns=clock_ns(),
            )
        if not ack.accepted:
            self.rejected += 1
        # (the part's hash, not the part: a repeat is told from a reused id without
        # keeping up to 4096 messages of up to 4 MB)
        self._answered[did] = (hash(body), decision.rule, ack)
        if len(self._answered) > _ANSWERED_MAX:
            self._answered.popitem(last=False)
        return decision, ack, False

    def _answer_again(
        self, decision: Decision, body: bytes, known: tuple[int, str, DecisionAck], t_rx: int
    ) -> tuple[Decision | None, DecisionAck, bool]:
        """Answer a decision whose ``decision_id`` was answered before (server thread)."""
        did = decision.decision_id
        digest, rule, ack = known
        if digest == hash(body):  # sent again (a retry): answered as the first time
            self._answered.move_to_end(did)
            self.repeated += 1
            logger.debug("decision %s sent again: answered as before, not applied again", did)
            return decision, ack, True
        if rule and (decision.rule, decision.type, decision.run_id) == (rule, ack.type, ack.run_id):
            # the same firing decided again (a restarted worker measured its inputs anew):
            # what was done stands
            self._answered.move_to_end(did)
            self.repeated += 1
            logger.info("decision %s of rule %r sent again with other inputs: answered as "
                        "before, not applied again", did, rule)  # fmt: skip
            again = f"sent again with other inputs: answered as first; {ack.reason}".rstrip("; ")
            return decision, ack.model_copy(update={"reason": again}), True
        self.rejected += 1
        reason = (
            f"decision_id {did} was used before by another decision: a decision is resent "
            "unchanged, and a new one needs a decision_id of its own"
        )
        logger.warning("rejected decision %s: %s", did, reason)
        refusal = DecisionAck(
            decision_id=did,
            run_id=decision.run_id,
            type=decision.type,
            accepted=False,
            reason=reason,
            t_received_ns=t_rx,
            t_acked_ns=clock_ns(),
        )
        return None, refusal, False

    def close(self) -> None:
        """Stop the server thread and close the socket (again: nothing more happens).

        Waits up to 2 s for the thread, then closes the channel under it: a
        decision still being handled then is not answered (a warning names
        it; the server thread then ends), and this returns once its handler
        has returned.
        """
        if self._ctx.closed:
            return
        self._stop.set()
        self._thread.join(timeout=_CLOSE_WAIT_S)
        if self._security is not None:
            self._security.release(self._ctx)
        self._ctx.term()
        remove_ipc_files(self.endpoint)


_PEEK_MAX = 256
"""Longest id a refusal echoes (valid: decision ids 64 characters, run ids 128)."""


def _peek(body: bytes) -> dict[str, Any]:
    """Best-effort id fields of a malformed decision, for its rejection."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    # (not a lone surrogate, which JSON allows: the refusal could not be sent, nor its
    # message's; nor one far longer than any valid id, echoed into the answer and the log)
    return {
        k: v for k in ("decision_id", "run_id", "type")
        if isinstance(v := data.get(k), str) and len(v) <= _PEEK_MAX and _encodes(v)
    }  # fmt: skip


def _encodes(text: str) -> bool:
    """Whether ``text`` can be sent as UTF-8."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class DecisionClient:
    """Worker side: send decisions and wait for their acknowledgements.

    Use from one thread.

    A decision whose wait ran out may still be applied by the agent: it may be
    queued behind others, or its answer on its way. Sending it again (the
    same decision: its ``decision_id`` and content) is safe: the agent applies
    it once and answers each send with its first acknowledgement (for the last
    4096 decisions it answered), accepted or refused. To try a refused
    decision again, make a new one (a new ``decision_id``). A decision too
    large for the channel (over 4 MiB of JSON) is not sent: it is answered
    here, refused with the reason; so is one that cannot be queued (the agent
    reads no decisions, and this client's queue to it is full: ZeroMQ holds
    1000 messages), never waited for beyond its call's ``timeout``. A wait for a
    decision sent again takes the first of its answers to come, also one to
    an earlier send, which is then not counted as late (`late_answers`); the
    other answers are dropped.
    """

    def __init__(self, endpoint: str, *, security: BusSecurity | None = None) -> None:
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            connect(self._sock, endpoint, security)
        except BaseException:  # (a malformed endpoint: nothing of this client stays open)
            self._sock.close(0)
            if security is not None:
                security.release(self._ctx)
            self._ctx.term()
            raise
        self.endpoint = endpoint
        held_send_available()  # looked for now, not at the first decision
        self._pending: dict[str, DecisionAck] = {}  # answers read before they were asked for
        # decision_id → its answers still to come, of a decision whose last wait ran out
        # before any came (oldest first): the first to come is late
        self._given_up: dict[str, int] = {}
        # decision_id → its answers still to come, of a decision sent more than once
        # whose answer was taken (oldest first): dropped as they come
        self._extra: dict[str, int] = {}
        self._unanswered = 0  # decisions sent whose answers have not been read (all parts)
        self._stalled = False  # (a wait for room ran out, and no answer was read since)
        self.late_answers = 0
        """Answers that came after their wait ran out (logged, then dropped)."""
        self.on_late: Callable[[DecisionAck], None] | None = None
        """Called with each answer that came after its wait ran out (on the thread that read
        it: the one in `collect`, `send` or `drain`), e.g. to give a refused decision's
        budget back."""

    def send(self, decision: Decision, timeout: float = 5.0) -> DecisionAck:
        """Send ``decision`` and return its acknowledgement.

        A decision whose wait ran out may still be applied by the agent; sending
        it again (the same ``decision_id``, unchanged) is safe: it is answered,
        with its first acknowledgement, and not applied twice (see the class).
        One that cannot be queued within ``timeout`` (the agent reads no
        decisions) is not sent: its answer is the refusal saying so.

        Raises
        ------
        LivescopeError
            if no acknowledgement arrives within ``timeout`` seconds.
        ValueError
            if ``timeout`` is not a number of seconds ≥ 0 (``math.inf``: wait
            until it comes); nothing is sent then.

        """
        _check_timeout(timeout)
        deadline = time.monotonic() + timeout
        if (body := self._encode(decision)) is not None:
            self._queue([body], [decision], deadline)
        did = decision.decision_id
        earlier = self._earlier(did)
        try:
            return self._wait(did, max(0.0, deadline - time.monotonic()), earlier)
        except LivescopeError:  # (said for the whole call: part of it may have waited for room)
            raise LivescopeError(f"no acknowledgement from the agent within {timeout} s") from None

    def send_many(
        self, decisions: list[Decision], timeout: float = 5.0
    ) -> list[DecisionAck | LivescopeError]:
        """Send several decisions in one message, then collect their acknowledgements (in order).

        Each entry is the decision's acknowledgement, or the `LivescopeError`
        saying none arrived within ``timeout`` seconds of the send. As with
        `send`, a decision without an answer may still be applied, and may be
        sent again with the same ``decision_id``: it is not applied twice. A
        message that cannot be queued within ``timeout`` (the agent reads no
        decisions) is not sent: each of its decisions is answered with the
        refusal saying so.

        Raises
        ------
        ValueError
            if ``timeout`` is not a number of seconds ≥ 0, or a ``decision_id``
            is given more than once (see `collect`); nothing is sent then.

        """
        _check_timeout(timeout)
        _check_once([d.decision_id for d in decisions], "send_many")
        if not decisions:
            return []
        deadline = time.monotonic() + timeout
        sent = [(d, body) for d in decisions if (body := self._encode(d)) is not None]
        if sent:
            self._queue([body for _, body in sent], [d for d, _ in sent], deadline)
        return self._collect([d.decision_id for d in decisions], timeout, deadline)

    def post(self, decision: Decision) -> None:
        """Send ``decision`` without waiting; its acknowledgement waits for `collect`.

        The agent starts on it at once: a caller that posts each decision as it
        is made overlaps its own work with the agent's checks. Where this
        client's queue to the agent is full (ZeroMQ holds 1000 messages: a
        burst that outruns the agent, or an agent that reads no decisions), it
        waits for room up to `_POST_ROOM_S`; one not queued by then is not sent,
        and `collect` answers it with the refusal saying so. Until the agent
        answers again, later posts that find the queue full are refused at once.
        """
        # the GIL kept: a send through pyzmq gives it up, and taking it back from
        # another thread of the worker cost the first decision of a field 0.3-1.3 ms
        if (body := self._encode(decision)) is not None:
            wait = 0.0 if self._stalled else _POST_ROOM_S
            self._queue([body], [decision], deadline=time.monotonic() + wait)

    def collect(
        self, decision_ids: list[str], timeout: float = 5.0
    ) -> list[DecisionAck | LivescopeError]:
        """Return the acknowledgements of posted decisions, in the order of ``decision_ids``.

        Each entry is the acknowledgement, or the `LivescopeError` saying none
        arrived within ``timeout`` seconds of this call (the agent may still
        apply that decision; see `send`).

        Raises
        ------
        ValueError
            if ``timeout`` is not a number of seconds ≥ 0, or a ``decision_id``
            is given more than once (its answers would be taken as one, and the
            second wait run out: the policies pass a ``decision_id`` once a field,
            `livescope.policy.PolicyEngine`). Nothing is waited for then: the
            answers stay for a later call.

        """
        _check_timeout(timeout)
        _check_once(decision_ids, "collect")
        return self._collect(decision_ids, timeout, time.monotonic() + timeout)

    def _collect(
        self, decision_ids: list[str], timeout: float, deadline: float
    ) -> list[DecisionAck | LivescopeError]:
        """`collect`, waiting until ``deadline`` (`time.monotonic`, s; ``timeout``: as told)."""
        out: list[DecisionAck | LivescopeError] = []
        earlier: dict[str, int] = {}
        if self._given_up or self._extra:  # (else none was sent again: nothing to look up)
            # all taken before the first wait: a decision sent again is answered to this
            # call also while it waits for the decisions before it
            for did in decision_ids:
                earlier.setdefault(did, self._earlier(did))
        for did in decision_ids:
            try:
                left = max(0.0, deadline - time.monotonic())
                out.append(self._wait(did, left, earlier.pop(did, 0)))
            except LivescopeError:
                out.append(LivescopeError(f"no acknowledgement from the agent within {timeout} s"))
        return out

    def _encode(self, decision: Decision) -> bytes | None:
        """Return ``decision``'s message part, or None, its refusal kept, if it is too large.

        A part over what the agent takes (4 MiB: a few thousand added events)
        is not sent: ZeroMQ would drop this client's connection, unanswered,
        and with it the answers on their way to the decisions sent before.
        """
        try:
            body = decision.model_dump_json().encode()
        except PydanticSerializationError as exc:  # (e.g. a lone surrogate in a name)
            reason = f"not sent: the decision cannot be written as JSON ({exc})"
        else:
            if len(body) <= _MAX_DECISION:
                return body
            reason = (
                f"not sent: the decision is {len(body)} bytes, over the {_MAX_DECISION} a "
                "decision to the agent may take; split its events among several decisions"
            )
        self._refuse(decision, reason)
        return None

    def _queue(self, parts: list[bytes], decisions: list[Decision], deadline: float) -> None:
        """Queue a message of ``decisions`` (their ``parts``), waiting for room until ``deadline``.

        Never longer (`time.monotonic`, s; ``math.inf``: until there is room):
        ZeroMQ's own send would wait for good on an agent that reads no
        decisions, once this client's queue to it is full. A message not
        queued by then is not sent: its decisions are refused here. Answers that
        come meanwhile are read (kept for their waits): an agent whose answers
        are not read stops reading decisions, and no room would come.
        """
        while not send_held(self._sock, parts, wait=False):
            left = deadline - time.monotonic()
            # (waiting for room gives the GIL up: only when the queue is full)
            if left > 0 and (
                events := self._sock.poll(
                    -1 if left == math.inf else int(left * 1000) + 1, zmq.POLLOUT | zmq.POLLIN
                )
            ):
                if events & zmq.POLLIN:
                    self.drain()
                continue
            self._stalled = True  # (cleared once an answer is read)
            reason = (
                f"not sent: no room to queue it for the agent, {self._unanswered} decisions "
                "sent are unanswered (the agent reads no decisions, or is far behind); "
                "check that the agent is running and answering"
            )
            for d in decisions:
                self._refuse(d, reason)
            return
        self._unanswered += len(parts)

    def _refuse(self, decision: Decision, reason: str) -> None:
        """Refuse ``decision`` here (not sent) for ``reason``: logged, kept for its wait."""
        logger.warning("decision %s refused: %s", decision.decision_id, reason)
        self._pending[decision.decision_id] = DecisionAck(
            decision_id=decision.decision_id, run_id=decision.run_id, type=decision.type,
            accepted=False, reason=reason, seq=decision.seq,
        )  # fmt: skip

    def send_raw(self, body: bytes, timeout: float = 5.0) -> DecisionAck:
        """Send raw bytes (for tests of malformed input) and return the next acknowledgement."""
        self._sock.send(body)
        self._unanswered += 1
        return self._wait(None, timeout)

    def _earlier(self, decision_id: str) -> int:
        """Take the answers still to come to earlier sends of a decision, to be waited for again.

        A decision sent again takes the first of its answers that comes, not a
        late one; the others are extra (see `_wait`).
        """
        if not (self._given_up or self._extra):
            return 0
        return self._given_up.pop(decision_id, 0) + self._extra.pop(decision_id, 0)

    def _wait(self, decision_id: str | None, timeout: float, earlier: int = 0) -> DecisionAck:
        """Wait for ``decision_id``'s answer (None: the next one).

        ``earlier``: answers still to come to earlier sends of it (`_earlier`).
        """
        deadline = time.monotonic() + timeout
        while True:
            if decision_id is not None and decision_id in self._pending:
                if earlier:
                    _remember(self._extra, decision_id, earlier)
                return self._pending.pop(decision_id)
            # answers already here are read even once the time is up; an infinite
            # timeout waits until one comes
            left_ms = (
                -1
                if deadline == math.inf
                else max(0, int((deadline - time.monotonic()) * 1000) + 1)
            )
            if not self._sock.poll(left_ms):
                break
            acks = self._read()
            if decision_id is None:
                return acks[0]
            self._file(acks)
        if decision_id is not None:
            _remember(self._given_up, decision_id, earlier + 1)
        raise LivescopeError(f"no acknowledgement from the agent within {timeout} s")

    def _file(self, acks: list[DecisionAck]) -> None:
        """Keep answers for their waits; log, count and drop those nobody waits for."""
        for a in acks:
            if (extra := self._extra.pop(a.decision_id, 0)) > 0:  # answered already
                if extra > 1:
                    self._extra[a.decision_id] = extra - 1
                logger.debug("decision %s: another answer to a send of it dropped", a.decision_id)
            elif (owed := self._given_up.pop(a.decision_id, 0)) > 0:  # its wait ran out
                if owed > 1:  # (sent more than once: its other answers are extra)
                    _remember(self._extra, a.decision_id, owed - 1)
                self.late_answers += 1
                logger.warning(
                    "decision %s answered after its wait ran out: %s %s", a.decision_id,
                    "accepted" if a.accepted else "refused", a.reason,
                )  # fmt: skip
                if self.on_late is not None:
                    self.on_late(a)
            else:
                self._pending[a.decision_id] = a

    def drain(self) -> None:
        """Read the answers that have arrived, without waiting (e.g. before counting late ones)."""
        while self._sock.poll(0):
            self._file(self._read())

    def _read(self) -> list[DecisionAck]:
        """Read one answer (a message is there: polled), an acknowledgement per decision."""
        parts = self._sock.recv_multipart()
        self._unanswered = max(0, self._unanswered - len(parts))
        self._stalled = False
        return [DecisionAck.model_validate_json(p) for p in parts]

    def close(self) -> None:
        """Close the socket."""
        self._sock.close(0)
        self._ctx.term()


def _check_timeout(timeout: float) -> None:
    """Refuse a wait that is no number of seconds ≥ 0 (NaN raised deep in the wait)."""
    if not timeout >= 0:
        raise ValueError(
            f"timeout must be a number of seconds >= 0 (math.inf: wait until answered), "
            f"not {timeout!r}"
        )


def _check_once(decision_ids: list[str], call: str) -> None:
    """Refuse a ``decision_id`` given twice to one call: its answers were filed as one.

    (Both waited for one answer: the second, finding none left, waited its whole
    timeout and was then booked as given up, its answer to come counted late.)
    """
    seen: set[str] = set()
    for did in decision_ids:
        if did in seen:
            raise ValueError(
                f"{call}: decision_id {did} is given more than once: give each decision "
                "once (a decision sent again is answered as its first time, in a call of its own)"
            )
        seen.add(did)


def _remember(table: dict[str, int], decision_id: str, answers: int) -> None:
    """Note ``answers`` still to come for ``decision_id``, forgetting the oldest beyond a bound."""
    table[decision_id] = answers
    if len(table) > _GIVEN_UP_MAX:  # an agent that stopped answering
        del table[next(iter(table))]
