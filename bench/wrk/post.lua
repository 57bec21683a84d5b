-- wrk script for bench/ingest.py: POST JSON events to one path.
--   wrk ... -s bench/wrk/post.lua URL -- PREFIX POOL PATH [HEADER VALUE]
-- POOL 0: every request carries a new event id (PREFIX-thread-counter).
-- POOL N: ids cycle over PREFIX-0 .. PREFIX-(N-1), sent earlier, so each is a duplicate.
-- The body depends on the id only, so a repeated id is a duplicate, never a conflict.
-- done() prints one JSON line the bench reads.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
  thread:set("nthreads", 0)
end

function init(args)
  prefix = args[1]
  pool = tonumber(args[2])
  path = args[3]
  headers = { ["Content-Type"] = "application/json" }
  if args[4] then headers[args[4]] = args[5] end
  counter = 0
end

function request()
  counter = counter + 1
  local id
  if pool > 0 then
    id = string.format("%s-%d", prefix, (counter * 7 + tid * 131) % pool)
  else
    id = string.format("%s-%d-%d", prefix, tid, counter)
  end
  local body = '{"event_id":"' .. id .. '","type":"order.created","data":{"order":"' .. id .. '","amount":42}}'
  return wrk.format("POST", path, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bad_status":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
