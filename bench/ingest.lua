-- wrk script for bench/ingest.py: every request is one agent's report, with that agent's own
-- key, serverId and a timestamp never used before (so every acknowledged sample must be stored).
-- Reads BENCH_KEYS (lines "serverId key"), BENCH_BODY (a sample with {SERVER} and {TIME}) and
-- BENCH_BASE (epoch seconds of the first timestamp).

local agents, body_template, base = {}, nil, 0
local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("index", thread_count - 1)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(os.getenv("BENCH_KEYS")) do
    local id, key = line:match("^(%d+) (%S+)$")
    table.insert(agents, {id = id, key = key, seq = 0})
  end
  local file = io.open(os.getenv("BENCH_BODY"), "r")
  body_template = file:read("*a")
  file:close()
  base = tonumber(os.getenv("BENCH_BASE"))
  -- Each wrk thread owns every Nth agent, so no two threads send the same (agent, time).
  local mine = {}
  local count = tonumber(os.getenv("BENCH_THREADS"))
  for i, agent in ipairs(agents) do
    if (i - 1) % count == index then table.insert(mine, agent) end
  end
  agents = mine
  cursor = 0
  ok, refused = 0, 0
end

function request()
  cursor = cursor % #agents + 1
  local agent = agents[cursor]
  agent.seq = agent.seq + 1
  local t = base + agent.seq
  local stamp = os.date("!%Y-%m-%dT%H:%M:%SZ", t)
  local body = body_template:gsub("{SERVER}", agent.id):gsub("{TIME}", stamp)
  return wrk.format("POST", "/api/agent/metrics", {
    ["Authorization"] = "Bearer " .. agent.key,
    ["Content-Type"] = "application/json",
  }, body)
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 else refused = refused + 1 end
end

function done(summary, latency, requests)
  local total_ok, total_refused = 0, 0
  for _, thread in ipairs(threads) do
    total_ok = total_ok + thread:get("ok")
    total_refused = total_refused + thread:get("refused")
  end
  io.write(string.format("ACKED %d REFUSED %d\n", total_ok, total_refused))
  for _, p in ipairs({50, 90, 99}) do
    io.write(string.format("P%d %.3f\n", p, latency:percentile(p) / 1000.0))
  end
  io.write(string.format("RATE %.1f\n", summary.requests / (summary.duration / 1e6)))
end
