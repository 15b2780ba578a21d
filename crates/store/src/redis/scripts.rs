//! The Lua scripts that make each Redis store operation atomic. Each touches only one
//! credential's keys, or one site's session keys (one cluster slot); the credential scripts
//! publish what they changed on the events channel.
//!
//! Scripts return arrays of strings so large integers (millisecond timestamps) never pass
//! through Lua's floating-point numbers.

use ::redis::Script;

/// Writes a sealed token set and its sealed status as the next generation (the caller sealed
/// both for `expected + 1`) and resets the plaintext status copies to valid.
///
/// KEYS: state, lease. ARGV: expected generation, fence (`""`: none), sealed, sealed status,
/// expires_at, last_refresh_at (`""`: none), channel, name.
/// Returns `{"1", generation}` or `{"0", current generation}` on a conflict.
const WRITE: &str = r#"
local current = redis.call('HGET', KEYS[1], 'generation') or '0'
if current ~= ARGV[1] then return {'0', current} end
if ARGV[2] ~= '' and redis.call('HGET', KEYS[2], 'fence') ~= ARGV[2] then
  return {'0', current}
end
local generation = tostring(redis.call('HINCRBY', KEYS[1], 'generation', 1))
redis.call('HSET', KEYS[1], 'sealed', ARGV[3], 'sealed_status', ARGV[4], 'expires_at', ARGV[5], 'state', 'valid', 'failures', '0')
redis.call('HDEL', KEYS[1], 'reason', 'next_attempt_at')
if ARGV[6] == '' then
  redis.call('HDEL', KEYS[1], 'last_refresh_at')
else
  redis.call('HSET', KEYS[1], 'last_refresh_at', ARGV[6])
end
redis.call('PUBLISH', ARGV[7], ARGV[8] .. ' ' .. generation)
return {'1', generation}
"#;

/// Replaces the status of generation ARGV[1] if it is still the stored one.
///
/// KEYS: state. ARGV: generation, state, failures, last_refresh_at (`""`: none), has reason
/// (`1`/`0`), reason, next_attempt_at (`""`: none), channel, name, sealed status.
/// Returns 1 when written.
const SET_STATUS: &str = r#"
local current = redis.call('HGET', KEYS[1], 'generation')
if not current or current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'failures', ARGV[3], 'sealed_status', ARGV[10])
local function optional(field, value)
  if value == '' then redis.call('HDEL', KEYS[1], field) else redis.call('HSET', KEYS[1], field, value) end
end
optional('last_refresh_at', ARGV[4])
if ARGV[5] == '1' then
  redis.call('HSET', KEYS[1], 'reason', ARGV[6])
else
  redis.call('HDEL', KEYS[1], 'reason')
end
optional('next_attempt_at', ARGV[7])
redis.call('PUBLISH', ARGV[8], ARGV[9] .. ' ' .. current)
return 1
"#;

/// Deletes a credential's state (its lease hash, and so its fence, stays).
///
/// KEYS: state. ARGV: channel, name. Returns 1 when something was deleted.
const DELETE: &str = r#"
local deleted = redis.call('DEL', KEYS[1])
if deleted == 1 then redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' 0') end
return deleted
"#;

/// The lease clock of a script: Redis' own `TIME` (ARGV mode `server`), or the caller's `now`
/// (mode `caller`, tests only), in milliseconds. Every replica judges a lease with one clock, so
/// a replica whose clock runs ahead cannot take a live lease over.
const CLOCK: &str = r#"
local function lease_now(mode, caller_now)
  if mode == 'server' then
    local t = redis.call('TIME')
    return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  end
  return tonumber(caller_now)
end
"#;

/// Takes the lease unless an unexpired one is held.
///
/// KEYS: lease. ARGV: owner, clock mode, caller now (ms), ttl (ms).
/// Returns `{"0", held_until}` when busy, or `{"1", fence, abandoned (0/1), previous owner,
/// expires_at}`.
const ACQUIRE: &str = r#"
local now = lease_now(ARGV[2], ARGV[3])
local held = redis.call('HMGET', KEYS[1], 'owner', 'expires_at')
if held[1] and tonumber(held[2] or '0') > now then
  return {'0', held[2]}
end
local expires_at = string.format('%.0f', now + tonumber(ARGV[4]))
local fence = tostring(redis.call('HINCRBY', KEYS[1], 'fence', 1))
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'expires_at', expires_at)
local abandoned = '0'
if held[1] then abandoned = '1' end
return {'1', fence, abandoned, held[1] or '', expires_at}
"#;

/// Releases the lease if owner and fence still match; publishes the release.
///
/// KEYS: lease. ARGV: owner, fence, channel, name. Returns 1 when released.
const RELEASE: &str = r#"
local held = redis.call('HMGET', KEYS[1], 'owner', 'fence')
if held[1] == ARGV[1] and held[2] == ARGV[2] then
  redis.call('HDEL', KEYS[1], 'owner', 'expires_at', 'in_flight')
  redis.call('PUBLISH', ARGV[3], ARGV[4] .. ' released')
  return 1
end
return 0
"#;

/// Extends the lease if owner and fence still match (no one took it over).
///
/// KEYS: lease. ARGV: owner, fence, clock mode, caller now (ms), ttl (ms). Returns the new
/// expiry, or `""` when the lease was lost.
const RENEW: &str = r#"
local held = redis.call('HMGET', KEYS[1], 'owner', 'fence')
if held[1] == ARGV[1] and held[2] == ARGV[2] then
  local expires_at = string.format('%.0f', lease_now(ARGV[3], ARGV[4]) + tonumber(ARGV[5]))
  redis.call('HSET', KEYS[1], 'expires_at', expires_at)
  return expires_at
end
return ''
"#;

/// Reads the in-flight marker a previous holder left and, if the fence is still ours, sets it.
///
/// KEYS: lease. ARGV: fence, generation. Returns `{previous marker or ""}`.
const MARK_IN_FLIGHT: &str = r#"
local held = redis.call('HMGET', KEYS[1], 'fence', 'in_flight', 'owner')
if held[1] == ARGV[1] and held[3] then
  redis.call('HSET', KEYS[1], 'in_flight', ARGV[2])
end
return {held[2] or ''}
"#;

/// Writes a sealed record as its next version if the current version is the expected one
/// (`0`: absent), and indexes its item. The caller sealed it for `expected + 1`.
///
/// KEYS: record, items of its part (one slot). ARGV: expected version, sealed, updated_at (ms),
/// item (`""`: a one-segment key).
/// Returns `{"1", new version}` or `{"0", current version}` when the expectation failed.
const PUT_RECORD: &str = r#"
local current = redis.call('HGET', KEYS[1], 'version') or '0'
if current ~= ARGV[1] then return {'0', current} end
local version = tostring(redis.call('HINCRBY', KEYS[1], 'version', 1))
redis.call('HSET', KEYS[1], 'sealed', ARGV[2], 'updated_at', ARGV[3])
if ARGV[4] ~= '' then redis.call('SADD', KEYS[2], ARGV[4]) end
return {'1', version}
"#;

/// Deletes a record if its version is ARGV[2] (mode `version`) or whatever it is (mode `any`),
/// and unindexes its item.
///
/// KEYS: record, items of its part (one slot). ARGV: mode, expected version, item (`""`: none).
/// Returns 1 when deleted.
const DELETE_RECORD: &str = r#"
local current = redis.call('HGET', KEYS[1], 'version')
if not current then
  if ARGV[3] ~= '' then redis.call('SREM', KEYS[2], ARGV[3]) end
  return 0
end
if ARGV[1] == 'version' and current ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[3] ~= '' then redis.call('SREM', KEYS[2], ARGV[3]) end
return 1
"#;

/// Replaces a format-1 sealed value by its format-2 re-sealing (and sets a credential's sealed
/// status) if the value is still the one read: the upgrade never overwrites a newer write.
///
/// KEYS: hash. ARGV: the value read, its re-sealing, sealed status (`""`: none). Returns 1 when
/// replaced.
const RESEAL: &str = r#"
if redis.call('HGET', KEYS[1], 'sealed') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'sealed', ARGV[2])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'sealed_status', ARGV[3]) end
return 1
"#;

/// The compiled scripts (`EVALSHA`, loaded again automatically after a Redis restart).
pub(crate) struct Scripts {
    pub(crate) write: Script,
    pub(crate) set_status: Script,
    pub(crate) delete: Script,
    pub(crate) acquire: Script,
    pub(crate) release: Script,
    pub(crate) renew: Script,
    pub(crate) mark_in_flight: Script,
    pub(crate) put_record: Script,
    pub(crate) delete_record: Script,
    pub(crate) reseal: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            write: Script::new(WRITE),
            set_status: Script::new(SET_STATUS),
            delete: Script::new(DELETE),
            acquire: Script::new(&format!("{CLOCK}{ACQUIRE}")),
            release: Script::new(RELEASE),
            renew: Script::new(&format!("{CLOCK}{RENEW}")),
            mark_in_flight: Script::new(MARK_IN_FLIGHT),
            put_record: Script::new(PUT_RECORD),
            delete_record: Script::new(DELETE_RECORD),
            reseal: Script::new(RESEAL),
        }
    }
}
