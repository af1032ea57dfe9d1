"""Per-server limits across every worker of a distributed run, kept in Redis (the broker's own
store; a separate one with a RabbitMQ broker).

- **Connection slots**: a server's ``max_connections`` is a counting semaphore of leases. An
  account's task takes, atomically and before it opens any connection, as many slots on each
  server as it may hold connections there (what the local engine reckons with too, see
  :func:`mailferry.api.parallel_accounts`); a worker that dies stops renewing its leases, and
  they expire after ``lease_seconds``, so its slots come back without anyone cleaning up.
  Lease times are Redis's own clock (``TIME``), so the workers' clocks don't matter.
- **Rates** (``rate_messages``, ``rate_bytes`` per second for the whole cluster): a token bucket
  per server that every writer draws from before each batch it sends.
- **Throttling**: a worker that meets a server saying "slow down" (``[UNAVAILABLE]``, ``BYE``,
  HTTP 429/503) records a pause for that server; every worker waits it out before its next batch
  there.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from mailferry.errors import TemporaryFailure

log = logging.getLogger(__name__)

_PATIENCE = 300.0  # seconds a pass waits for the cluster's Redis to come back

# KEYS: one sorted set per server (member "token#n", score: lease expiry in ms).
# ARGV: token, lease ms, then (limit, n) per key. All slots or none.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local used = 0
  for _, m in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    used = used + tonumber(string.match(m, '#(%d+)$'))
  end
  if used + tonumber(ARGV[2 + 2 * i]) > tonumber(ARGV[1 + 2 * i]) then return 0 end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + tonumber(ARGV[2]), ARGV[1] .. '#' .. ARGV[2 + 2 * i])
  redis.call('PEXPIRE', key, tonumber(ARGV[2]) * 4)
end
return 1
"""

# KEYS: the sorted sets; ARGV: the members, lease ms. Renews the leases still held.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local kept = 0
for i, key in ipairs(KEYS) do
  if redis.call('ZSCORE', key, ARGV[i]) then
    redis.call('ZADD', key, now + tonumber(ARGV[#ARGV]), ARGV[i])
    redis.call('PEXPIRE', key, tonumber(ARGV[#ARGV]) * 4)
    kept = kept + 1
  end
end
return kept
"""

# A token bucket. KEYS[1]: the bucket (hash: tokens, at). ARGV: rate/s, burst, wanted.
# Returns the milliseconds to wait (0: taken).
_DRAW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate, burst, want = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + (now - at) * rate / 1000)
if want > burst then want = burst end
local wait = 0
if tokens >= want then tokens = tokens - want else wait = math.ceil((want - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now)
redis.call('PEXPIRE', KEYS[1], 600000)
return wait
"""

# KEYS[1]: the pause key. Returns the milliseconds left of a pause (0: none).
_PAUSE_LEFT = "local v = redis.call('PTTL', KEYS[1]); if v > 0 then return v end; return 0"


class ClusterLimits:
    """The limits of one project's run, shared through ``client`` (a :class:`redis.Redis`)."""

    def __init__(self, client: Any, project: str, *, lease_seconds: int = 30) -> None:
        self.client = client
        self.prefix = f"mailferry:{project}"
        self.lease_ms = lease_seconds * 1000
        self._held: dict[str, list[tuple[str, str]]] = {}  # token -> [(key, member)]
        self._lock = threading.Lock()
        self._take = client.register_script(_TAKE)
        self._renew = client.register_script(_RENEW)
        self._draw = client.register_script(_DRAW)
        self._pause_left = client.register_script(_PAUSE_LEFT)
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """``fn(...)``, waiting while Redis is away (a broker restarted): up to ``_PATIENCE`` s,
        then a temporary failure of the account's pass."""
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.exceptions import TimeoutError as RedisTimeoutError

        deadline = time.monotonic() + _PATIENCE
        while True:
            try:
                return fn(*args, **kwargs)
            except (RedisConnectionError, RedisTimeoutError) as e:
                if time.monotonic() > deadline:
                    raise TemporaryFailure(
                        f"the cluster's Redis (connection slots, rates) is unreachable: {e}",
                        hint="check the broker; the account is tried again on the next pass",
                    ) from None
                log.warning("the cluster's Redis is unreachable (%s); waiting for it", e)
                time.sleep(0.5)

    def _key(self, kind: str, server: str) -> str:
        return f"{self.prefix}:{kind}:{server}"

    # -- connection slots -----------------------------------------------------------------------

    @contextlib.contextmanager
    def slots(self, wanted: Sequence[tuple[str, int, int]], *, poll: float = 0.25) -> Iterator[None]:
        """Hold ``n`` of ``limit`` connection slots on each ``(server, limit, n)`` (all at once),
        waiting until they are free; renewed while held, given back on leaving."""
        wanted = [(s, lim, min(n, lim)) for s, lim, n in wanted if n > 0]
        if not wanted:
            yield
            return
        token = secrets.token_hex(8)
        keys = [self._key("slots", s) for s, _, _ in wanted]
        args: list[Any] = [token, self.lease_ms]
        for _, lim, n in wanted:
            args += [lim, n]
        waited = 0.0
        while not self._call(self._take, keys=keys, args=args):
            if waited == 0.0:
                log.info("waiting for connection slots on %s", ", ".join(s for s, _, _ in wanted))
            time.sleep(poll)
            waited += poll
        members = [(k, f"{token}#{n}") for k, (_, _, n) in zip(keys, wanted, strict=True)]
        with self._lock:
            self._held[token] = members
            self._start_renewer()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(token, None)
            with contextlib.suppress(Exception):  # the lease expires anyway
                pipe = self.client.pipeline()
                for key, member in members:
                    pipe.zrem(key, member)
                pipe.execute()

    def in_use(self, server: str) -> int:
        """Slots held on ``server`` now (leases not expired)."""
        now_s, now_us = self.client.time()
        now = now_s * 1000 + now_us // 1000
        members = self.client.zrangebyscore(self._key("slots", server), now, "+inf")
        return sum(int(m.decode().rsplit("#", 1)[1]) for m in members)

    def _start_renewer(self) -> None:
        if self._renewer is None or not self._renewer.is_alive():
            self._renewer = threading.Thread(target=self._renew_loop, name="lease-renewer", daemon=True)
            self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_ms / 3000):
            with self._lock:
                held = [m for ms in self._held.values() for m in ms]
            if not held:
                continue
            try:
                kept = self._renew(keys=[k for k, _ in held], args=[*(m for _, m in held), self.lease_ms])
                if int(kept) < len(held):
                    log.warning("%d connection-slot leases had expired (this worker stalled)", len(held) - int(kept))
            except Exception as e:  # noqa: BLE001 - Redis away: the leases run out, the broker's loss shows elsewhere
                log.warning("could not renew connection-slot leases: %s", e)

    # -- rates and pauses -----------------------------------------------------------------------

    def pace(self, server: str, *, messages: int, nbytes: int, rate_messages: float, rate_bytes: float) -> None:
        """Wait until ``server`` may take ``messages`` more messages of ``nbytes`` (the cluster's
        rates), and out any pause a throttling server asked for."""
        self.wait_pause(server)
        for kind, rate, want in (("msgs", rate_messages, messages), ("bytes", rate_bytes, nbytes)):
            if rate <= 0 or want <= 0:
                continue
            burst = max(rate, 1.0)  # a second's worth
            while True:
                key = self._key(f"rate-{kind}", server)
                wait_ms = int(self._call(self._draw, keys=[key], args=[rate, burst, want]))
                if wait_ms <= 0:
                    break
                time.sleep(wait_ms / 1000)

    def slow_down(self, server: str, seconds: float) -> None:
        """``server`` throttled one worker: every worker pauses its writes there for ``seconds``."""
        self._call(self.client.set, self._key("pause", server), "1", px=max(1, int(seconds * 1000)))

    def wait_pause(self, server: str) -> None:
        left = int(self._call(self._pause_left, keys=[self._key("pause", server)]))
        if left > 0:
            time.sleep(left / 1000)

    def close(self) -> None:
        self._stop.set()
