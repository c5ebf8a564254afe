-- Replays pre-signed requests, each exactly once: `wrk ... -s replay.lua URL -- FILE THREADS`.
-- FILE has one request a line: method, path, signature header and form body, tab-separated.
-- Thread k sends lines k, k+THREADS, ... and stops when all of its share is answered; a connection
-- that asks for more after its thread's share was sent gets a filler (answered 404, not counted).
-- Latency figures include the few fillers at the end of a run. wrk's own duration is always its
-- -d, so the bench times the run itself and interrupts wrk (SIGINT) once every thread stopped.
local threads, created = {}, 0

function setup(thread)
  thread:set("id", created)
  created = created + 1
  table.insert(threads, thread)
end

function init(args)
  local path, count = args[1], tonumber(args[2])
  queue, sent, ok, bad = {}, 0, 0, 0
  local i = 0
  for line in io.lines(path) do
    if i % count == id then
      local method, target, signature, body = line:match("^(%S+)\t(%S+)\t(%S*)\t(.*)$")
      local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }
      if signature ~= "" then headers["X-Twilio-Signature"] = signature end
      queue[#queue + 1] = wrk.format(method, target, headers, body)
    end
    i = i + 1
  end
  filler = wrk.format("GET", "/bench-filler-not-counted")
  -- wrk calls thread 0's request() once before the run to check the request: give it the filler.
  checked = id ~= 0
  -- The bench times the run from the last thread's line to the exit of the last thread.
  io.stderr:write("WRK_READY\n")
  io.stderr:flush()
end

function request()
  if not checked then
    checked = true
    return filler
  end
  sent = sent + 1
  if sent <= #queue then return queue[sent] end
  return filler
end

function response(status, headers, body)
  if not running then
    -- Said from the thread itself (init and wrk's check call run in wrk's main thread).
    running = true
    io.stderr:write("WRK_RUNNING\n")
    io.stderr:flush()
  end
  if status == 404 then return end
  if status == 200 then ok = ok + 1 else bad = bad + 1 end
  if ok + bad >= #queue then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local total_ok, total_bad = 0, 0
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_bad = total_bad + thread:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"ok": %d, "bad": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}}\n',
    total_ok, total_bad, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, e.connect, e.read, e.write, e.timeout))
end
