"""The Redis state machine: the one source of truth for waves, VMs, disks and stages.

Every stage of every VM (and of every disk) has a record, and runs only under a *lease*: a key
holding the claim's fencing generation with a TTL that the running task's heartbeat renews.
A claim succeeds only when no live lease exists; a commit succeeds only if the claim's
generation still owns the lease. So a redelivered message (Celery's visibility timeout, a
retry, the reconciler's re-send) can never give two writers to one artifact, and a stage whose
worker died is re-claimed once its lease expires. Every transition is appended to the wave's
log stream.

    pending -> running -> succeeded
                  |  \\-> failed           (retries exhausted, or a permanent error)
                  |  \\-> cancelled        (the operator cancelled the VM)
                  \\----> pending          (lease expired, or a retry is due)
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import redis

P = "h2k"

_CLAIM = """
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'succeeded' then return {'done', tonumber(redis.call('HGET', KEYS[1], 'gen') or '0')} end
if st == 'cancelled' then return {'cancelled', 0} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {'busy', tonumber(redis.call('GET', KEYS[2]))} end
local gen = redis.call('HINCRBY', KEYS[1], 'gen', 1)
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
redis.call('SET', KEYS[2], gen, 'PX', ARGV[3])
redis.call('HSET', KEYS[1], 'status', 'running', 'host', ARGV[1], 'worker', ARGV[2], 'started', ARGV[4],
           'ended', '', 'error', '', 'bytes', 0, 'run', ARGV[5], 'updated', ARGV[4])
redis.call('XADD', KEYS[3], '*', 'event', 'claim', 'stage', ARGV[6], 'gen', gen, 'host', ARGV[1], 'at', ARGV[4])
return {'claimed', gen}
"""

# Heartbeat, with optional progress: renews the lease only for its owner.
_BEAT = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'bytes', ARGV[3], 'total', ARGV[4], 'updated', ARGV[5]) end
return 1
"""

# Finish a claimed stage: status and fields written only if this generation still owns the lease.
_FINISH = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] or redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then
  redis.call('XADD', KEYS[3], '*', 'event', 'fenced', 'stage', ARGV[3], 'gen', ARGV[1], 'at', ARGV[4])
  return 0
end
local fields = cjson.decode(ARGV[5])
for k, v in pairs(fields) do redis.call('HSET', KEYS[1], k, v) end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'ended', ARGV[4], 'updated', ARGV[4])
redis.call('DEL', KEYS[2])
redis.call('XADD', KEYS[3], '*', 'event', ARGV[2], 'stage', ARGV[3], 'gen', ARGV[1], 'at', ARGV[4])
return 1
"""

# Reconciler: a running stage without a live lease has lost its worker; it goes back to pending.
_EXPIRE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'pending', 'error', 'lease expired: worker lost', 'updated', ARGV[2])
redis.call('XADD', KEYS[3], '*', 'event', 'expired', 'stage', ARGV[1], 'gen',
           redis.call('HGET', KEYS[1], 'gen') or '0', 'at', ARGV[2])
return 1
"""


@dataclass(frozen=True)
class StageRef:
    wave: str
    vm: str
    lane: str  # "vm" for VM-level stages, "d<N>" for disk N
    stage: str

    @property
    def name(self) -> str:
        return f"{self.vm}/{self.lane}/{self.stage}"

    @property
    def key(self) -> str:
        return f"{P}:st:{self.wave}:{self.vm}:{self.lane}:{self.stage}"

    @property
    def lease_key(self) -> str:
        return f"{P}:lease:{self.wave}:{self.vm}:{self.lane}:{self.stage}"


# Take a token from every semaphore named, or from none, and record the lane as sent in its run.
# KEYS: the semaphores' sets, then the index of semaphore names, the wave's sent hash and its log;
# ARGV: holder, lane id (holder#run), now, the semaphores' names (JSON), then their limits (0: no
# limit). Holding already counts as having it.
_ACQUIRE = """
local n = #KEYS - 3
for i = 1, n do
  local limit = tonumber(ARGV[i + 4])
  if limit > 0 and redis.call('SISMEMBER', KEYS[i], ARGV[1]) == 0 and redis.call('SCARD', KEYS[i]) >= limit then
    return 0
  end
end
local names = cjson.decode(ARGV[4])
for i = 1, n do
  redis.call('SADD', KEYS[i], ARGV[1])
  redis.call('SADD', KEYS[n + 1], names[i])
end
redis.call('HSET', KEYS[n + 2], ARGV[2], ARGV[3])
redis.call('XADD', KEYS[n + 3], '*', 'event', 'acquire', 'holder', ARGV[1], 'sems', ARGV[4], 'at', ARGV[3])
return 1
"""

# Give a holder's tokens back, unless its VM has started another run since the caller looked.
# KEYS: the semaphores' sets, then the index of names, the wave's runs hash and its log;
# ARGV: holder, VM, the run the caller saw, why, now, the semaphores' names (JSON).
_RELEASE = """
local n = #KEYS - 3
if (redis.call('HGET', KEYS[n + 2], ARGV[2]) or '0') ~= ARGV[3] then return 0 end
local names = cjson.decode(ARGV[6])
local removed = 0
for i = 1, n do
  removed = removed + redis.call('SREM', KEYS[i], ARGV[1])
  if redis.call('SCARD', KEYS[i]) == 0 then redis.call('SREM', KEYS[n + 1], names[i]) end
end
if removed > 0 then
  redis.call('XADD', KEYS[n + 3], '*', 'event', 'release', 'holder', ARGV[1], 'why', ARGV[4], 'at', ARGV[5])
end
return removed
"""


class FencedError(Exception):
    """This worker's claim on a stage is no longer the owner: its results must be dropped."""


class State:
    def __init__(self, client: redis.Redis):
        self.r = client
        self._claim = client.register_script(_CLAIM)
        self._beat = client.register_script(_BEAT)
        self._finish = client.register_script(_FINISH)
        self._expire = client.register_script(_EXPIRE)
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str, timeout: float | None = None) -> "State":
        """`timeout` bounds each call (a worker's heartbeat must notice a Redis that stopped answering)."""
        return cls(redis.Redis.from_url(url, decode_responses=True, health_check_interval=30,
                                        socket_timeout=timeout, socket_connect_timeout=timeout))

    # ---- waves -----------------------------------------------------------------------------
    def log_key(self, wave: str) -> str:
        return f"{P}:log:{wave}"

    def save_wave(self, wave: str, plan_json: str) -> None:
        """Store (or refresh) a wave's plan."""
        key = f"{P}:wave:{wave}"
        pipe = self.r.pipeline()
        pipe.hsetnx(key, "created", time.time())
        pipe.hset(key, mapping={"id": wave, "plan": plan_json, "updated": time.time()})
        pipe.zadd(f"{P}:waves", {wave: time.time()}, nx=True)
        pipe.execute()

    def wave(self, wave: str) -> dict:
        return self.r.hgetall(f"{P}:wave:{wave}")

    def waves(self) -> list[str]:
        return self.r.zrange(f"{P}:waves", 0, -1)

    def set_wave_field(self, wave: str, **fields) -> None:
        self.r.hset(f"{P}:wave:{wave}", mapping={k: str(v) for k, v in fields.items()})

    # ---- runs: each VM of a wave is run again by resume or retry; its stages count for the run
    #      in which they last succeeded or were verified
    def start_runs(self, wave: str, vms: list[str]) -> dict[str, int]:
        pipe = self.r.pipeline()
        for vm in vms:
            pipe.hincrby(f"{P}:runs:{wave}", vm, 1)
        runs = dict(zip(vms, pipe.execute()))
        self.append_log(wave, event="run", vms=",".join(f"{vm}#{n}" for vm, n in runs.items()))
        return runs

    def runs(self, wave: str) -> dict[str, int]:
        return {vm: int(n) for vm, n in self.r.hgetall(f"{P}:runs:{wave}").items()}

    def mark_sent(self, wave: str, lane_id: str) -> None:
        """Record when a lane was (last) sent in a VM's run (lane_id carries the run)."""
        self.r.hset(f"{P}:sent:{wave}", lane_id, time.time())

    def sent_at(self, wave: str) -> dict[str, float]:
        return {k: float(v) for k, v in self.r.hgetall(f"{P}:sent:{wave}").items()}

    # ---- cancellation ----------------------------------------------------------------------
    def cancel(self, wave: str, vms: list[str], refs: list[StageRef]) -> None:
        """Flag VMs as cancelled: running stages see the flag within a second and stop; stages
        not yet started are marked cancelled (finalize excepted, so the report is written)."""
        self.r.sadd(f"{P}:cancel:{wave}", *vms)
        pipe = self.r.pipeline()
        for ref in refs:
            pipe.hget(ref.key, "status")
        for ref, status in zip(refs, pipe.execute()):
            if status in (None, "pending"):
                self.r.hset(ref.key, mapping={"status": "cancelled", "error": "cancelled by the operator",
                                              "updated": time.time()})
        self.append_log(wave, event="cancel", vms=",".join(vms))

    def uncancel(self, wave: str, vms: list[str]) -> None:
        self.r.srem(f"{P}:cancel:{wave}", *vms)

    def is_cancelled(self, wave: str, vm: str) -> bool:
        return bool(self.r.sismember(f"{P}:cancel:{wave}", vm))

    # ---- semaphores: fleet-wide caps on lanes in flight (holders: see conductor/lanes.py) -----
    def acquire(self, wave: str, holder: str, lane_id: str, limits: dict[str, int]) -> bool:
        """Take a token of every semaphore in `limits` for `holder`, or none; on success the lane
        is recorded as sent (`lane_id`) in the same step."""
        names = list(limits)
        keys = [f"{P}:sem:{name}" for name in names] + [f"{P}:sems", f"{P}:sent:{wave}", self.log_key(wave)]
        return bool(self._acquire(keys=keys, args=[holder, lane_id, time.time(), json.dumps(names),
                                                   *limits.values()]))

    def release(self, wave: str, vm: str, run: int, holder: str, names: list[str], why: str) -> bool:
        """Give back `holder`'s tokens of `names`, unless `vm` is no longer in run `run`."""
        keys = [f"{P}:sem:{name}" for name in names] + [f"{P}:sems", f"{P}:runs:{wave}", self.log_key(wave)]
        return bool(self._release(keys=keys, args=[holder, vm, run, why, time.time(), json.dumps(names)]))

    def holders(self) -> dict[str, list[str]]:
        """Every holder of a token, with the semaphores it holds one of."""
        names = sorted(self.r.smembers(f"{P}:sems"))
        pipe = self.r.pipeline()
        for name in names:
            pipe.smembers(f"{P}:sem:{name}")
        out: dict[str, list[str]] = {}
        for name, members in zip(names, pipe.execute()):
            for holder in members:
                out.setdefault(holder, []).append(name)
        return out

    def leased(self, refs: list[StageRef]) -> bool:
        """Whether any of these stages has a live lease (a worker is running it now)."""
        return bool(refs) and self.r.exists(*[ref.lease_key for ref in refs]) > 0

    # ---- stages ----------------------------------------------------------------------------
    def ensure(self, refs: list[StageRef]) -> None:
        """Create pending records for stages that have none (a re-submitted wave keeps its history)."""
        pipe = self.r.pipeline()
        for ref in refs:
            pipe.hsetnx(ref.key, "status", "pending")
        pipe.execute()

    def get(self, ref: StageRef) -> dict:
        return self.r.hgetall(ref.key)

    def get_many(self, refs: list[StageRef]) -> list[dict]:
        pipe = self.r.pipeline()
        for ref in refs:
            pipe.hgetall(ref.key)
        return pipe.execute()

    def claim(self, ref: StageRef, host: str, worker: str, ttl: float, run: int) -> tuple[str, int]:
        """('claimed', gen) to run it; ('done', gen) if it already succeeded; ('busy', gen) if
        another live claim holds it; ('cancelled', 0)."""
        now = time.time()
        status, gen = self._claim(
            keys=[ref.key, ref.lease_key, self.log_key(ref.wave)],
            args=[host, worker, int(ttl * 1000), now, run, ref.name],
        )
        return status, int(gen)

    def beat(self, ref: StageRef, gen: int, ttl: float, done: int | None = None, total: int | None = None) -> bool:
        args = [gen, int(ttl * 1000), "" if done is None else done, total or 0, time.time()]
        return bool(self._beat(keys=[ref.key, ref.lease_key], args=args))

    def finish(self, ref: StageRef, gen: int, status: str, **fields) -> None:
        """Record the end of a claimed stage; raises FencedError if the claim was superseded."""
        payload = json.dumps({k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items()})
        ok = self._finish(
            keys=[ref.key, ref.lease_key, self.log_key(ref.wave)],
            args=[gen, status, ref.name, time.time(), payload],
        )
        if not ok:
            raise FencedError(f"{ref.name}: generation {gen} no longer owns the stage")

    def owns(self, ref: StageRef, gen: int) -> bool:
        return self.r.get(ref.lease_key) == str(gen)

    def touch_run(self, ref: StageRef, run: int) -> None:
        """A succeeded stage whose artifact verified again in this run."""
        self.r.hset(ref.key, mapping={"run": run, "updated": time.time()})
        self.r.xadd(self.log_key(ref.wave), {"event": "verified", "stage": ref.name, "at": time.time()})

    def reset(self, refs: list[StageRef], reason: str) -> None:
        """Send stages back to pending (their artifact no longer verifies, or an upstream stage re-ran)."""
        pipe = self.r.pipeline()
        for ref in refs:
            pipe.hset(ref.key, mapping={"status": "pending", "error": "", "result": "", "attempt": 0,
                                        "updated": time.time()})
            pipe.xadd(self.log_key(ref.wave), {"event": "reset", "stage": ref.name, "why": reason, "at": time.time()})
        pipe.execute()

    def expire_if_lost(self, ref: StageRef) -> bool:
        return bool(self._expire(keys=[ref.key, ref.lease_key, self.log_key(ref.wave)], args=[ref.name, time.time()]))

    def log(self, wave: str) -> list[dict]:
        return [fields for _, fields in self.r.xrange(self.log_key(wave))]

    def log_cursor(self, wave: str) -> str:
        """The id of the wave's newest state-log entry ("0-0" for none): where wait_for_log() starts."""
        newest = self.r.xrevrange(self.log_key(wave), count=1)
        return newest[0][0] if newest else "0-0"

    def wait_for_log(self, cursors: dict[str, str], timeout: float) -> tuple[dict[str, str], dict[str, list[dict]]]:
        """Block until one of the waves' state logs gets an entry after its cursor, or `timeout`
        seconds; returns the cursors moved past what arrived, and what arrived per wave. Every stage
        transition is logged, so this is what wakes a conductor instead of a fixed sleep, and what tells
        it which VMs moved."""
        if not cursors:
            time.sleep(timeout)
            return cursors, {}
        wave_of = {self.log_key(wave): wave for wave in cursors}
        moved, arrived = dict(cursors), {}
        for key, entries in self.r.xread({key: cursors[wave] for key, wave in wave_of.items()},
                                         block=max(1, int(timeout * 1000))) or []:
            moved[wave_of[key]] = entries[-1][0]
            arrived[wave_of[key]] = [fields for _, fields in entries]
        return moved, arrived

    def wave_status(self, wave: str) -> str | None:
        return self.r.hget(f"{P}:wave:{wave}", "status")

    def append_log(self, wave: str, **fields) -> None:
        self.r.xadd(self.log_key(wave), {k: str(v) for k, v in fields.items()} | {"at": time.time()})


def decode(record: dict, field: str, default=None):
    """A JSON field of a stage record."""
    raw = record.get(field)
    return json.loads(raw) if raw else default
